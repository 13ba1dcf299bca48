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
    stop_one nameserver
    exit 0 ;;
  status)
    for d in nameserver; do
      if is_running "$RMQ_HOME/$d.pid"; then echo "$d: running (pid $(cat "$RMQ_HOME/$d.pid"))"
      else echo "$d: stopped"; fi
    done
    exit 0 ;;
  start) ;;
  *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

deploy/setup.sh
mkdir -p "$RMQ_HOME/logs"

if is_running "$RMQ_HOME/nameserver.pid"; then
  echo "nameserver already running (pid $(cat "$RMQ_HOME/nameserver.pid"))"
else
  nohup build/nameserver/nameserver --set listenPort="$NS_PORT" \
    >>"$RMQ_HOME/logs/nameserver.log" 2>&1 &
  echo $! >"$RMQ_HOME/nameserver.pid"
  if ! wait_port "$NS_PORT"; then
    echo "nameserver did not come up; see $RMQ_HOME/logs/nameserver.log" >&2
    exit 1
  fi
fi

cat <<MSG
single-node cluster is up (data and logs under $RMQ_HOME)
  nameserver  127.0.0.1:$NS_PORT   (namesrvAddr=127.0.0.1:$NS_PORT)
stop it with: deploy/quickstart.sh stop
MSG
