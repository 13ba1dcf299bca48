#!/usr/bin/env bash
# Runs the docker-compose topology (deploy/docker-compose.yml) without Docker:
# 2 nameservers, broker-a and broker-b (master + slave each) and the proxy, as
# separate processes started from the very same deploy/conf/*.yaml files.
# Only addresses, ports, adminAllowList (netns mode: the cluster subnet),
# store paths and the commitlog segment size are overridden, with --set, so
# the files stay exactly what the containers read.
#
#   deploy/local-cluster.sh up       start every node (waits until all listen)
#   deploy/local-cluster.sh down     stop every node, delete what `up` created
#   deploy/local-cluster.sh status   show nodes, pids, addresses
#   deploy/local-cluster.sh env      print NAMESRV_ADDR= / PROXY_ADDR= lines
#
# Two network modes (LOCAL_CLUSTER_MODE=auto|netns|loopback; auto = netns
# when run as root, loopback otherwise):
#
#  netns     every node in its own network namespace rmqlc-<node>, with the
#            address compose gives it (10.231.0.11 ... 10.231.0.31) and the
#            standard ports (9876, 10911, 8081, 8080). The nodes' veths hang
#            on a bridge that lives in a dedicated namespace, rmqlc-net, so
#            the host's firewall and bridge settings never see their traffic.
#            The host reaches the nodes through one more veth pair,
#            rmqlc-host (10.231.0.1/24 in the root namespace, the compose
#            gateway's address) <-> a port of that bridge. No namespace has a
#            default route: nothing can leave 10.231.0.0/24.
#  loopback  every node on 127.0.0.1 with its own port, from
#            LOCAL_CLUSTER_PORT_BASE (default 20000): namesrv-1 +0,
#            namesrv-2 +1, broker-a-master +10, broker-a-slave +20,
#            broker-b-master +30, broker-b-slave +40 (each broker's HA port
#            is its port +1), proxy gRPC +50 and remoting +51.
#
# State: LOCAL_CLUSTER_DIR (default ./data/local-cluster) holds pids/,
# logs/, store/ and a manifest of every namespace and link `up` created,
# which `down` deletes (and nothing else).
# Binaries: NAMESRV_BIN, BROKER_BIN, PROXY_BIN (default: ./build/...). A
# missing proxy binary is reported and the proxy node is left out.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
CONF_DIR=${LOCAL_CLUSTER_CONF:-$top/deploy/conf}
DIR=${LOCAL_CLUSTER_DIR:-$top/data/local-cluster}
MODE=${LOCAL_CLUSTER_MODE:-auto}
PORT_BASE=${LOCAL_CLUSTER_PORT_BASE:-20000}
NET=${LOCAL_CLUSTER_NET:-10.231.0}
SEGMENT=${LOCAL_CLUSTER_COMMITLOG_SIZE-67108864}
NAMESRV_BIN=${NAMESRV_BIN:-$top/build/nameserver/nameserver}
BROKER_BIN=${BROKER_BIN:-$top/build/broker/broker}
PROXY_BIN=${PROXY_BIN:-$top/build/proxy/proxy}
START_TIMEOUT=${LOCAL_CLUSTER_START_TIMEOUT:-30}

# LOCAL_CLUSTER_ID (digits) names a second cluster on the same host in netns
# mode: namespaces rmqlc<ID>-*, host link rmqlc<ID>-host; give it its own
# LOCAL_CLUSTER_NET too.
CLUSTER_ID=${LOCAL_CLUSTER_ID:-}
NS_PREFIX=rmqlc${CLUSTER_ID}-
NET_NS=${NS_PREFIX}net
HOST_IF=${NS_PREFIX}host

# node kind last-octet loopback-offset
NODES=(
  "namesrv-1 namesrv 11 0"
  "namesrv-2 namesrv 12 1"
  "broker-a-master broker 21 10"
  "broker-a-slave broker 22 20"
  "broker-b-master broker 23 30"
  "broker-b-slave broker 24 40"
  "proxy proxy 31 50"
)

