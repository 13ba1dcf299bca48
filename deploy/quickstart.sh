#!/usr/bin/env bash
# Installs what is needed, builds, and starts a single-node cluster with the
# embedded defaults. Data, logs and pid files live under $RMQ_HOME (./data).
#   deploy/quickstart.sh          install + build + start
#   deploy/quickstart.sh stop     stop what was started
#   deploy/quickstart.sh status   show what is running
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
RMQ_HOME=${RMQ_HOME:-$top/data}
NS_PORT=${NS_PORT:-9876}
BROKER_PORT=${BROKER_PORT:-10911}
PROXY_PORT=${PROXY_PORT:-8081}

is_running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_one() {
  local name=$1 pidf=$RMQ_HOME/$1.pid
  if is_running "$pidf"; then
    kill -TERM "$(cat "$pidf")"
    for _ in $(seq 1 50); do is_running "$pidf" || break; sleep 0.1; done
    is_running "$pidf" && kill -KILL "$(cat "$pidf")"
    echo "stopped $name"
  fi
  rm -f "$pidf"
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

case "${1:-start}" in
  stop)
    stop_one proxy
    stop_one broker
    stop_one nameserver
    exit 0 ;;
  status)
    for d in nameserver broker proxy; do
      if is_running "$RMQ_HOME/$d.pid"; then echo "$d: running (pid $(cat "$RMQ_HOME/$d.pid"))"
      else echo "$d: stopped"; fi
    done
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

deploy/setup.sh
mkdir -p "$RMQ_HOME/logs"

# start NAME PORT CMD...: runs a daemon in the background unless it runs already.
start() {
  local name=$1 port=$2; shift 2
  if is_running "$RMQ_HOME/$name.pid"; then
    echo "$name already running (pid $(cat "$RMQ_HOME/$name.pid"))"
    return 0
  fi
  nohup "$@" >>"$RMQ_HOME/logs/$name.log" 2>&1 &
  echo $! >"$RMQ_HOME/$name.pid"
  if ! wait_port "$port"; then
    echo "$name did not come up; see $RMQ_HOME/logs/$name.log" >&2
    exit 1
  fi
}

start nameserver "$NS_PORT" build/nameserver/nameserver --set listenPort="$NS_PORT"
start broker "$BROKER_PORT" build/broker/broker \
  --set listenPort="$BROKER_PORT" --set namesrvAddr="127.0.0.1:$NS_PORT" \
  --set brokerIP1=127.0.0.1 --set storePathRootDir="$RMQ_HOME/store"
start proxy "$PROXY_PORT" build/proxy/proxy \
  --set namesrvAddr="127.0.0.1:$NS_PORT" --set grpcServerPort="$PROXY_PORT"

cat <<MSG
single-node cluster is up (data and logs under $RMQ_HOME)
  nameserver  127.0.0.1:$NS_PORT   (namesrvAddr=127.0.0.1:$NS_PORT)
  broker      127.0.0.1:$BROKER_PORT  (cluster DefaultCluster, broker-a, store $RMQ_HOME/store)
  proxy       127.0.0.1:$PROXY_PORT   (RocketMQ 5 gRPC endpoint for the 5.x clients)
try it:
  build/tools/rmqadmin clusterList -n 127.0.0.1:$NS_PORT
  build/tools/rmqadmin updateTopic -n 127.0.0.1:$NS_PORT -c DefaultCluster -t TopicTest
  build/tools/rmqadmin sendMessage -n 127.0.0.1:$NS_PORT -t TopicTest -p hello
  build/tools/rmqadmin consumeMessage -n 127.0.0.1:$NS_PORT -t TopicTest -g demo -c 1
stop it with: deploy/quickstart.sh stop
MSG
