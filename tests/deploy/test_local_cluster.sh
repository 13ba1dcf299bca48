#!/usr/bin/env bash
# End-to-end test of the compose topology run by deploy/local-cluster.sh:
#  - `up` starts 2 nameservers, broker-a and broker-b (master + slave each)
#    and, when built, the proxy; `status` shows each node running;
#  - clusterList shows all four brokers (masters and slaves) registered;
#  - `rmqadmin updateTopic -c DefaultCluster` creates a topic whose route
#    has queues on broker-a and on broker-b;
#  - messages sent are consumed back, with the same bodies, from both
#    brokers (write permission of broker-a is wiped for half of the sends,
#    so the other half must go to broker-b). They are sent and consumed with
#    rmqadmin against the brokers; with DEPLOY_TEST_PROXY=1 (meson sets it
#    when the proxy is built), 8 more go through the proxy and back with the
#    RocketMQ 5 Node.js client of tests/compat/v5 (installed there with npm
#    when missing, as the compat runner does; SKIP when node/npm are absent);
#  - `down` stops every daemon gracefully (each logs its clean stop) and
#    leaves no process, namespace or link behind.
# Root: network-namespace mode (each node at its compose address); else
# loopback mode. Exits 77 (SKIP) when the broker or rmqadmin is not built.
# Environment (from meson): LOCAL_CLUSTER_SH, NAMESRV_BIN, BROKER_BIN,
# RMQADMIN_BIN, PROXY_BIN (optional).
set -uo pipefail

for v in LOCAL_CLUSTER_SH NAMESRV_BIN; do
  [ -n "${!v:-}" ] || { echo "$v is not set (run through meson test)"; exit 1; }
done
for v in BROKER_BIN RMQADMIN_BIN; do
  if [ -z "${!v:-}" ] || [ ! -x "${!v}" ]; then
    echo "SKIP: $v is not built; the local cluster cannot be tested"
    exit 77
  fi
done
if [ -n "${PROXY_BIN:-}" ] && [ ! -x "$PROXY_BIN" ]; then unset PROXY_BIN; fi
export NAMESRV_BIN BROKER_BIN
export PROXY_BIN=${PROXY_BIN:-/nonexistent/proxy}

export LOCAL_CLUSTER_DIR
LOCAL_CLUSTER_DIR=$(mktemp -d /tmp/rmq-local-cluster-XXXXXX)
export LOCAL_CLUSTER_PORT_BASE=$((20000 + ($$ % 200) * 60))
# As root (netns mode), a cluster of our own: other builds may run this test
# at the same time, and a developer's cluster may be up with the defaults.
# LOCAL_CLUSTER_ID picks the namespace / link names, LOCAL_CLUSTER_NET the
# subnet (10.231.<k>.0/24; the nodes keep their compose host numbers).
if [ "$(id -u)" -eq 0 ]; then
  k=$(( $$ % 200 + 20 ))
  for _ in $(seq 1 200); do
    if ! ip netns list 2>/dev/null | grep -q "^rmqlc$k-" &&
       [ -z "$(ip -4 route show "10.231.$k.0/24" 2>/dev/null)" ]; then break; fi
    k=$(( k % 250 + 1 ))
  done
  export LOCAL_CLUSTER_ID=$k LOCAL_CLUSTER_NET=10.231.$k
