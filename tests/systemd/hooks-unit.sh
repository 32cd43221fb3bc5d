#!/usr/bin/env bash
# Upgrade phases and hooks under real systemd: the shipped unit (sandbox included) in a container
# whose PID 1 is systemd. Proves: hooks run as transient units outside the daemon's sandbox (they
# may write where the daemon may not), in their own cgroup, and appear in the journal under their
# names (`journalctl -t <hook>` and `journalctl -u <its unit>`); when a hook ends, everything it
# started ends too — children, grandchildren, and a process that called setsid and double-forked;
# a hook that times out is stopped with its whole tree (no process carrying its environment mark is
# left, and its transient unit is unloaded); the firewalld step of pre-upgrade stops and
# disables the real firewalld.service through systemd's D-Bus API before the hooks run; kill -9 of
# the daemon mid-hook: systemd restarts it, the new daemon stops the orphaned hook unit and shows
# the phase as interrupted, and the phase can be run again. Needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${RNA_BIN:-target/debug/rhel-node-agent}
. tests/systemd/lib.sh
make_workdir hooks

U="$W/upper"
stage_agent "$U" "$BIN"
install -D -m 0644 /dev/stdin "$U/etc/systemd/system/rhel-node-agent.service.d/50-test.conf" <<'EOF'
[Service]
RestartSec=1s
EOF
mkdir -p "$U/etc/containers" "$U/etc/rhel-node-agent/config.d"
: > "$U/etc/containers/registries.conf"
cat > "$U/etc/rhel-node-agent/config.d/50-test.toml" <<'EOF'
[mirrors]
reload_units = []
[hooks.timeouts]
"pre-upgrade/20-hangs" = "2s"
EOF
H="$U/etc/rhel-node-agent/hooks.d"
mkdir -p "$H/pre-cordon.d" "$H/pre-upgrade.d" "$H/pre-uncordon.d"
# A hook that leaves a child, a grandchild and a setsid'd double-forked process behind, records
# their pids and its own cgroup, writes where the daemon's sandbox could not, and exits 0.
cat > "$H/pre-cordon.d/10-tree" <<'EOF'
#!/bin/sh
echo "hello from $RNA_HOOK in $RNA_PHASE"
cat /proc/self/cgroup > /var/log/hook-cgroup
sh -c 'sleep 1000 & echo $! >> /var/log/hook-pids; sleep 1000' &
echo $! >> /var/log/hook-pids
setsid sh -c 'sh -c "echo \$\$ >> /var/log/hook-pids; exec sleep 1000" &' </dev/null >/dev/null 2>&1
echo marker > /etc/hook-was-here
sleep 0.5
echo "bye from $RNA_HOOK"
EOF
# It re-executes itself with a mark in its environment: every process of its tree carries it.
cat > "$H/pre-upgrade.d/20-hangs" <<'EOF'
#!/bin/sh
[ "$RNA_TEST_MARK" = rna-hooks-unit-hang ] || exec env RNA_TEST_MARK=rna-hooks-unit-hang "$0"
cat /proc/self/cgroup > /var/log/hang-cgroup
sh -c 'sleep 1000 & echo $! >> /var/log/hang-pids; sleep 1000' &
echo $! >> /var/log/hang-pids
echo $$ >> /var/log/hang-pids
sleep 1000
EOF
cat > "$H/pre-uncordon.d/10-slow" <<'EOF'
#!/bin/sh
echo $$ >> /var/log/slow-pids
sh -c 'sleep 1000 & echo $! >> /var/log/slow-pids; sleep 1000' &
echo $! >> /var/log/slow-pids
touch /var/log/slow-started
sleep 1000
EOF
chmod 0755 "$H"/*/*
# marked VALUE: the pids of the live processes whose environment holds RNA_TEST_MARK=VALUE.
install -D -m 0755 /dev/stdin "$U/usr/local/sbin/rna-marked" <<'EOF'
#!/bin/sh
for e in /proc/[0-9]*/environ; do
  tr '\0' '\n' < "$e" 2>/dev/null | grep -qx "RNA_TEST_MARK=$1" || continue
  p=${e#/proc/}; echo "${p%/environ}"
done
EOF
boot_container "$W" rna-hooks-test || exit 1

is_active() { [ "$(IN systemctl is-active rhel-node-agent.service)" = active ]; }
wait_for "agent active" is_active || { fail "agent not active"; IN journalctl -u rhel-node-agent --no-pager | tail -20; exit 1; }
marked() { IN /usr/local/sbin/rna-marked "$1"; }
none_marked() { [ -z "$(marked "$1")" ]; }
pids_dead() {  # pids_dead FILE: every pid listed in FILE (inside the container) is gone
  local p
  for p in $(IN cat "$1"); do IN kill -0 "$p" 2>/dev/null && return 1; done
  return 0
}
ustatus() { IN rhel-node-agent upgrade status -o json; }
jq_py() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# --- pre-cordon: a transient unit, its own journal stream, nothing left behind --------------------
out=$(IN rhel-node-agent phase run pre-cordon --target-version 4.14.3 2>&1); rc=$?
[ $rc = 0 ] && pass "pre-cordon succeeded under systemd" || { fail "pre-cordon exit $rc: $out"; IN journalctl -u rhel-node-agent --no-pager | tail -20; }
case "$out" in *"10-tree | hello from 10-tree in pre-cordon"*) pass "hook output streamed to the client";; *) fail "no hook output: $out";; esac
unit=$(IN sh -c 'grep -o "rna-hook-pre-cordon-10-tree-[^/]*\.service" /var/log/hook-cgroup | head -n1')
[ -n "$unit" ] && pass "hook ran in its own transient unit ($unit)" || fail "hook cgroup: $(IN cat /var/log/hook-cgroup)"
IN test -e /etc/hook-was-here && pass "hook ran outside the daemon's sandbox (wrote /etc, which ProtectSystem=strict forbids the daemon)" || fail "hook could not write /etc"
n=$(IN sh -c 'wc -l < /var/log/hook-pids' | tr -d ' ')
if [ "$n" = 3 ] && wait_for "the hook's leftovers to end" pids_dead /var/log/hook-pids; then
  pass "child, grandchild and a setsid double-forked process all ended with the hook"