die() { echo "local-cluster: $*" >&2; exit 1; }
note() { echo "local-cluster: $*"; }

case "$CLUSTER_ID" in *[!0-9]*) echo "local-cluster: LOCAL_CLUSTER_ID must be digits" >&2; exit 2 ;; esac
[ "${#CLUSTER_ID}" -le 3 ] || { echo "local-cluster: LOCAL_CLUSTER_ID has at most 3 digits" >&2; exit 2; }

resolve_mode() {
  case "$MODE" in
    auto) if [ "$(id -u)" -eq 0 ]; then MODE=netns; else MODE=loopback; fi ;;
    netns) [ "$(id -u)" -eq 0 ] || die "LOCAL_CLUSTER_MODE=netns needs root" ;;
    loopback) ;;
    *) die "LOCAL_CLUSTER_MODE must be auto, netns or loopback (got '$MODE')" ;;
  esac
}

node_field() { # node field-index
  local n
  for n in "${NODES[@]}"; do
    set -- $n
    if [ "$1" = "$NODE_Q" ]; then eval "echo \${$FIELD_Q}"; return 0; fi
  done
  return 1
}
kind_of() { NODE_Q=$1 FIELD_Q=2 node_field; }
octet_of() { NODE_Q=$1 FIELD_Q=3 node_field; }
offset_of() { NODE_Q=$1 FIELD_Q=4 node_field; }

# Address and main port of a node as seen from this (root) namespace.
node_ip() {
  if [ "$MODE" = netns ]; then echo "$NET.$(octet_of "$1")"; else echo 127.0.0.1; fi
}
node_port() {
  local kind; kind=$(kind_of "$1")
  if [ "$MODE" = netns ]; then
    case $kind in namesrv) echo 9876 ;; broker) echo 10911 ;; proxy) echo 8081 ;; esac
  else
    echo $((PORT_BASE + $(offset_of "$1")))
  fi
}
proxy_remoting_port() {
  if [ "$MODE" = netns ]; then echo 8080; else echo $((PORT_BASE + 51)); fi
}
namesrv_addr() { echo "$(node_ip namesrv-1):$(node_port namesrv-1);$(node_ip namesrv-2):$(node_port namesrv-2)"; }

bin_of() {
  case $(kind_of "$1") in
    namesrv) echo "$NAMESRV_BIN" ;; broker) echo "$BROKER_BIN" ;; proxy) echo "$PROXY_BIN" ;;
  esac
}

pidfile() { echo "$DIR/pids/$1.pid"; }

# Prints the pid of the node if its pid file names a live process that still
# runs the binary `up` started (a recycled pid of some other program is never
# signalled, and `down` needs no NAMESRV_BIN/... to find the daemons).
node_pid() {
  local f; f=$(pidfile "$1")
  [ -f "$f" ] || return 1
  local pid; pid=$(cat "$f")
  [ -n "$pid" ] && alive "$pid" || return 1
  local exe; exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  local want=""
  [ -f "$DIR/pids/$1.bin" ] && want=$(cat "$DIR/pids/$1.bin")
  [ -z "$exe" ] || [ -z "$want" ] || [ "${exe% (deleted)}" = "$want" ] || return 1
  echo "$pid"
}

# A process that exited but was not reaped yet (its parent, after `up`
# returned, is init or a subreaper) is a zombie: dead, though kill -0 works.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local st
  st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