fi
# The proxy round trip needs the Node.js client before anything starts.
if [ "${DEPLOY_TEST_PROXY:-0}" = 1 ] && [ "$PROXY_BIN" != /nonexistent/proxy ]; then
  v5_dir=$(cd "$(dirname "$LOCAL_CLUSTER_SH")/../tests/compat/v5" 2>/dev/null && pwd)
  modules=${V5_NODE_MODULES:-$v5_dir/node_modules}
  if [ ! -f "$modules/rocketmq-client-nodejs/package.json" ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
      echo "SKIP: DEPLOY_TEST_PROXY=1 needs node and npm to install rocketmq-client-nodejs into $modules"
      rm -rf "$LOCAL_CLUSTER_DIR"
      exit 77
    fi
    [ -n "${V5_NODE_MODULES:-}" ] && { echo "FAIL: V5_NODE_MODULES=$V5_NODE_MODULES has no rocketmq-client-nodejs"; exit 1; }
    echo "installing rocketmq-client-nodejs into $modules"
    (cd "$v5_dir" && npm install --no-audit --no-fund) || { echo "FAIL: npm install in $v5_dir failed"; rm -rf "$LOCAL_CLUSTER_DIR"; exit 1; }
  fi
fi

ns_prefix=rmqlc${LOCAL_CLUSTER_ID:-}-
started=0
cleanup() {
  if [ $started -eq 1 ]; then "$LOCAL_CLUSTER_SH" down >/dev/null 2>&1 || true; fi
  rm -rf "$LOCAL_CLUSTER_DIR"
}
trap cleanup EXIT

fail() {
  {
    echo "FAIL: $*"
    for f in "$LOCAL_CLUSTER_DIR"/logs/*.log; do
      [ -f "$f" ] || continue
      echo "--- last lines of $(basename "$f")"; tail -n 15 "$f"
    done
  } >&2
  exit 1
}
ok() { echo "ok: $*"; }

t0=$SECONDS
started=1
"$LOCAL_CLUSTER_SH" up || fail "local-cluster.sh up failed"
mode=$(cat "$LOCAL_CLUSTER_DIR/mode")
ok "up in ${mode} mode in $((SECONDS - t0)) s"
if [ "$mode" = netns ]; then
  n=$(ip netns list | grep -c "^$ns_prefix")
  [ "$n" -ge 7 ] || fail "netns mode but only $n ${ns_prefix}* namespaces"
  ok "$n namespaces ${ns_prefix}* (bridge + one per node), host link ${ns_prefix}host"
fi

status=$("$LOCAL_CLUSTER_SH" status) || fail "status failed"
nodes=(namesrv-1 namesrv-2 broker-a-master broker-a-slave broker-b-master broker-b-slave)
[ "$PROXY_BIN" = /nonexistent/proxy ] || nodes+=(proxy)
for n in "${nodes[@]}"; do
  echo "$status" | grep -Eq "^$n +running +[0-9]+ +[0-9.:]+ +yes$" || fail "status does not show $n running and listening:
$status"
done
ok "status: ${#nodes[@]} nodes running and listening"

pids=()
for n in "${nodes[@]}"; do pids+=("$(cat "$LOCAL_CLUSTER_DIR/pids/$n.pid")"); done

eval "$("$LOCAL_CLUSTER_SH" env)"
export NAMESRV_ADDR
A=$RMQADMIN_BIN

# Every broker, slaves included, registers with both nameservers at start.
for ns in ${NAMESRV_ADDR//;/ }; do
  deadline=$((SECONDS + 15))
  while :; do
    out=$("$A" clusterList -n "$ns" 2>&1)
    n=$(echo "$out" | grep -cE '^DefaultCluster +broker-[ab] +[01] ')
    [ "$n" -eq 4 ] && break
    [ $SECONDS -lt $deadline ] || fail "nameserver $ns lists $n of 4 brokers:
$out"
    sleep 0.2
  done
done
ok "both nameservers list broker-a and broker-b, master and slave"

topic=DeployTest$$
"$A" updateTopic -c DefaultCluster -t "$topic" -r 4 -w 4 || fail "updateTopic -c DefaultCluster failed"
deadline=$((SECONDS + 15))
while :; do
  route=$("$A" topicRoute -t "$topic" 2>&1)
  if echo "$route" | grep -Eq '^broker-a +4 +4 +6 ' && echo "$route" | grep -Eq '^broker-b +4 +4 +6 '; then break; fi
  [ $SECONDS -lt $deadline ] || fail "topicRoute does not show 4 queues on both brokers:
$route"
  sleep 0.2
done
ok "topic $topic spans broker-a and broker-b (4 queues each)"

send() { # body
  local out
  out=$("$A" sendMessage -t "$topic" -p "$1" --json 2>&1) || fail "sendMessage '$1' failed: $out"
  echo "$out" | grep -q '"SendStatus": "SEND_OK"' || fail "sendMessage '$1': $out"
  echo "$out" | sed -n 's/.*"Broker": "\(broker-[ab]\)".*/\1/p'
}
declare -A sent_to
for i in 1 2 3; do sent_to[m$i-$$]=$(send "m$i-$$") || exit 1; done
"$A" wipeWritePerm -b broker-a >/dev/null || fail "wipeWritePerm broker-a failed"
for i in 4 5 6; do
  b=$(send "m$i-$$") || exit 1
  [ "$b" = broker-b ] || fail "with broker-a read-only, message m$i went to '$b'"
  sent_to[m$i-$$]=$b
done
"$A" addWritePerm -b broker-a >/dev/null || fail "addWritePerm broker-a failed"
ok "6 messages sent (3 of them while broker-a was read-only, all to broker-b)"

consumed=$("$A" consumeMessage -t "$topic" -g DeployTestGroup$$ -c 6 --idle 5000 --json 2>&1) \
  || fail "consumeMessage failed: $consumed"
for body in "${!sent_to[@]}"; do
  echo "$consumed" | grep -q "\"Body\": \"$body\"" || fail "message $body was not consumed:
$consumed"
done
got=$(echo "$consumed" | grep -c '"Body": ')
[ "$got" -eq 6 ] || fail "consumed $got messages, want 6"
for b in broker-a broker-b; do
  echo "$consumed" | grep -q "\"Broker\": \"$b\"" || fail "nothing consumed from $b"
done
ok "all 6 messages consumed back, from broker-a and broker-b"

# Through the proxy (RocketMQ 5 gRPC) with the unmodified Node.js client of
# tests/compat/v5 (DEPLOY_TEST_PROXY=1). Its SimpleConsumer names queue 0 of
# each broker in every receive; the proxy pops all queues of that broker.
if [ "${DEPLOY_TEST_PROXY:-0}" = 1 ]; then
  [ "$PROXY_BIN" != /nonexistent/proxy ] || fail "DEPLOY_TEST_PROXY=1 but the proxy is not built"
  [ -f "$modules/rocketmq-client-nodejs/package.json" ] && command -v node >/dev/null ||
    fail "DEPLOY_TEST_PROXY=1 needs node and rocketmq-client-nodejs in $modules"
  "$A" updateSubGroup -c DefaultCluster -g DeployProxyGroup$$ >/dev/null || fail "updateSubGroup failed"
  PROXY_ENDPOINT=$PROXY_ADDR TOPIC=$topic GROUP=DeployProxyGroup$$ COUNT=8 NODE_PATH=$modules \
    node "$(dirname "$0")/proxy_roundtrip.js" || fail "round trip through the proxy at $PROXY_ADDR failed"
  ok "8 messages sent and received through the proxy at $PROXY_ADDR"
else
  echo "note: send/receive through the proxy not run (set DEPLOY_TEST_PROXY=1); messages went through the brokers with rmqadmin"
fi

t1=$SECONDS
down=$("$LOCAL_CLUSTER_SH" down 2>&1) || fail "down failed: $down"
started=0
echo "$down"
ok "down in $((SECONDS - t1)) s"
echo "$down" | grep -q SIGKILL && fail "down had to SIGKILL a daemon"
# A daemon that exited may stay a zombie until init reaps it; that is not
# a running process.
for p in "${pids[@]}"; do
  st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$p/status" 2>/dev/null || true)
  case "$st" in ""|Z|X) ;; *) fail "pid $p is still running (state $st) after down" ;; esac