else fail "leftovers ($n pids): $(for p in $(IN cat /var/log/hook-pids); do IN ps -o pid=,args= -p "$p"; done)"; fi
tagged() { IN journalctl -t 10-tree --no-pager | grep "bye from 10-tree" >/dev/null; }
wait_for "journal -t" tagged && pass "hook output in the journal under its name (journalctl -t 10-tree)" || fail "journalctl -t 10-tree: $(IN journalctl -t 10-tree --no-pager | tail -3)"
by_unit() { IN journalctl -u "$unit" --no-pager | grep "hello from 10-tree" >/dev/null; }
[ -n "$unit" ] && wait_for "journal -u" by_unit && pass "and under its unit (journalctl -u $unit)" || fail "journalctl -u $unit: $(IN journalctl -u "$unit" --no-pager | tail -3)"
left=$(IN systemctl list-units --all --no-legend 'rna-hook-*' | wc -l)
[ "$left" = 0 ] && pass "no hook unit is left loaded" || fail "hook units left: $(IN systemctl list-units --all --no-legend 'rna-hook-*')"

# --- pre-upgrade: firewalld step first, then a hook that hangs and is stopped at its timeout ------
# The mark scan finds a marked process (so an empty scan below means something).
IN sh -c 'RNA_TEST_MARK=rna-hooks-unit-probe setsid sleep 300 </dev/null >/dev/null 2>&1 &'
probe_seen() { [ -n "$(marked rna-hooks-unit-probe)" ]; }
if wait_for "the probe" probe_seen; then
  pass "the environment-mark scan sees a marked process"
  IN kill $(marked rna-hooks-unit-probe)
else fail "the mark scan did not find the probe"; fi
fw_before="$(IN systemctl is-enabled firewalld.service 2>&1)/$(IN systemctl is-active firewalld.service 2>&1)"
out=$(IN rhel-node-agent phase run pre-upgrade 2>&1); rc=$?
[ $rc = 1 ] && pass "a hook that times out fails pre-upgrade (exit 1)" || fail "pre-upgrade exit $rc: $out"
case "$out" in *"timed out after 2 s"*) pass "the failure names the timeout";; *) fail "no timeout message: $out";; esac
if wait_for "the hung hook's tree to end" pids_dead /var/log/hang-pids && [ "$(IN sh -c 'wc -l < /var/log/hang-pids' | tr -d ' ')" = 3 ]; then
  pass "the timed-out hook and its whole tree are gone"