manifest_add() { echo "$1" >>"$DIR/manifest"; }

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_listen() { # node host port
  local deadline=$((SECONDS + START_TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    tcp_open "$2" "$3" && return 0
    # Plain liveness: right after the fork the pid may still be running
    # bash or `ip netns exec` on its way to exec the daemon.
    alive "$(cat "$(pidfile "$1")")" ||
      { tail -n 20 "$DIR/logs/$1.log" >&2; die "$1 exited during start; log: $DIR/logs/$1.log"; }
    sleep 0.1
  done
  tail -n 20 "$DIR/logs/$1.log" >&2
  die "$1 did not listen on $2:$3 within ${START_TIMEOUT}s; log: $DIR/logs/$1.log"
}

net_up() {
  local n ip
  [ -e /proc/sys/net/ipv4 ] || die "no IPv4 networking"
  if ip netns list | grep -q "^${NS_PREFIX}"; then
    die "namespaces ${NS_PREFIX}* already exist (another local cluster is up?); run 'down' with its LOCAL_CLUSTER_DIR"
  fi
  if ip -4 -o addr show | grep -q " inet $NET\."; then
    die "an interface of this host already has an address in $NET.0/24; pick another LOCAL_CLUSTER_NET"
  fi
  if [ -n "$(ip -4 route show "$NET.0/24" 2>/dev/null)" ]; then
    die "this host already routes $NET.0/24; pick another LOCAL_CLUSTER_NET"
  fi
  ip netns add "$NET_NS"; manifest_add "netns $NET_NS"
  ip -n "$NET_NS" link set lo up
  ip -n "$NET_NS" link add br0 type bridge
  ip -n "$NET_NS" link set br0 up
  ip link add "$HOST_IF" type veth peer name uplink netns "$NET_NS"; manifest_add "link $HOST_IF"
  ip -n "$NET_NS" link set uplink master br0 up
  ip addr add "$NET.1/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  for n in "${NODES[@]}"; do
    set -- $n
    [ "$2" != proxy ] || [ -x "$PROXY_BIN" ] || continue
    ip netns add "$NS_PREFIX$1"; manifest_add "netns $NS_PREFIX$1"
    ip -n "$NS_PREFIX$1" link set lo up
    ip -n "$NET_NS" link add "v$3" type veth peer name eth0 netns "$NS_PREFIX$1"
    ip -n "$NET_NS" link set "v$3" master br0 up
    ip -n "$NS_PREFIX$1" addr add "$NET.$3/24" dev eth0
    ip -n "$NS_PREFIX$1" link set eth0 up
  done
}

# Runs the node's daemon in the background from its compose config plus the
# overrides; records the pid. `ip netns exec` execs the daemon itself, so $!
# is the daemon's pid in both modes.
start_node() {
  local node=$1 kind bin ip port
  kind=$(kind_of "$node"); bin=$(bin_of "$node"); ip=$(node_ip "$node"); port=$(node_port "$node")
  local args=(-c "$CONF_DIR/$node.yaml")
  # The admin CLI on the host talks from $NET.1; the files allow the compose
  # subnet, which differs when LOCAL_CLUSTER_NET does.
  local admin="adminAllowList=127.0.0.1;::1;$NET.0/24"
  case $kind in
    namesrv)
      args+=(--set "listenPort=$port")
      if [ "$MODE" = netns ]; then args+=(--set "$admin"); else args+=(--set "bindAddress=127.0.0.1"); fi ;;
    broker)
      mkdir -p "$DIR/store/$node"
      args+=(--set "listenPort=$port" --set "brokerIP1=$ip" --set "namesrvAddr=$(namesrv_addr)"
             --set "storePathRootDir=$DIR/store/$node")
      if [ "$MODE" = netns ]; then args+=(--set "$admin"); else args+=(--set "bindAddress=127.0.0.1"); fi
      [ -z "$SEGMENT" ] || args+=(--set "mapedFileSizeCommitLog=$SEGMENT") ;;
    proxy)
      args+=(--set "grpcServerPort=$port" --set "remotingListenPort=$(proxy_remoting_port)"
             --set "namesrvAddr=$(namesrv_addr)") ;;
  esac
  echo "=== $(date '+%F %T') start: $bin ${args[*]}" >>"$DIR/logs/$node.log"
  if [ "$MODE" = netns ]; then
    ip netns exec "$NS_PREFIX$node" "$bin" "${args[@]}" </dev/null >>"$DIR/logs/$node.log" 2>&1 9>&- &
  else
    "$bin" "${args[@]}" </dev/null >>"$DIR/logs/$node.log" 2>&1 9>&- &
  fi
  echo $! >"$(pidfile "$node")"
  readlink -f "$bin" >"$DIR/pids/$node.bin"
}

