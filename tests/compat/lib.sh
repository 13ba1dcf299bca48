# Shell helpers shared by the client compatibility runners (run-ali-ons.sh,
# v5/run-v5.sh), sourced, never run: free loopback ports, waiting for a port
# and stopping the daemons a runner started. Needs node.

# Prints a loopback TCP port that was free a moment ago.
free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

# Waits up to 15 s until 127.0.0.1:$1 accepts connections; non-zero if not.
wait_port() {
    node -e '
const net = require("net");
const port = Number(process.argv[1]), end = Date.now() + 15000;
(function attempt() {
  const s = net.connect(port, "127.0.0.1");
  s.on("connect", () => { s.end(); process.exit(0); });
  s.on("error", () => { if (Date.now() > end) process.exit(1); setTimeout(attempt, 100); });
})();' "$1"
}

# SIGTERM to every pid given, then up to 5 s each to exit before SIGKILL; reaps them.
stop_pids() {
    for pid in "$@"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "$@"; do
        i=0
        while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