else fail "hang leftovers: $(IN cat /var/log/hang-pids)"; fi
if wait_for "no marked process" none_marked rna-hooks-unit-hang; then
  pass "zero processes of the timed-out hook are left (environment-mark scan)"
else fail "marked leftovers: $(for p in $(marked rna-hooks-unit-hang); do IN ps -o pid=,args= -p "$p"; done)"; fi
hang_unit=$(IN sh -c 'grep -o "rna-hook-pre-upgrade-20-hangs-[^/]*\.service" /var/log/hang-cgroup | head -n1')
if [ -n "$hang_unit" ]; then
  load=$(IN systemctl show -p LoadState --value "$hang_unit")
  left=$(IN systemctl list-units --all --no-legend 'rna-hook-pre-upgrade-*' | wc -l)
  [ "$load" = not-found ] && [ "$left" = 0 ] && pass "the timed-out hook's unit $hang_unit is gone (LoadState=$load)" \
    || fail "timed-out hook unit still there: LoadState=$load; $(IN systemctl list-units --all --no-legend 'rna-hook-*')"
else fail "the hanging hook did not record its unit: $(IN cat /var/log/hang-cgroup)"; fi
fw_after="$(IN systemctl is-enabled firewalld.service 2>&1)/$(IN systemctl is-active firewalld.service 2>&1)"
case "$out" in *"builtin firewalld-upgrade-state: done"*)
  [ "$fw_after" = "disabled/inactive" ] && pass "firewalld step ran first: $fw_before -> $fw_after" || fail "firewalld is $fw_after after the step";;
  *) fail "firewalld step not done: $out";; esac
IN rm /etc/rhel-node-agent/hooks.d/pre-upgrade.d/20-hangs
out=$(IN rhel-node-agent phase run pre-upgrade 2>&1); rc=$?
[ $rc = 0 ] && pass "pre-upgrade retried and succeeded" || fail "pre-upgrade retry exit $rc: $out"
case "$out" in *"firewalld.service already disabled/inactive"*) pass "firewalld step is idempotent";; *) fail "second firewalld step: $out";; esac

# --- kill -9 of the daemon mid-hook ------------------------------------------------------------------
IN sh -c 'rhel-node-agent phase run pre-uncordon >/var/log/client.out 2>&1 &'
started() { IN test -e /var/log/slow-started; }
wait_for "the slow hook to start" started || fail "slow hook did not start"
pid0=$(IN systemctl show -p MainPID --value rhel-node-agent.service)
IN kill -9 "$pid0"
restarted() { p=$(IN systemctl show -p MainPID --value rhel-node-agent.service); [ "$p" != 0 ] && [ "$p" != "$pid0" ] && is_active; }
wait_for "systemd to restart the daemon" restarted && pass "the daemon was restarted after kill -9" || fail "not restarted: $(IN systemctl status rhel-node-agent --no-pager | head -5)"
wait_for "the orphaned hook unit to be stopped" pids_dead /var/log/slow-pids \
  && pass "the new daemon stopped the orphaned hook unit and its tree" || fail "slow hook leftovers: $(IN cat /var/log/slow-pids)"
state=$(ustatus | jq_py "[p['state'] for p in d['open']['phases'] if p['phase']=='pre-uncordon'][0]")
[ "$state" = interrupted ] && pass "the phase is shown as interrupted" || fail "pre-uncordon state: $state"
IN rm /etc/rhel-node-agent/hooks.d/pre-uncordon.d/10-slow
out=$(IN rhel-node-agent phase run pre-uncordon 2>&1); rc=$?
[ $rc = 0 ] && pass "the interrupted phase ran again (attempt 2)" || fail "re-run exit $rc: $out"

echo "hooks-unit: $PASS/$((PASS+FAIL)) checks passed"
[ "$FAIL" = 0 ]