cmd_up() {
  local n node
  [ -x "$NAMESRV_BIN" ] || die "nameserver binary $NAMESRV_BIN not found (build first, or set NAMESRV_BIN)"
  [ -x "$BROKER_BIN" ] || die "broker binary $BROKER_BIN not found (build first, or set BROKER_BIN)"
  mkdir -p "$DIR"
  DIR=$(cd "$DIR" && pwd)
  exec 9>"$DIR/lock"
  flock -n 9 || die "another local-cluster command is running on $DIR"
  for n in "${NODES[@]}"; do
    set -- $n
    if node_pid "$1" >/dev/null; then die "$1 is already running (pid $(node_pid "$1")); run 'down' first"; fi
  done
  if [ -s "$DIR/manifest" ]; then die "$DIR/manifest lists objects of an earlier run; run 'down' first"; fi
  mkdir -p "$DIR/pids" "$DIR/logs" "$DIR/store"
  # A failed start leaves nothing running and nothing created behind.
  trap 'st=$?; if [ $st -ne 0 ]; then note "start failed; cleaning up"; exec 9>&-; cmd_down || true; fi' EXIT
  echo "$MODE" >"$DIR/mode"
  echo "$PORT_BASE" >"$DIR/port-base"
  : >"$DIR/manifest"
  if [ "$MODE" = netns ]; then
    net_up
  else
    # A port someone else listens on would pass for our node being up.
    for n in "${NODES[@]}"; do
      set -- $n
      if tcp_open 127.0.0.1 "$(node_port "$1")"; then die "port $(node_port "$1") (for $1) is already in use; pick another LOCAL_CLUSTER_PORT_BASE"; fi
      if [ "$2" = proxy ] && tcp_open 127.0.0.1 "$(proxy_remoting_port)"; then die "port $(proxy_remoting_port) (proxy remoting) is already in use"; fi
    done
  fi
  for node in namesrv-1 namesrv-2; do start_node "$node"; done
  for node in namesrv-1 namesrv-2; do wait_listen "$node" "$(node_ip "$node")" "$(node_port "$node")"; done
  for node in broker-a-master broker-b-master broker-a-slave broker-b-slave; do start_node "$node"; done
  for node in broker-a-master broker-b-master broker-a-slave broker-b-slave; do
    wait_listen "$node" "$(node_ip "$node")" "$(node_port "$node")"
  done
  if [ -x "$PROXY_BIN" ]; then
    start_node proxy
    wait_listen proxy "$(node_ip proxy)" "$(node_port proxy)"
  else
    note "proxy binary $PROXY_BIN not found: the proxy node is not started"
  fi
  trap - EXIT
  note "up ($MODE mode, state in $DIR)"
  cmd_status
}

