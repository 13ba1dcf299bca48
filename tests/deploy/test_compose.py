#!/usr/bin/env python3
"""Docker cannot run in the test environment, so this checks statically that
deploy/docker-compose.yml describes exactly the topology the tests run with
deploy/local-cluster.sh: the same nodes, each reading its own deploy/conf/
file, at the addresses local-cluster.sh gives them in netns mode; broker
advertised addresses, nameserver lists, store paths, volumes and the
published proxy port agree with the configuration files; the Dockerfile's
runtime stage installs only the six shared libraries and prepares every
store volume for the unprivileged user.

Needs python3 with PyYAML; without it the test exits 77 (SKIP)."""
import ipaddress
import os
import re
import sys

try:
    import yaml
except ImportError:
    print("SKIP: python3 PyYAML is not installed; the compose file was not checked")
    sys.exit(77)

src = os.environ.get("DEPLOY_SRC")
if not src:
    print("DEPLOY_SRC is not set (run through meson test)")
    sys.exit(1)

errors = []


def check(cond, msg):
    if cond:
        print("ok: " + msg)
    else:
        print("FAIL: " + msg)
        errors.append(msg)


with open(os.path.join(src, "docker-compose.yml")) as f:
    compose = yaml.safe_load(f)
services = compose["services"]
nodes = ["namesrv-1", "namesrv-2", "broker-a-master", "broker-a-slave",
         "broker-b-master", "broker-b-slave", "proxy"]
check(sorted(services) == sorted(nodes), "compose services are the 7 nodes: %s" % sorted(services))

subnet = ipaddress.ip_network(compose["networks"]["rmq"]["ipam"]["config"][0]["subnet"])
confs, addr = {}, {}
for n in nodes:
    s = services[n]
    path = os.path.join(src, "conf", n + ".yaml")
    with open(path) as f:
        confs[n] = yaml.safe_load(f)
    check(isinstance(confs[n], dict), "%s.yaml is a YAML mapping" % n)
    kind = {"namesrv": "nameserver", "broker": "broker", "proxy": "proxy"}[n.split("-")[0]]
    check(s["command"] == [kind, "-c", "/etc/rocketmq/%s.yaml" % n],
          "%s runs '%s -c /etc/rocketmq/%s.yaml'" % (n, kind, n))
    check("./conf:/etc/rocketmq:ro" in s["volumes"], "%s mounts deploy/conf read-only" % n)
    addr[n] = ipaddress.ip_address(s["networks"]["rmq"]["ipv4_address"])
    check(addr[n] in subnet, "%s address %s is in %s" % (n, addr[n], subnet))
    check("healthcheck" in s and s["healthcheck"]["test"][0] == "CMD", "%s has a health check" % n)

ns_list = "%s:9876;%s:9876" % (addr["namesrv-1"], addr["namesrv-2"])
for n in ("namesrv-1", "namesrv-2"):
    check(confs[n]["listenPort"] == 9876, "%s listens on 9876" % n)
    check(str(subnet) in confs[n]["adminAllowList"].split(";"),
          "%s allows admin requests from %s" % (n, subnet))
for n in nodes[2:6]:
    c, s = confs[n], services[n]
    check(c["brokerIP1"] == str(addr[n]), "%s advertises its compose address %s" % (n, addr[n]))
    check(c["namesrvAddr"] == ns_list, "%s registers with %s" % (n, ns_list))
    check(c["listenPort"] == 10911, "%s listens on 10911" % n)
    mount = "%s:%s" % (n, c["storePathRootDir"])
    check(mount in s["volumes"], "%s store %s is the named volume %s" % (n, c["storePathRootDir"], n))
    check(n in compose["volumes"], "volume %s is declared" % n)
    grp, role = n.rsplit("-", 1)
    check(c["brokerName"] == grp and c["brokerClusterName"] == "DefaultCluster",
          "%s is %s in DefaultCluster" % (n, grp))
    check((c["brokerId"], c["brokerRole"]) == ((0, "ASYNC_MASTER") if role == "master" else (1, "SLAVE")),
          "%s has brokerId %s, %s" % (n, c["brokerId"], c["brokerRole"]))
    check(str(subnet) in c["adminAllowList"].split(";"), "%s allows admin requests from %s" % (n, subnet))
    if role == "slave":
        check(grp + "-master" in services[n]["depends_on"], "%s starts after its master" % n)
px = confs["proxy"]
check(px["namesrvAddr"] == ns_list, "proxy uses %s" % ns_list)
check(services["proxy"]["ports"] == ["%d:%d" % (px["grpcServerPort"], px["grpcServerPort"])],
      "proxy publishes its gRPC port %d" % px["grpcServerPort"])

# local-cluster.sh runs the same nodes at the same addresses (netns mode).
with open(os.path.join(src, "local-cluster.sh")) as f:
    script = f.read()
net = re.search(r"^NET=\$\{LOCAL_CLUSTER_NET:-([0-9.]+)\}", script, re.M).group(1)
table = dict((m.group(1), m.group(2)) for m in
             re.finditer(r'^\s+"([a-z0-9-]+) (?:namesrv|broker|proxy) (\d+) \d+"$', script, re.M))
check(sorted(table) == sorted(nodes), "local-cluster.sh starts the same 7 nodes")
for n in nodes:
    check("%s.%s" % (net, table.get(n)) == str(addr[n]),
          "local-cluster.sh puts %s at %s.%s, compose at %s" % (n, net, table.get(n), addr[n]))
check(str(subnet.network_address + 1) == compose["networks"]["rmq"]["ipam"]["config"][0]["gateway"]
      and re.search(r'ip addr add "\$NET\.1/24"', script) is not None,
      "the host side is %s in both" % (subnet.network_address + 1))

with open(os.path.join(src, "docker", "Dockerfile")) as f:
    dockerfile = f.read()
stages = re.split(r"^FROM ", dockerfile, flags=re.M)
check(len(stages) == 3 and stages[1].startswith("debian:bookworm AS build")
      and stages[2].startswith("debian:bookworm-slim"), "Dockerfile: bookworm build stage, bookworm-slim runtime")
runtime = stages[2]
pkgs = re.search(r"--no-install-recommends\s*\\\n\s*([^\n\\]+)", runtime).group(1).split()
check(sorted(pkgs) == sorted(["libev4", "liblmdb0", "libyaml-0-2", "libjansson4", "libprotobuf-c1",
                              "libnghttp2-14"]), "runtime installs only the shared libraries: %s" % pkgs)
check("USER rocketmq" in runtime, "runtime runs as the rocketmq user")
for n in nodes[2:6]:
    check(n in runtime, "runtime image prepares /var/lib/rocketmq/%s for the volume" % n)

if errors:
    print("%d check(s) failed" % len(errors))
    sys.exit(1)
print("compose topology matches deploy/conf and local-cluster.sh")
