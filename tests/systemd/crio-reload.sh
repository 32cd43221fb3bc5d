#!/usr/bin/env bash
# The daemon reloads CRI-O through real systemd's D-Bus API: systemd is PID 1 in a systemd-nspawn
# container (its own network namespace, an overlay over the cached rootfs), with a stand-in
# crio.service that records every reload; the daemon runs on the host under --root and talks to the
# container's system bus (--system-bus). Proves: a policy change reloads crio exactly once; an
# unchanged state reloads nothing; an inactive unit is not reloaded; a reload that leaves crio
# inactive rolls registries.conf back, reloads again and is reported. Needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${RNA_BIN:-target/debug/rhel-node-agent}
ROOTFS=$(tests/systemd/build-rootfs.sh) || { echo "cannot build the rootfs"; exit 1; }
W=$(mktemp -d /var/tmp/rna-systemd.XXXXXX)
PASS=0; FAIL=0; t0=$(date +%s)
pass() { PASS=$((PASS+1)); echo "[PASS] $1"; }
fail() { FAIL=$((FAIL+1)); echo "[FAIL] $1"; }
NSPAWN=""; DAEMON=""
cleanup() {
  [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
  if [ -n "$NSPAWN" ]; then kill -TERM "$NSPAWN" 2>/dev/null; wait "$NSPAWN" 2>/dev/null; fi
  [ "${KEEP:-0}" = 1 ] && { echo "kept $W"; return; }
  rm -rf "$W"
}
trap cleanup EXIT

# --- the container: a stand-in crio.service that records reloads and, when /etc/crio-fail-reload
#     exists, dies during the reload (as a CRI-O that rejects its configuration would).
mkdir -p "$W/dbus" "$W/upper/etc/systemd/system/multi-user.target.wants" "$W/work" "$W/merged"
cat > "$W/upper/etc/systemd/system/crio.service" <<'UNIT'
[Unit]
Description=stand-in for CRI-O that records reloads
[Service]
Type=simple
ExecStart=/bin/sleep infinity
ExecReload=/bin/sh -c 'echo reload >> /var/log/crio-reloads; if [ -e /etc/crio-fail-reload ]; then kill -9 $MAINPID; fi'
Restart=no
[Install]
WantedBy=multi-user.target
UNIT
ln -s ../crio.service "$W/upper/etc/systemd/system/multi-user.target.wants/crio.service"
unshare --mount --propagation private sh -c '
  mount -t overlay overlay -o "lowerdir=$0,upperdir=$1/upper,workdir=$1/work" "$1/merged"
  exec systemd-nspawn --boot --directory="$1/merged" --machine=rna-crio-test --register=no --keep-unit \
      --private-network --bind="$1/dbus:/run/dbus" --console=read-only
' "$ROOTFS" "$W" > "$W/console.log" 2>&1 &
NSPAWN=$!
BUS="unix:path=$W/dbus/system_bus_socket"
MGR="org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager"
for _ in $(seq 1 600); do
  st=$(busctl --address="$BUS" get-property $MGR SystemState 2>/dev/null || true)
  case "$st" in *running*|*degraded*) break;; esac
  kill -0 "$NSPAWN" 2>/dev/null || { echo "nspawn died:"; cat "$W/console.log"; exit 1; }
  sleep 0.1
