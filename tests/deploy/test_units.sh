#!/usr/bin/env bash
# Static checks of the systemd integration in deploy/systemd/:
#  1. every unit template, with its @...@ placeholders filled in as meson
#     does, passes `systemd-analyze verify` with no output at all (warnings
#     such as unknown keys count as failures); the broker template is
#     verified through instances named after every broker configuration;
#  2. `systemd-analyze security --offline` rates each unit's exposure at or
#     below 2.0 (the units are at 1.5-1.6 today);
#  3. the sysusers.d file creates the "rocketmq" user in a scratch root, and
#     the tmpfiles.d file then creates /var/lib/rocketmq 0750 owned by it;
#  4. the units meson configured for installation (DEPLOY_UNIT_DIR) have no
#     placeholder left and start the binaries from the install bindir.
# Needs systemd-analyze, systemd-sysusers and systemd-tmpfiles; without them
# the test exits 77, which meson reports as SKIP (never as a pass).
# Environment (from meson): DEPLOY_SRC (deploy/), NAMESRV_BIN, BROKER_BIN,
# PROXY_BIN (may be unset while the proxy daemon is not built),
# DEPLOY_UNIT_DIR (optional).
set -uo pipefail

fail=0
skipped=()
bad() { echo "FAIL: $*"; fail=1; }
ok() { echo "ok: $*"; }

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool is not installed; the systemd units were not checked"
    exit 77
  fi
done
: "${DEPLOY_SRC:?DEPLOY_SRC is not set (run through meson test)}"

tmp=$(mktemp -d /tmp/rmq-units-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin" "$tmp/units" "$tmp/etc/rocketmq" "$tmp/root/etc"

# The binaries under the names meson's install gives them.
link_bin() { # name env-value
  if [ -n "${2:-}" ] && [ -x "$2" ]; then ln -s "$2" "$tmp/bin/$1"; return 0; fi
  return 1
}
link_bin nameserver "${NAMESRV_BIN:-}" || bad "NAMESRV_BIN is not an executable"
link_bin broker "${BROKER_BIN:-}" || bad "BROKER_BIN is not an executable"
have_proxy=1
link_bin proxy "${PROXY_BIN:-}" || have_proxy=0

for f in "$DEPLOY_SRC"/systemd/*.service.in; do
  out="$tmp/units/$(basename "${f%.in}")"
  sed -e "s|@BINDIR@|$tmp/bin|g; s|@SYSCONFDIR@|$tmp/etc|g; s|@DOCDIR@|$tmp/doc|g" \
      -e "s|@NAMESRV_BIN@|nameserver|g; s|@BROKER_BIN@|broker|g; s|@PROXY_BIN@|proxy|g" "$f" >"$out"
  if grep -n '@[A-Z_]*@' "$out"; then bad "$(basename "$out"): placeholder left unfilled"; fi
done

units=("$tmp/units/rocketmq-nameserver.service")
for c in broker-a-master broker-a-slave broker-b-master broker-b-slave; do
  units+=("$tmp/units/rocketmq-broker@$c.service")
done
if [ $have_proxy -eq 1 ]; then
  units+=("$tmp/units/rocketmq-proxy.service")
else
  skipped+=("rocketmq-proxy.service (the proxy daemon is not built, so ExecStart has nothing to point at)")
fi

for u in "${units[@]}"; do
  name=$(basename "$u")
  out=$(cd "$tmp" && systemd-analyze verify --man=no "$u" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] || [ -n "$out" ]; then
    bad "systemd-analyze verify $name (exit $rc):"; echo "$out" | sed 's/^/    /'
  else
    ok "systemd-analyze verify $name: clean"
  fi
  line=$(systemd-analyze security --offline=true --threshold=20 --no-pager "$u" 2>&1)
  rc=$?
  score=$(echo "$line" | grep -o 'Overall exposure level for [^:]*: [0-9.]*' | awk '{print $NF}')
  if [ $rc -ne 0 ] || [ -z "$score" ]; then
    bad "systemd-analyze security $name: exposure ${score:-?} (limit 2.0, exit $rc)"
    echo "$line" | grep '✗' | sed 's/^/    /'
  else
    ok "systemd-analyze security $name: exposure $score (limit 2.0)"
  fi
done

# A unit must fail the check when it is broken, or the check proves nothing.
sed 's/^Type=notify$/Type=notify\nNoSuchKey=1/' "$tmp/units/rocketmq-nameserver.service" \
  >"$tmp/units/broken.service"
out=$(cd "$tmp" && systemd-analyze verify --man=no "$tmp/units/broken.service" 2>&1)
if [ -z "$out" ]; then bad "systemd-analyze verify did not report an unknown key"; else ok "a broken unit is reported"; fi
rm -f "$tmp/units/broken.service"

if systemd-sysusers --root="$tmp/root" "$DEPLOY_SRC/systemd/rocketmq.sysusers" >/dev/null 2>&1; then
  entry=$(grep '^rocketmq:' "$tmp/root/etc/passwd" || true)
  case "$entry" in
    rocketmq:x:*:*:*:/var/lib/rocketmq:*nologin) ok "sysusers: $entry" ;;
    *) bad "sysusers: unexpected passwd entry '$entry'" ;;
  esac
  grep -q '^rocketmq:' "$tmp/root/etc/group" || bad "sysusers: no rocketmq group"
  uid=$(echo "$entry" | cut -d: -f3)
  if systemd-tmpfiles --root="$tmp/root" --create "$DEPLOY_SRC/systemd/rocketmq.tmpfiles" >/dev/null 2>&1; then
    got=$(stat -c '%a %u' "$tmp/root/var/lib/rocketmq" 2>/dev/null)
    if [ "$got" = "750 $uid" ]; then ok "tmpfiles: /var/lib/rocketmq 0750 owned by rocketmq"; else bad "tmpfiles: /var/lib/rocketmq is '$got', want '750 $uid'"; fi
  else
    bad "systemd-tmpfiles --create failed"
  fi
else
  bad "systemd-sysusers failed on rocketmq.sysusers"
fi

if [ -n "${DEPLOY_UNIT_DIR:-}" ]; then
  for u in "$DEPLOY_UNIT_DIR"/rocketmq-*.service; do
    if grep -q '@[A-Z_]*@' "$u"; then bad "$(basename "$u") (as installed): placeholder left"; fi
    exe=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$u")
    case "$exe" in /*/bin/*) ok "$(basename "$u") as installed runs $exe" ;; *) bad "$(basename "$u"): ExecStart '$exe'" ;; esac
  done
fi

if [ $fail -ne 0 ]; then exit 1; fi
if [ "${#skipped[@]}" -gt 0 ]; then
  for s in "${skipped[@]}"; do echo "SKIP: not verified: $s"; done
  exit 77
fi
exit 0
