#!/bin/sh
# Runs the unmodified RocketMQ 5.x Node.js client (rocketmq-client-nodejs,
# gRPC) against our nameserver, broker and proxy on free loopback ports with
# temporary data directories (tests/compat/v5/v5_test.js). Usage:
#   run-v5.sh NAMESRV_BIN BROKER_BIN PROXY_BIN      (or env NAMESRV_BIN, ...)
# Installs the client into tests/compat/v5/node_modules with the configured
# npm registry when it is missing. Exits non-zero on any failure; the
# daemons are always stopped. The proxy keeps push consumers' messages
# invisible for 3 s at a time (renewing 1 s before the end), so that a
# listener slower than that shows whether the renewal works.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
NAMESRV_BIN=${1:-${NAMESRV_BIN:-}}
BROKER_BIN=${2:-${BROKER_BIN:-}}
PROXY_BIN=${3:-${PROXY_BIN:-}}

fail() { echo "run-v5: $*" >&2; exit 1; }

for b in "$NAMESRV_BIN" "$BROKER_BIN" "$PROXY_BIN"; do
    [ -n "$b" ] && [ -x "$b" ] || fail "binary not given or not executable: '$b'"
done
command -v node >/dev/null 2>&1 || fail "node is not installed"
command -v npm >/dev/null 2>&1 || fail "npm is not installed"

if [ ! -f "$here/node_modules/rocketmq-client-nodejs/package.json" ]; then
    echo "run-v5: installing rocketmq-client-nodejs into $here/node_modules"
    (cd "$here" && npm install --no-audit --no-fund) || fail "npm install failed"
fi

. "$here/../lib.sh"

work=$(mktemp -d /tmp/rmq-v5-XXXXXX)
ns_pid=
broker_pid=
proxy_pid=
status=1
cleanup() {
    stop_pids $proxy_pid $broker_pid $ns_pid
    if [ "$status" -ne 0 ]; then
        for f in "$work"/namesrv.log "$work"/broker.log "$work"/proxy.log; do
            [ -f "$f" ] && { echo "---- last lines of $f"; tail -n ${V5_LOG_LINES:-40} "$f"; } >&2
        done
    fi
    rm -rf "$work"
}
trap 'cleanup' EXIT
trap 'exit 1' INT TERM HUP

ns_port=$(free_port)
broker_port=$(free_port)
proxy_port=$(free_port)

"$NAMESRV_BIN" --set "listenPort=$ns_port" --set bindAddress=127.0.0.1 >"$work/namesrv.log" 2>&1 &
ns_pid=$!
wait_port "$ns_port" || fail "nameserver did not listen on $ns_port"

mkdir -p "$work/store"
"$BROKER_BIN" \
    --set "listenPort=$broker_port" \
    --set "namesrvAddr=127.0.0.1:$ns_port" \
    --set brokerIP1=127.0.0.1 \
    --set brokerName=v5-broker \
    --set brokerClusterName=V5Cluster \
    --set "storePathRootDir=$work/store" \
    >"$work/broker.log" 2>&1 &
broker_pid=$!
wait_port "$broker_port" || fail "broker did not listen on $broker_port"

"$PROXY_BIN" \
    --set "grpcServerPort=$proxy_port" \
    --set bindAddress=127.0.0.1 \
    --set "namesrvAddr=127.0.0.1:$ns_port" \
    --set logLevel=${PROXY_LOG_LEVEL:-info} \
    --set defaultInvisibleTimeMills=3000 \
    --set renewAheadTimeMillis=1000 \
    --set renewSliceTimeMillis=3000 \
    --set grpcClientConsumerMaxLongPollingTimeoutMillis=3000 \
    >"$work/proxy.log" 2>&1 &
proxy_pid=$!
wait_port "$proxy_port" || fail "proxy did not listen on $proxy_port"

echo "run-v5: nameserver :$ns_port, broker :$broker_port, proxy :$proxy_port"
if NAMESRV_ADDR="127.0.0.1:$ns_port" BROKER_ADDR="127.0.0.1:$broker_port" \
    PROXY_ENDPOINT="127.0.0.1:$proxy_port" NODE_PATH="$here/node_modules" \
    node --test --test-force-exit --test-concurrency=1 ${V5_TEST_PATTERN:+--test-name-pattern="$V5_TEST_PATTERN"} --test-timeout=600000 "$here/v5_test.js"; then
    status=0
fi
exit $status
