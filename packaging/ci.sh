#!/usr/bin/env bash
# CI for the appliance: static binary, systemd unit, .deb (built, installed, verified,
# purged), and the binary started as systemd would start it. Prints the binary size, the
# start-up time to READY=1 and the idle RSS, then a closing "ops: N passed, 0 failed" line.
# Needs root for apt-get and dpkg (CI runs as root on a throwaway machine).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

passed=0
step() { printf '\n=== ops: %s\n' "$*"; }
ok() { passed=$((passed + 1)); echo "ok: $*"; }
fail() { echo "FAILED: $*" >&2; echo "ops: $passed passed, 1 failed"; exit 1; }

step "tools"
missing=()
command -v file >/dev/null 2>&1 || missing+=(file)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
ok "tools present: file, systemd-analyze, dpkg-deb, python3"

step "static binary"
bash packaging/build-static.sh || fail "build-static.sh"
bin="$PWD/packaging/build/switchboard"
ok "static binary built and checked (file, ldd, --version, serve until READY, SIGTERM -> 0)"

step "systemd unit"
# verify needs ExecStart's binary to exist: check a copy that points at the one just built.
unit_dir="$(mktemp -d)"
trap 'rm -rf "$unit_dir"' EXIT
sed "s|^ExecStart=/usr/bin/switchboard |ExecStart=$bin |" packaging/switchboard.service \
  > "$unit_dir/switchboard.service"
systemd-analyze verify "$unit_dir/switchboard.service" || fail "systemd-analyze verify (copy)"
ok "systemd-analyze verify packaging/switchboard.service"
security="$(systemd-analyze security --offline=true "$unit_dir/switchboard.service" 2>/dev/null | tail -1 || true)"
[ -n "$security" ] && echo "systemd-analyze security: $security"

step ".deb"
deb="$(bash packaging/build-deb.sh | tail -1)" || fail "build-deb.sh"
dpkg-deb --info "$deb" >/dev/null || fail "dpkg-deb --info"
dpkg-deb --contents "$deb"
ok "built $deb"
dpkg -i "$deb" || fail "dpkg -i"
for f in /usr/bin/switchboard /lib/systemd/system/switchboard.service /etc/switchboard/config.toml \
  /usr/share/doc/switchboard/README.md; do
  [ -f "$f" ] || fail "$f not installed"
done
grep -qx /etc/switchboard/config.toml /var/lib/dpkg/info/switchboard.conffiles ||
  fail "config.toml is not a conffile"
/usr/bin/switchboard --version >/dev/null || fail "installed binary does not run"
/usr/bin/switchboard check-config /etc/switchboard/config.toml || fail "installed config invalid"
systemd-analyze verify /lib/systemd/system/switchboard.service ||
  fail "systemd-analyze verify /lib/systemd/system/switchboard.service"
ok "dpkg -i: binary, unit, conffile and docs in place; unit verifies"
dpkg --purge switchboard >/dev/null || fail "dpkg --purge"
[ ! -e /usr/bin/switchboard ] || fail "purge left /usr/bin/switchboard"
ok "dpkg --purge removes it"

step "cargo deb (same package from the same metadata)"
if ! cargo deb --version >/dev/null 2>&1; then
  started=$(date +%s)
  cargo install cargo-deb --locked --quiet || fail "cargo install cargo-deb"
  echo "cargo install cargo-deb: $(($(date +%s) - started)) s"
fi
bash packaging/build-deb.sh --cargo-deb >/dev/null || fail "cargo deb"
listing() { dpkg-deb --contents "$1" | awk '$6 != "./" {print $1, $3, $6}' | sed 's|/$||' | sort; }
cargo_deb="$(ls packaging/build/cargo-deb/*.deb)"
diff <(listing "$deb") <(listing "$cargo_deb") || fail "cargo deb and build-deb.sh disagree"
[ "$(dpkg-deb --field "$deb" Package Version Architecture)" = \
  "$(dpkg-deb --field "$cargo_deb" Package Version Architecture)" ] || fail "control fields differ"
ok "cargo deb builds the same files, modes and sizes as build-deb.sh"

step "start-up and idle memory"
size=$(stat -c %s "$bin")
report="$(python3 packaging/servecheck.py "$bin" --runs 3 --idle 2)" || fail "servecheck"
echo "$report"
ready_ms=$(sed -n 's/^ready_ms=//p' <<<"$report")
rss=$(sed -n 's/^idle_rss_kib=//p' <<<"$report")
ok "READY=1, watchdog pings, SIGHUP reload, SIGTERM exit 0 (3 runs)"

echo
echo "binary size: $size bytes ($((size / 1024)) KiB)"
echo "start-up time to ready: ${ready_ms} ms (median of 3, empty data dir)"
echo "idle RSS: ${rss} KiB"
echo "ops: $passed passed, 0 failed"
