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
. tests/systemd/lib.sh
make_workdir systemd
t0=$(date +%s)
DAEMON=""
before_cleanup() { [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null; }
stage_crio "$W/upper"
boot_container "$W" rna-crio-test || exit 1
crio_state() { IN systemctl is-active crio.service 2>/dev/null; }
[ "$(crio_state)" = active ] && pass "stand-in crio.service active" || fail "crio.service not active: $(crio_state)"

# --- the agent on the host, under --root, on the container's bus.
R="$W/agent-root"
mkdir -p "$R/etc/containers/registries.conf.d" "$R/etc/rhel-node-agent/mirrors.d" "$R/etc/rhel-node-agent/config.d"
printf '# admin file\nunqualified-search-registries = ["registry.access.redhat.com"]\n' > "$R/etc/containers/registries.conf"
cp "$R/etc/containers/registries.conf" "$W/base.conf"
printf '[mirrors]\nreload_units = ["crio.service"]\non_drain_required = "apply"\n' > "$R/etc/rhel-node-agent/config.d/50-test.toml"
policy() {  # policy MIRROR: one IDMS for quay.io/ns, written atomically
  idms_yaml "$1" > "$R/etc/rhel-node-agent/mirrors.d/.p.tmp"
  mv "$R/etc/rhel-node-agent/mirrors.d/.p.tmp" "$R/etc/rhel-node-agent/mirrors.d/10-idms.yaml"
}
"$BIN" --root "$R" --system-bus "$BUS" daemon --debounce 50ms > "$W/daemon.log" 2>&1 &
DAEMON=$!
wait_for "daemon socket" test -S "$R/run/rhel-node-agent/control.sock" || { cat "$W/daemon.log"; exit 1; }
status() { "$BIN" --root "$R" status -o json; }
sleep 0.3
[ "$(reloads)" = 0 ] && pass "no change at start: no reload" || fail "reloads at start: $(reloads)"

policy mirror-a.local/ns
if wait_for "mirror a applied" grep -q mirror-a.local "$R/etc/containers/registries.conf" && wait_for "one reload" reloads_are 1; then
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

# A change waiting at start-up: written, READY=1 sent, and then crio reloaded once.
IN rm -f /etc/crio-fail-reload
IN systemctl reset-failed crio.service; IN systemctl start crio.service
kill "$DAEMON"; wait "$DAEMON" 2>/dev/null
policy mirror-d.local/ns
n=$(reloads)
"$BIN" --root "$R" --system-bus "$BUS" daemon --debounce 50ms >> "$W/daemon.log" 2>&1 &
DAEMON=$!
one_more() { [ "$(reloads)" = "$((n+1))" ]; }
if wait_for "start-up change applied" grep -q mirror-d.local "$R/etc/containers/registries.conf" && wait_for "start-up reload" one_more; then
  sleep 0.3
  [ "$(reloads)" = "$((n+1))" ] && pass "start-up change applied and crio reloaded once after READY=1" || fail "reloads at start-up: $n -> $(reloads)"
else fail "start-up change: reloads $n -> $(reloads)"; fi

echo "# elapsed $(( $(date +%s) - t0 ))s"
[ $FAIL -eq 0 ] || { echo "--- daemon log"; tail -30 "$W/daemon.log"; }
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