done
LEADER=$(ps -o pid= --ppid "$NSPAWN" | tr -d ' ' | head -n1)
IN() { nsenter --target "$LEADER" --all env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
echo "# container up ($st) in $(( $(date +%s) - t0 ))s"
reloads() { IN sh -c 'test -f /var/log/crio-reloads && wc -l < /var/log/crio-reloads || echo 0' | tr -d ' '; }
crio_state() { IN systemctl is-active crio.service 2>/dev/null; }
[ "$(crio_state)" = active ] && pass "stand-in crio.service active" || fail "crio.service not active: $(crio_state)"

# --- the agent on the host, under --root, on the container's bus.
R="$W/agent-root"
mkdir -p "$R/etc/containers/registries.conf.d" "$R/etc/rhel-node-agent/mirrors.d" "$R/etc/rhel-node-agent/config.d"
printf '# admin file\nunqualified-search-registries = ["registry.access.redhat.com"]\n' > "$R/etc/containers/registries.conf"
cp "$R/etc/containers/registries.conf" "$W/base.conf"
printf '[mirrors]\nreload_units = ["crio.service"]\non_drain_required = "apply"\n' > "$R/etc/rhel-node-agent/config.d/50-test.toml"
policy() {  # policy MIRROR: one IDMS for quay.io/ns, written atomically
  printf 'apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: d}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [%s]\n' "$1" > "$R/etc/rhel-node-agent/mirrors.d/.p.tmp"
  mv "$R/etc/rhel-node-agent/mirrors.d/.p.tmp" "$R/etc/rhel-node-agent/mirrors.d/10-idms.yaml"
}
wait_for() {  # wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" && return 0; sleep 0.05; done
  echo "  timed out: $what"; return 1
}
"$BIN" --root "$R" --system-bus "$BUS" daemon --debounce 50ms > "$W/daemon.log" 2>&1 &
DAEMON=$!
wait_for "daemon socket" test -S "$R/run/rhel-node-agent/control.sock" || { cat "$W/daemon.log"; exit 1; }
status() { "$BIN" --root "$R" status -o json; }
sleep 0.3
[ "$(reloads)" = 0 ] && pass "no change at start: no reload" || fail "reloads at start: $(reloads)"

policy mirror-a.local/ns
if wait_for "mirror a applied" grep -q mirror-a.local "$R/etc/containers/registries.conf" && wait_for "one reload" test "$(reloads)" = 1; then
  sleep 0.5
  [ "$(reloads)" = 1 ] && pass "policy change applied and crio reloaded exactly once" || fail "reloads after one change: $(reloads)"
else fail "policy change not applied/reloaded (reloads=$(reloads))"; fi
[ "$(crio_state)" = active ] && pass "crio still active after the reload" || fail "crio state $(crio_state)"

"$BIN" --root "$R" reconcile >/dev/null; sleep 0.3
[ "$(reloads)" = 1 ] && pass "unchanged reconcile reloads nothing" || fail "reloads after no-op reconcile: $(reloads)"

IN systemctl stop crio.service
policy mirror-b.local/ns
wait_for "mirror b applied" grep -q mirror-b.local "$R/etc/containers/registries.conf" && sleep 0.3
[ "$(reloads)" = 1 ] && pass "inactive crio is not reloaded" || fail "reloads with crio stopped: $(reloads)"

IN systemctl start crio.service
IN touch /etc/crio-fail-reload
cp "$R/etc/containers/registries.conf" "$W/before-bad.conf"
policy mirror-c.local/ns
if wait_for "rollback reported" sh -c "'$BIN' --root '$R' status -o json | grep -q 'not active after reloading'"; then
  pass "a reload that leaves crio inactive is reported"
else fail "no rollback report: $(status)"; fi
cmp -s "$R/etc/containers/registries.conf" "$W/before-bad.conf" && pass "registries.conf rolled back to the previous version" \
  || { fail "registries.conf not rolled back"; diff "$W/before-bad.conf" "$R/etc/containers/registries.conf"; }
n=$(reloads)
"$BIN" --root "$R" reconcile >/dev/null 2>&1; sleep 0.3
[ "$(reloads)" = "$n" ] && grep -q mirror-b.local "$R/etc/containers/registries.conf" && pass "the rolled-back policies are not applied again" \
  || fail "rolled-back policies retried (reloads $n -> $(reloads))"
kill -0 "$DAEMON" && pass "daemon still running" || fail "daemon died"

echo "# elapsed $(( $(date +%s) - t0 ))s"
[ $FAIL -eq 0 ] || { echo "--- daemon log"; tail -30 "$W/daemon.log"; }
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
