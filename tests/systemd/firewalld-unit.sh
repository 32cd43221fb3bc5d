#!/usr/bin/env bash
# firewalld's state under real systemd: the shipped unit in a container whose PID 1 is systemd and
# which has firewalld installed (enabled and running, as the package leaves it). Proves: `disabled`
# stops and disables it; `systemctl enable --now firewalld` and a plain `systemctl enable` behind the
# agent's back are undone and reported (drift count, journal); `mask = true` masks it; an `enabled`
# declaration firewalld rejects (an ipset source it does not have) starts firewalld only to
# validate it, puts the unit back masked and stopped, names the key, and is not retried in a loop;
# `enabled` brings it up and applies the declared default zone, ports, services, sources and
# interfaces to runtime and permanent configuration; during an upgrade the pre-upgrade phase leaves
# it disabled before its hooks run and the agent keeps it so until the upgrade ends, when the
# declared `enabled` state comes back; on an OpenShift node `enabled` without allow_on_openshift is
# refused (firewalld left alone) and reported, and with allow_on_openshift = true it is enabled and
# the documented consequence logged. Needs root.
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

# --- a declaration firewalld rejects, from masked: validated once it runs, then put back -------------
cat <<'EOF' | set_conf
[mirrors]
reload_units = []
[firewalld]
state = "enabled"
[[firewalld.zone]]
name = "public"
ports = ["10250/tcp"]
sources = ["ipset:nosuch"]
EOF
rejected() { st | grep 'firewalld.zone\[0\].sources\[0\]: firewalld: INVALID_IPSET' >/dev/null; }
put_back() { [ "$(IN journalctl -u rhel-node-agent --no-pager | grep -c 'firewalld.service put back as it was')" -ge 1 ]; }
if wait30 "rejected" rejected && wait30 "put back" put_back && wait30 "masked again" fw_is masked/inactive; then
  pass "a rejected declaration: error names firewalld.zone[0].sources[0], firewalld put back masked and stopped"
else fail "rejected declaration: $(fw); $(st | head -c 500)"; fi
# Not retried in a loop: its own stop and mask echo back as signals, which must not start it again.
# (One configuration change may notify twice, file watch and reload: at most one attempt each.)
put_backs() { IN journalctl -u rhel-node-agent --no-pager | grep -c 'firewalld.service put back as it was'; }
sleep 3; n1=$(put_backs); sleep 8; n2=$(put_backs)
[ "$n1" = "$n2" ] && [ "$n2" -le 2 ] && fw_is masked/inactive && pass "and not retried in a loop ($n2 attempt(s) for the change, none in the 8 s after; masked since)" || fail "put back $n1 then $n2 times; $(fw)"
IN test -e /etc/firewalld/zones/public.xml && IN grep -q 10250 /etc/firewalld/zones/public.xml \
  && fail "the permanent configuration got 10250/tcp from a rejected declaration" || pass "nothing of the rejected declaration in the permanent configuration"

cat <<'EOF' | set_conf
[mirrors]
reload_units = []
[firewalld]
state = "enabled"
default_zone = "internal"
[[firewalld.zone]]
name = "public"
ports = ["10250/tcp"]
services = ["http"]
sources = ["10.99.0.0/16"]
interfaces = ["rnatest0"]
EOF
wait30 "enabled" fw_is enabled/active && pass "state = enabled: unmasked, enabled and started" || fail "enabled: $(fw)"
# Every declared kind, in both layers (firewall-cmd only reads, to check the agent's D-Bus work).
in_both() {  # in_both WHAT VALUE
  IN firewall-cmd --zone=public --list-"$1" | tr ' ' '\n' | grep -qx "$2" \
    && IN firewall-cmd --permanent --zone=public --list-"$1" | tr ' ' '\n' | grep -qx "$2"
}
wait30 "zone applied" in_both ports 10250/tcp && pass "the declared port is in runtime and permanent configuration" || fail "ports: $(IN firewall-cmd --zone=public --list-ports 2>&1) / $(IN firewall-cmd --permanent --zone=public --list-ports 2>&1)"
in_both services http && pass "the declared service is in runtime and permanent configuration" || fail "services: $(IN firewall-cmd --zone=public --list-services 2>&1) / $(IN firewall-cmd --permanent --zone=public --list-services 2>&1)"
in_both sources 10.99.0.0/16 && pass "the declared source is in runtime and permanent configuration" || fail "sources: $(IN firewall-cmd --zone=public --list-sources 2>&1) / $(IN firewall-cmd --permanent --zone=public --list-sources 2>&1)"
in_both interfaces rnatest0 && pass "the declared interface is in runtime and permanent configuration" || fail "interfaces: $(IN firewall-cmd --zone=public --list-interfaces 2>&1) / $(IN firewall-cmd --permanent --zone=public --list-interfaces 2>&1)"
[ "$(IN firewall-cmd --get-default-zone 2>&1)" = internal ] && IN grep -qx 'DefaultZone=internal' /etc/firewalld/firewalld.conf \
  && pass "the default zone is internal (runtime and firewalld.conf)" || fail "default zone: $(IN firewall-cmd --get-default-zone 2>&1); $(IN grep DefaultZone /etc/firewalld/firewalld.conf)"

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
caveat() { IN journalctl -u rhel-node-agent --no-pager | grep "allow_on_openshift = true (the OpenShift documentation warns that with firewalld enabled on a RHEL worker, OpenShift loses access to that worker's logs)" >/dev/null; }
wait_for "caveat" caveat && pass "the refusal is logged with the documented consequence" || fail "no caveat in the journal"
# Refused means hands off: a person stopping it is not undone.
IN systemctl disable --now firewalld.service >/dev/null 2>&1
sleep 3
fw_is disabled/inactive && pass "refused: firewalld left alone (a manual disable --now stands)" || fail "refused, but firewalld is $(fw)"
# --- allow_on_openshift = true: enabled on the OpenShift node, the consequence logged as a warning -------
cat <<'EOF' | set_conf
[mirrors]
reload_units = []
[firewalld]
state = "enabled"
allow_on_openshift = true
[[firewalld.zone]]
name = "public"
ports = ["10250/tcp"]
EOF
wait30 "enabled on OpenShift" fw_is enabled/active && in_both ports 10250/tcp \
  && pass "allow_on_openshift = true: firewalld enabled, started and the zone applied on the OpenShift node" || fail "allowed: $(fw)"
warned() { IN journalctl -u rhel-node-agent --no-pager | grep "keeping firewalld enabled on an OpenShift node (firewalld.allow_on_openshift = true): the OpenShift documentation warns" >/dev/null; }
wait_for "warning" warned && pass "the documented consequence is logged as a warning" || fail "no allow_on_openshift warning in the journal"
st | python3 -c 'import json,sys; d=json.load(sys.stdin)["firewalld_detail"]; assert d["desired"]["state"] == "enabled" and not d["last_error"], d' \
  && pass "status: desired enabled, no error" || fail "status: $(st | head -c 400)"

echo "firewalld-unit: $PASS/$((PASS+FAIL)) checks passed"
[ "$FAIL" = 0 ]