# SIGTERM to the given pids, SIGKILL to those still alive after
# LOCAL_CLUSTER_STOP_TIMEOUT seconds (default 15).
stop_pids() {
  [ $# -gt 0 ] || return 0
  kill -TERM "$@" 2>/dev/null || true
  local deadline=$((SECONDS + ${LOCAL_CLUSTER_STOP_TIMEOUT:-15})) left pid
  while :; do
    left=()
    for pid in "$@"; do alive "$pid" && left+=("$pid"); done
    [ "${#left[@]}" -gt 0 ] || return 0
    if [ $SECONDS -ge $deadline ]; then
      note "SIGKILL to ${left[*]} (still running after SIGTERM)"
      kill -KILL "${left[@]}" 2>/dev/null || true
      sleep 0.2
      return 0
    fi
    sleep 0.05
  done
}

cmd_down() {
  local n pid first=() last=() stopped=()
  [ -d "$DIR" ] || { note "nothing to stop ($DIR does not exist)"; return 0; }
  DIR=$(cd "$DIR" && pwd)
  exec 9>"$DIR/lock"
  flock -w 30 9 || die "another local-cluster command holds $DIR/lock"
  # Proxy and brokers first, so the brokers can still unregister from the
  # nameservers; then the nameservers.
  for n in "${NODES[@]}"; do
    set -- $n
    pid=$(node_pid "$1") || continue
    stopped+=("$1")
    if [ "$2" = namesrv ]; then last+=("$pid"); else first+=("$pid"); fi
  done
  # Anything still inside one of our namespaces is ours too (e.g. a pid file
  # lost to a crash of `up`).
  if [ -f "$DIR/manifest" ]; then
    while read -r what name; do
      [ "$what" = netns ] || continue
      for pid in $(ip netns pids "$name" 2>/dev/null || true); do
        case " ${first[*]} ${last[*]} " in *" $pid "*) ;; *) last+=("$pid"); stopped+=("pid $pid in $name") ;; esac
      done
    done <"$DIR/manifest"
  fi
  stop_pids "${first[@]}"
  stop_pids "${last[@]}"
  [ "${#stopped[@]}" -eq 0 ] || note "stopped ${stopped[*]}"
  rm -f "$DIR"/pids/*.pid "$DIR"/pids/*.bin
  if [ -f "$DIR/manifest" ]; then
    # Reverse order: node namespaces (and their veths), the host veth, then
    # the bridge namespace.
    tac "$DIR/manifest" | while read -r what name; do
      case $what in
        netns) if ip netns list | grep -qx "$name\( .*\)\?"; then ip netns del "$name"; fi ;;
        link) if ip link show "$name" >/dev/null 2>&1; then ip link del "$name"; fi ;;
      esac
    done
    rm -f "$DIR/manifest"
  fi
  note "down"
}

cmd_status() {
  local n pid state addr running=0 total=0
  [ -f "$DIR/mode" ] && MODE=$(cat "$DIR/mode")
  [ -f "$DIR/port-base" ] && PORT_BASE=$(cat "$DIR/port-base")
  resolve_mode
  printf '%-16s %-8s %-8s %-22s %s\n' NODE STATE PID ADDRESS LISTENING
  for n in "${NODES[@]}"; do
    set -- $n
    total=$((total + 1))
    addr="$(node_ip "$1"):$(node_port "$1")"
    if pid=$(node_pid "$1"); then
      state=running; running=$((running + 1))
      if tcp_open "$(node_ip "$1")" "$(node_port "$1")"; then l=yes; else l=no; fi
    else
      state=stopped; pid=-; l=-
    fi
    printf '%-16s %-8s %-8s %-22s %s\n' "$1" "$state" "$pid" "$addr" "$l"
  done
  if [ "$MODE" = netns ]; then
    echo "namespaces: $(ip netns list | awk '{print $1}' | grep "^${NS_PREFIX}" | tr '\n' ' ')"
  fi
  echo "running: $running/$total  mode: $MODE  namesrvAddr: $(namesrv_addr)  proxy: $(node_ip proxy):$(node_port proxy)"
}

cmd_env() {
  [ -f "$DIR/mode" ] && MODE=$(cat "$DIR/mode")
  [ -f "$DIR/port-base" ] && PORT_BASE=$(cat "$DIR/port-base")
  resolve_mode
  echo "NAMESRV_ADDR='$(namesrv_addr)'"
  echo "PROXY_ADDR='$(node_ip proxy):$(node_port proxy)'"
  echo "PROXY_REMOTING_ADDR='$(node_ip proxy):$(proxy_remoting_port)'"
  local n
  for n in "${NODES[@]}"; do
    set -- $n
    [ "$2" = broker ] || continue
    echo "ADDR_$(echo "$1" | tr 'a-z-' 'A-Z_')='$(node_ip "$1"):$(node_port "$1")'"
  done
}

case "${1:-}" in
  up) resolve_mode; cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
