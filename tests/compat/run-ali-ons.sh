#!/bin/sh
# Runs the unmodified RocketMQ 4.x Node.js client ali-ons (tests/compat/
# ali_ons_test.js) against our nameserver and broker on free loopback ports
# with temporary data directories. Usage:
#   run-ali-ons.sh [NAMESRV_BIN BROKER_BIN]      (or env NAMESRV_BIN / BROKER_BIN)
# Installs ali-ons into tests/compat/node_modules with the configured npm
# registry when it is missing. Exits non-zero on any failure; the daemons are
# always stopped.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
NAMESRV_BIN=${1:-${NAMESRV_BIN:-}}
BROKER_BIN=${2:-${BROKER_BIN:-}}

fail() { echo "run-ali-ons: $*" >&2; exit 1; }

[ -n "$NAMESRV_BIN" ] && [ -x "$NAMESRV_BIN" ] || fail "nameserver binary not given or not executable: '$NAMESRV_BIN'"
[ -n "$BROKER_BIN" ] && [ -x "$BROKER_BIN" ] || fail "broker binary not given or not executable: '$BROKER_BIN'"
command -v node >/dev/null 2>&1 || fail "node is not installed"
command -v npm >/dev/null 2>&1 || fail "npm is not installed"

if [ ! -f "$here/node_modules/ali-ons/package.json" ]; then
    echo "run-ali-ons: installing ali-ons into $here/node_modules"
    (cd "$here" && npm install --no-audit --no-fund) || fail "npm install failed"
fi

. "$here/lib.sh"

work=$(mktemp -d /tmp/rmq-compat-XXXXXX)
ns_pid=
broker_pid=
status=1
cleanup() {
    stop_pids $broker_pid $ns_pid
    if [ "$status" -ne 0 ]; then
        for f in "$work"/namesrv.log "$work"/broker.log; do
            [ -f "$f" ] && { echo "---- last lines of $f"; tail -n 40 "$f"; } >&2
        done
    fi
    rm -rf "$work"
}
trap 'cleanup' EXIT
trap 'exit 1' INT TERM HUP

ns_port=$(free_port)
broker_port=$(free_port)
while [ "$broker_port" = "$ns_port" ]; do broker_port=$(free_port); done

"$NAMESRV_BIN" --set "listenPort=$ns_port" --set bindAddress=127.0.0.1 >"$work/namesrv.log" 2>&1 &
ns_pid=$!
wait_port "$ns_port" || fail "nameserver did not listen on $ns_port"

mkdir -p "$work/store"
"$BROKER_BIN" \
    --set "listenPort=$broker_port" \
    --set "namesrvAddr=127.0.0.1:$ns_port" \
    --set brokerIP1=127.0.0.1 \
    --set brokerName=compat-broker \
    --set brokerClusterName=CompatCluster \
    --set "storePathRootDir=$work/store" \
    >"$work/broker.log" 2>&1 &
broker_pid=$!
wait_port "$broker_port" || fail "broker did not listen on $broker_port"

echo "run-ali-ons: nameserver 127.0.0.1:$ns_port, broker 127.0.0.1:$broker_port"
if NAMESRV_ADDR="127.0.0.1:$ns_port" BROKER_ADDR="127.0.0.1:$broker_port" \
    NODE_PATH="$here/node_modules" node "$here/ali_ons_test.js"; then
    status=0
fi
exit $status
