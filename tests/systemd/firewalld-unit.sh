#!/usr/bin/env bash
# firewalld's state under real systemd: the shipped unit in a container whose PID 1 is systemd and
# which has firewalld installed (enabled and running, as the package leaves it). Proves: `disabled`
# stops and disables it; `systemctl enable --now firewalld` and a plain `systemctl enable` behind the
# agent's back are undone and reported (drift count, journal); `mask = true` masks it; `enabled`
# brings it up and applies the declared zone to runtime and permanent configuration; during an
# upgrade the pre-upgrade phase leaves it disabled before its hooks run and the agent keeps it so
# until the upgrade ends, when the declared `enabled` state comes back; on an OpenShift node
# `enabled` without allow_on_openshift is refused and reported. Needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${RNA_BIN:-target/debug/rhel-node-agent}
. tests/systemd/lib.sh
make_workdir fwunit

U="$W/upper"
stage_agent "$U" "$BIN"
mkdir -p "$U/etc/containers" "$U/etc/rhel-node-agent/config.d" "$U/etc/rhel-node-agent/hooks.d/pre-upgrade.d"
: > "$U/etc/containers/registries.conf"
cat > "$U/etc/rhel-node-agent/config.d/50-test.toml" <<'EOF'
[mirrors]
reload_units = []
[firewalld]
state = "disabled"
EOF
cat > "$U/etc/rhel-node-agent/hooks.d/pre-upgrade.d/10-see-firewalld" <<'EOF'
#!/bin/sh
echo "firewalld during the pre-upgrade hooks: $(systemctl is-active firewalld.service)/$(systemctl is-enabled firewalld.service)" | tee /var/log/fw-during-hook
EOF
chmod 0755 "$U/etc/rhel-node-agent/hooks.d/pre-upgrade.d/10-see-firewalld"
boot_container "$W" rna-fwunit-test || exit 1

fw() { echo "$(IN systemctl is-enabled firewalld.service 2>/dev/null)/$(IN systemctl is-active firewalld.service 2>/dev/null)"; }
fw_is() { [ "$(fw)" = "$1" ]; }
is_active() { [ "$(IN systemctl is-active rhel-node-agent.service)" = active ]; }
st() { IN rhel-node-agent status -o json; }
drifts() { st | python3 -c 'import json,sys; print(json.load(sys.stdin)["firewalld_detail"]["drifts"])'; }
more_drift_than() { [ "$(drifts)" -gt "$1" ]; }
set_conf() { IN sh -c "cat > /etc/rhel-node-agent/config.d/50-test.toml"; IN systemctl reload rhel-node-agent.service; }
wait30() { local what=$1; shift; for _ in $(seq 1 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "  timed out (30 s): $what"; return 1; }

wait_for "agent active" is_active || { fail "agent not active"; IN journalctl -u rhel-node-agent --no-pager | tail -20; exit 1; }
wait30 "firewalld disabled" fw_is disabled/inactive && pass "state = disabled: firewalld stopped and disabled ($(fw))" || fail "firewalld is $(fw)"

d0=$(drifts)
t0=$(date +%s%N)
IN systemctl enable --now firewalld.service >/dev/null 2>&1
if wait30 "enable --now undone" fw_is disabled/inactive; then
  pass "systemctl enable --now behind the agent's back is undone ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
else fail "after enable --now: $(fw)"; fi
wait_for "drift counted" more_drift_than "$d0" && pass "the drift is counted ($(drifts))" || fail "drifts: $(drifts)"
logged() { IN journalctl -u rhel-node-agent --no-pager | grep "firewalld drift restored" >/dev/null; }
wait_for "drift logged" logged && pass "the drift is in the journal with before/after" || fail "no drift line in the journal"

d1=$(drifts)
t0=$(date +%s%N)
IN systemctl enable firewalld.service >/dev/null 2>&1
if wait30 "plain enable undone" fw_is disabled/inactive && [ "$(drifts)" -gt "$d1" ]; then
  pass "a plain systemctl enable (no unit property changes) is undone ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
else fail "after enable: $(fw), drifts $(drifts)"; fi

printf '[mirrors]\nreload_units = []\n[firewalld]\nstate = "disabled"\nmask = true\n' | set_conf
wait30 "masked" fw_is masked/inactive && pass "mask = true masks it" || fail "mask: $(fw)"

cat <<'EOF' | set_conf
[mirrors]
reload_units = []
[firewalld]
state = "enabled"
[[firewalld.zone]]
name = "public"
ports = ["10250/tcp"]
EOF
wait30 "enabled" fw_is enabled/active && pass "state = enabled: unmasked, enabled and started" || fail "enabled: $(fw)"
port_in_both() {
  IN firewall-cmd --zone=public --list-ports | grep 10250/tcp >/dev/null \
    && IN firewall-cmd --permanent --zone=public --list-ports | grep 10250/tcp >/dev/null
}
wait30 "zone applied" port_in_both && pass "the declared port is in runtime and permanent configuration" || fail "ports: $(IN firewall-cmd --zone=public --list-ports 2>&1) / $(IN firewall-cmd --permanent --zone=public --list-ports 2>&1)"

# --- an upgrade: pre-upgrade disables it before its hooks; it stays disabled until the end -----------
out=$(IN rhel-node-agent phase run pre-cordon 2>&1) || fail "pre-cordon: $out"
out=$(IN rhel-node-agent phase run pre-upgrade 2>&1); rc=$?
[ $rc = 0 ] || fail "pre-upgrade exit $rc: $out"
case "$(IN cat /var/log/fw-during-hook 2>&1)" in *"inactive/disabled"*) pass "pre-upgrade: firewalld disabled before the hooks ran";; *) fail "during the hook: $(IN cat /var/log/fw-during-hook 2>&1); $out";; esac
sleep 3
fw_is disabled/inactive && pass "the agent keeps it disabled during the upgrade (no fight with the steady state)" || fail "during the upgrade: $(fw)"
IN rhel-node-agent phase run pre-uncordon >/dev/null 2>&1 || fail "pre-uncordon"
fw_is disabled/inactive && pass "still disabled at pre-uncordon" || fail "at pre-uncordon: $(fw)"
IN rhel-node-agent phase run post-upgrade >/dev/null 2>&1 || fail "post-upgrade"
wait30 "steady state back" fw_is enabled/active && pass "after post-upgrade the declared state (enabled) applies again" || fail "after the upgrade: $(fw)"

# --- OpenShift: enabled needs allow_on_openshift ---------------------------------------------------------
IN sh -c 'mkdir -p /etc/machine-config-daemon && echo "{}" > /etc/machine-config-daemon/currentconfig'
IN systemctl reload rhel-node-agent.service
refused() { st | grep '"refused (see status)"' >/dev/null; }
wait_for "refused" refused && pass "enabled on an OpenShift node without allow_on_openshift is refused and reported" || fail "status: $(st | head -c 400)"
caveat() { IN journalctl -u rhel-node-agent --no-pager | grep "loses access to that worker's logs" >/dev/null; }
wait_for "caveat" caveat && pass "the documented consequence is logged" || fail "no caveat in the journal"

echo "firewalld-unit: $PASS/$((PASS+FAIL)) checks passed"
[ "$FAIL" = 0 ]