done
ok "no daemon pid alive (${pids[*]})"
for n in "${nodes[@]}"; do
  case $n in namesrv-*) want="nameserver stopped" ;; broker-*) want="broker stopped" ;; *) want="stopped" ;; esac
  log="$LOCAL_CLUSTER_DIR/logs/$n.log"
  if grep -qE 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$log"; then
    fail "$n: sanitizer report in its log (the stop was not clean)"
  fi
  grep -q "$want" "$log" || fail "$n did not log a clean stop"
done
ok "every daemon logged a clean stop after SIGTERM"
if command -v ip >/dev/null 2>&1; then
  left=$(ip netns list 2>/dev/null | grep "^$ns_prefix" || true)
  [ -z "$left" ] || fail "namespaces left behind: $left"
  ip link show "${ns_prefix}host" >/dev/null 2>&1 && fail "link ${ns_prefix}host left behind"
  ok "ip netns list has no ${ns_prefix}* namespace, no ${ns_prefix}host link"
fi
[ -e "$LOCAL_CLUSTER_DIR/manifest" ] && fail "manifest left behind"
ls "$LOCAL_CLUSTER_DIR"/pids/*.pid >/dev/null 2>&1 && fail "pid files left behind"
echo "local cluster test passed in $((SECONDS - t0)) s ($mode mode)"
exit 0
