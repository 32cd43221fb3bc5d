#!/usr/bin/env bash
# The agent against real firewalld (Debian's, nftables backend) on a private system-like D-Bus, in
# a network namespace this test creates, with its permanent configuration in a temp dir
# (../shared/recipes/systemd-firewalld A). Proves: declared ports and services land in both the
# runtime and the permanent configuration and in that namespace's nft ruleset; traffic from a second
# namespace is refused before and accepted after the port is declared (the server proven up from
# inside its own namespace first); `firewall status --json` shows declared vs observed per zone;
# `apply --dry-run` changes neither layer; an idempotent re-apply makes zero mutating D-Bus calls; a
# bad declaration (unknown zone, service, default zone or ipset source) is an error naming the key
# and changes nothing (runtime, permanent, nft ruleset); a real firewalld failure part-way (the
# permanent configuration read-only) is undone and named by its key; firewalld's own
# NotAuthorizedException reaches a non-root caller; the daemon restores a declared port someone
# removed (logging the zone's settings before and after, counting rna_firewalld_drifts_total), and
# one lost by a permanent removal + reload; undeclared settings are reported and left alone,
# removed with prune; under --root without --system-bus the agent does not manage firewalld; the
# host's own ruleset is never touched. Needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=$(readlink -f "${RNA_BIN:-target/debug/rhel-node-agent}")
PASS=0; FAIL=0
pass() { PASS=$((PASS+1)); echo "[PASS] $1"; }
fail() { FAIL=$((FAIL+1)); echo "[FAIL] $1"; }
wait_for() {  # wait_for SECONDS COMMAND...
  local secs=$1; shift
  for _ in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
for c in firewalld dbus-daemon dbus-monitor nft ip python3 curl busctl; do
  command -v "$c" >/dev/null || { echo "missing $c (scripts/test installs it)"; exit 1; }
done

W=$(mktemp -d /var/tmp/rna-fw.XXXXXX)
NS=rnafw$$; NS2=rnacl$$
# The host's ruleset, hashed; `nft list ruleset` failing must fail the suite, not hash an error.
host_rules() { local out; out=$(nft list ruleset) || return 1; printf '%s' "$out" | sha256sum; }
HOST_RULES_BEFORE=$(host_rules) || { echo "nft list ruleset fails on the host: cannot prove the host firewall is untouched"; exit 1; }
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  ip netns del "$NS" 2>/dev/null; ip netns del "$NS2" 2>/dev/null
  [ "${KEEP:-0}" = 1 ] && { echo "kept $W"; return; }
  rm -rf "$W"
}
trap cleanup EXIT

# --- a private bus with the system bus policy (firewalld's own D-Bus policy included) -------------
mkdir -p "$W/bus" "$W/etc-firewalld" "$W/root/etc/rhel-node-agent/config.d" "$W/root/etc/containers"
cat > "$W/bus/bus.conf" <<XML
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=$W/bus/system_bus_socket</listen>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <includedir>/usr/share/dbus-1/system.d</includedir>
</busconfig>
XML
dbus-daemon --config-file="$W/bus/bus.conf" --nofork --nopidfile 2>"$W/bus.log" &
PIDS+=($!)
BUS="unix:path=$W/bus/system_bus_socket"
wait_for 5 test -S "$W/bus/system_bus_socket" || { echo "bus did not start"; cat "$W/bus.log"; exit 1; }
export DBUS_SYSTEM_BUS_ADDRESS=$BUS
BUSCTL=(busctl --address="$BUS" --no-pager)
FW=(org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1)

# --- two namespaces joined by a veth: firewalld guards $NS; $NS2 is the client --------------------
ip netns add "$NS"; ip netns add "$NS2"
ip -n "$NS" link set lo up; ip -n "$NS2" link set lo up
ip link add rnafw0 netns "$NS" type veth peer name rnacl0 netns "$NS2"
ip -n "$NS" addr add 10.231.0.1/24 dev rnafw0; ip -n "$NS" link set rnafw0 up
ip -n "$NS2" addr add 10.231.0.2/24 dev rnacl0; ip -n "$NS2" link set rnacl0 up
cp -a /etc/firewalld/. "$W/etc-firewalld/"
ip netns exec "$NS" unshare --mount --propagation private sh -c '
    mount -t tmpfs -o mode=0755 tmpfs /run
    exec firewalld --nofork --nopid --log-target console --system-config "$0"
  ' "$W/etc-firewalld" > "$W/firewalld.log" 2>&1 &
PIDS+=($!)
fw_running() { [ "$("${BUSCTL[@]}" get-property "${FW[@]}" org.fedoraproject.FirewallD1 state 2>/dev/null)" = 's "RUNNING"' ]; }
wait_for 30 fw_running || { echo "firewalld did not start"; tail -20 "$W/firewalld.log"; exit 1; }
# The interface is in the default zone (public), which rejects what it does not allow.
"${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone changeZoneOfInterface ss public rnafw0 >/dev/null
ip netns exec "$NS" python3 -m http.server 8080 --bind 10.231.0.1 >/dev/null 2>&1 &
PIDS+=($!)
reach() { ip netns exec "$NS2" curl -s -o /dev/null --max-time 2 http://10.231.0.1:8080/; }
# From inside its own namespace (loopback delivery, which firewalld accepts): the server answers.
reach_inside() { ip netns exec "$NS" curl -s -o /dev/null --max-time 2 http://10.231.0.1:8080/; }
wait_for 10 reach_inside || { echo "the HTTP server in $NS never answered: the refusal check would prove nothing"; exit 1; }

R="$W/root"
: > "$R/etc/containers/registries.conf"
# The agent's configuration: firewalld enabled (no units reloaded: no systemd on this bus), then the
# zone declarations from stdin.
conf() {
  { printf '[mirrors]\nreload_units = []\n[firewalld]\nstate = "enabled"\n'; cat; } > "$R/etc/rhel-node-agent/config.d/50-test.toml"
}
rna() { "$BIN" --root "$R" --system-bus "$BUS" "$@"; }
runtime_ports() { "${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone getPorts s public; }
perm_ports() {
  local zp; zp=$("${BUSCTL[@]}" call org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1/config org.fedoraproject.FirewallD1.config getZoneByName s public | awk '{print $2}' | tr -d '"')
  "${BUSCTL[@]}" call org.fedoraproject.FirewallD1 "$zp" org.fedoraproject.FirewallD1.config.zone getPorts
}
# Everything a failed apply must leave as it was: runtime and permanent (over D-Bus and on disk),
# the default zone, and the namespace's nft ruleset.
fw_state() {
  { runtime_ports && perm_ports && cat "$W/etc-firewalld/zones/public.xml" \
      && "${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1 getDefaultZone \
      && ip netns exec "$NS" nft list ruleset; } 2>&1 | sha256sum
}
has_runtime_port() { runtime_ports | grep "\"$1\" \"tcp\"" >/dev/null; }
nft_has() { ip netns exec "$NS" nft list ruleset | grep "tcp dport $1 accept" >/dev/null; }
perm_has() { grep "port=\"$1\"" "$W/etc-firewalld/zones/public.xml" >/dev/null 2>&1 \
  || grep "port port=\"$1\"" "$W/etc-firewalld/zones/public.xml" >/dev/null 2>&1; }

conf <<'EOF'
default_zone = "public"
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp"]
services = ["ssh"]
interfaces = ["rnafw0"]
EOF

# --- under --root without --system-bus: not managed ----------------------------------------------
out=$("$BIN" --root "$R" firewall status 2>&1)
case "$out" in *unmanaged*"never touches"*) pass "under --root without --system-bus firewalld is unmanaged";; *) fail "confined status: $out";; esac

# --- before: refused -------------------------------------------------------------------------------
reach && fail "port 8080 reachable before it is declared" || pass "traffic to 8080 refused before the port is declared (the server answers inside its namespace)"
out=$(rna firewall status 2>&1); rc=$?
case "$out" in *"not in sync"*"add port 8080/tcp to zone public (runtime)"*"add port 8080/tcp to zone public (permanent)"*) pass "firewall status shows the missing port in both layers";; *) fail "status ($rc): $out";; esac
# --json: declared vs observed, per zone and layer.
json_check() {  # json_check FILE PYTHON-ASSERTIONS (on d = the document); prints what failed
  python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
z={x["name"]: x for x in d["zones"]}
p=lambda side: sorted(x["port"]+"/"+x["proto"] for x in side["ports"])
exec(sys.argv[2])' "$1" "$2"
}
rna firewall status --json > "$W/status.json" 2>&1; rc=$?
if [ $rc = 0 ] && err=$(json_check "$W/status.json" '
assert d["schema"] == 1 and d["in_sync"] is False, d["in_sync"]
assert d["desired"]["state"] == "enabled"
pub = z["public"]
assert p(pub["declared"]) == ["8080/tcp"], pub["declared"]
assert pub["declared"]["services"] == ["ssh"] and pub["declared"]["interfaces"] == ["rnafw0"]
assert "8080/tcp" not in p(pub["runtime"]) and "8080/tcp" not in p(pub["permanent"])
assert "rnafw0" in pub["runtime"]["interfaces"], pub["runtime"]
assert pub["missing"]["runtime"] == ["port 8080/tcp"], pub["missing"]
assert pub["missing"]["permanent"][0] == "port 8080/tcp", pub["missing"]
' 2>&1); then pass "firewall status --json: zone public declared 8080/tcp, observed without it in runtime and permanent, missing in both"
else fail "status --json ($rc): $err $(head -c 600 "$W/status.json")"; fi
before=$(fw_state)
out=$(rna firewall apply --dry-run 2>&1); rc=$?
[ "$(fw_state)" = "$before" ] && ! has_runtime_port 8080 && ! perm_has 8080 \
  && pass "apply --dry-run changes nothing (runtime, permanent, nft)" || fail "dry run changed something"
case "$out" in *"change(s) (would)"*"add port 8080/tcp to zone public (runtime)"*"add port 8080/tcp to zone public (permanent)"*)
  [ $rc = 0 ] && pass "apply --dry-run prints what it would do" || fail "dry run exit $rc";;
  *) fail "dry run output ($rc): $out";; esac

# --- apply -----------------------------------------------------------------------------------------
out=$(rna firewall apply 2>&1); rc=$?
[ $rc = 0 ] && pass "firewall apply succeeded" || fail "apply exit $rc: $out"
has_runtime_port 8080 && pass "8080/tcp in the runtime configuration" || fail "runtime ports: $(runtime_ports)"
rna firewall status --json > "$W/status.json" 2>&1
err=$(json_check "$W/status.json" '
assert d["in_sync"] is True
pub = z["public"]
assert "8080/tcp" in p(pub["runtime"]) and "8080/tcp" in p(pub["permanent"]), pub
assert pub["missing"] == {"runtime": [], "permanent": []}, pub["missing"]
' 2>&1) && pass "firewall status --json after apply: in sync, 8080/tcp observed in both layers" || fail "status --json after apply: $err"
perm_has 8080 && pass "8080/tcp in the permanent configuration (the temp dir's zones/public.xml)" || fail "permanent: $(cat "$W/etc-firewalld/zones/public.xml" 2>&1)"
nft_has 8080 && pass "tcp dport 8080 accept in the namespace's nft ruleset" || fail "nft: $(ip netns exec "$NS" nft list ruleset | grep -c dport)"
"${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone getServices s public | grep '"ssh"' >/dev/null \
  && grep 'service name="ssh"' "$W/etc-firewalld/zones/public.xml" >/dev/null \
  && pass "service ssh in runtime and permanent" || fail "service ssh missing"
wait_for 5 reach && pass "traffic to 8080 accepted after the port is declared" || fail "8080 still refused"

# --- idempotent: zero mutating calls ---------------------------------------------------------------
dbus-monitor --address "$BUS" "type='method_call',destination='org.fedoraproject.FirewallD1'" > "$W/monitor.log" 2>&1 &
MON=$!; PIDS+=($MON); sleep 0.5
out=$(rna firewall apply 2>&1)
sleep 0.5; kill "$MON" 2>/dev/null
calls=$(grep -c "member=" "$W/monitor.log")
mut=$(grep -E -c "member=(add|remove|set|change)[A-Z]" "$W/monitor.log")
case "$out" in *"nothing to change"*)
  [ "$mut" = 0 ] && [ "$calls" -gt 0 ] && pass "re-apply: in sync, $calls read calls, 0 mutating calls (dbus-monitor)" || fail "re-apply made $mut mutating calls of $calls";;
  *) fail "re-apply: $out";; esac

# --- a bad declaration never half-applies -----------------------------------------------------------
# Each: exit 2 (CLI.md: invalid input, nothing changed), the key named, and runtime, permanent and
# the nft ruleset exactly as before.
unchanged_after() {  # unchanged_after WHAT KEY CODE: the config is in place
  local before out rc; before=$(fw_state)
  out=$(rna firewall apply 2>&1); rc=$?
  case "$out" in *"$2: firewalld: $3"*) ;; *) fail "$1: error does not name $2 ($3): $out"; return;; esac
  [ $rc = 2 ] || { fail "$1: exit $rc (want 2): $out"; return; }
  [ "$(fw_state)" = "$before" ] && ! has_runtime_port 9191 && ! perm_has 9191 \
    && pass "$1: exit 2, error names $2, runtime/permanent/nft unchanged" || fail "$1: something changed: $(runtime_ports)"
}
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp", "9191/tcp"]
sources = ["ipset:nosuch"]
EOF
unchanged_after "ipset source that does not exist" "firewalld.zone[0].sources[0]" INVALID_IPSET
conf <<'EOF'
default_zone = "nosuchzone"
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp", "9191/tcp"]
EOF
unchanged_after "unknown default zone" "firewalld.default_zone" INVALID_ZONE
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp", "9191/tcp"]
[[firewalld.zone]]
name = "nosuchzone"
ports = ["1234/tcp"]
EOF
out=$(rna firewall apply 2>&1); rc=$?
case "$out" in *"firewalld.zone[1].name"*INVALID_ZONE*) [ $rc = 2 ] && pass "unknown zone: exit 2, error names firewalld.zone[1].name" || fail "exit $rc: $out";; *) fail "unknown zone: $out";; esac
has_runtime_port 9191 && fail "9191 added although the declaration was bad" || pass "nothing applied from the bad declaration"
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp", "9191/tcp"]
services = ["ssh", "no-such-service"]
EOF
out=$(rna firewall apply 2>&1); rc=$?
case "$out" in *"firewalld.zone[0].services[1]"*INVALID_SERVICE*) [ $rc = 2 ] && pass "unknown service: exit 2, error names firewalld.zone[0].services[1]" || fail "exit $rc: $out";; *) fail "unknown service: $out";; esac
has_runtime_port 9191 && fail "9191 added despite the unknown service" || pass "nothing applied"
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp", "99999/tcp"]
EOF
out=$(rna firewall apply 2>&1); rc=$?
case "$out" in *"firewalld.zone[0].ports[1]"*"not a port number"*) [ $rc = 2 ] && pass "bad port: a configuration error naming the file and key (exit 2)" || fail "exit $rc";; *) fail "bad port: $out";; esac

# --- firewalld fails part-way: what was changed is undone ---------------------------------------------
# The permanent configuration read-only (inside firewalld's own mount namespace): the runtime add of
# 9191/tcp goes through, the permanent one fails with firewalld's real exception; the runtime add is
# taken back, and the error names the key.
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp", "9191/tcp"]
EOF
FWPID=${PIDS[1]}
nsenter -t "$FWPID" -m sh -c 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"' "$W/etc-firewalld"
before=$(fw_state)
out=$(rna firewall apply 2>&1); rc=$?
case "$out" in *"firewalld.zone[0].ports[1]: firewalld: "*"Read-only file system"*)
  [ $rc = 1 ] && pass "a real firewalld failure part-way: exit 1, error names firewalld.zone[0].ports[1]" || fail "part-way: exit $rc: $out";;
  *) fail "part-way failure ($rc): $out";; esac
[ "$(fw_state)" = "$before" ] && ! has_runtime_port 9191 \
  && pass "the runtime change made before the failure is undone (runtime, permanent, nft as before)" || fail "left changed: $(runtime_ports) / $(perm_ports)"
nsenter -t "$FWPID" -m umount "$W/etc-firewalld"
# Not root: firewalld itself refuses (no polkit on this bus: uid 0 only).
chmod 0755 "$W"
out=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" --root "$R" --system-bus "$BUS" firewall status 2>&1); rc=$?
case "$out" in *"firewalld: NotAuthorizedException: Not Authorized(uid)"*) [ $rc = 1 ] && pass "firewalld's NotAuthorizedException reaches a non-root caller (exit 1)" || fail "not root: exit $rc: $out";;
  *) fail "not root ($rc): $out";; esac

# --- the daemon restores drift ------------------------------------------------------------------------
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp"]
services = ["ssh"]
interfaces = ["rnafw0"]
EOF
MPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[api]\nmetrics_listen = "127.0.0.1:%s"\n' "$MPORT" > "$R/etc/rhel-node-agent/config.d/60-metrics.toml"
metric() { curl -sf "http://127.0.0.1:$MPORT/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
"$BIN" --root "$R" --system-bus "$BUS" daemon -v > "$W/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
st() { "$BIN" --root "$R" status -o json 2>/dev/null; }
drifts() { st | python3 -c 'import json,sys; print(json.load(sys.stdin)["firewalld_detail"]["drifts"])' 2>/dev/null; }
synced() { st | python3 -c 'import json,sys; d=json.load(sys.stdin)["firewalld_detail"]; sys.exit(0 if d["last_reconcile"] and not d["last_error"] else 1)'; }
wait_for 20 synced || fail "daemon did not reconcile firewalld: $(st)"
d0=$(drifts)
m0=$(metric rna_firewalld_drifts_total)
[ -n "$m0" ] || fail "no rna_firewalld_drifts_total at http://127.0.0.1:$MPORT/metrics"
t0=$(date +%s%N)
"${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone removePort sss public 8080 tcp >/dev/null
if wait_for 30 has_runtime_port 8080; then
  pass "a declared port removed at runtime is restored ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
else fail "runtime removal not undone: $(runtime_ports)"; fi
more_drift() { [ "$(drifts)" -gt "$d0" ]; }
wait_for 5 more_drift && pass "the drift is counted in status ($(drifts))" || fail "drifts: $(drifts)"
more_metric() { [ "$(metric rna_firewalld_drifts_total)" -gt "${m0:-0}" ] 2>/dev/null; }
wait_for 5 more_metric && pass "rna_firewalld_drifts_total counts it ($m0 → $(metric rna_firewalld_drifts_total))" || fail "metric: $(metric rna_firewalld_drifts_total)"
line=$(grep "firewalld drift restored" "$W/daemon.log" | grep "port 8080/tcp" | head -1)
before_ok() { case "$line" in *"before=zone public (runtime): ports []; services ["*"ssh"*"]; sources []; interfaces [rnafw0]"*) return 0;; esac; return 1; }
after_ok() { case "$line" in *"after=zone public (runtime): ports [8080/tcp]; services ["*"ssh"*"]; sources []; interfaces [rnafw0]"*) return 0;; esac; return 1; }
before_ok && after_ok && pass "the drift is logged with the zone's settings before (no 8080/tcp) and after (8080/tcp)" || fail "drift log line: ${line:-none}"
st | python3 -c 'import json,sys; d=json.load(sys.stdin)["firewalld_detail"]["last_drift"][1]; assert "ports []" in d and "ports [8080/tcp]" in d, d' \
  && pass "status last_drift: zone settings before → after" || fail "status last_drift: $(st | head -c 400)"
# Permanent removal, then a reload: the runtime loses it too.
ZP=$("${BUSCTL[@]}" call org.fedoraproject.FirewallD1 /org/fedoraproject/FirewallD1/config org.fedoraproject.FirewallD1.config getZoneByName s public | awk '{print $2}' | tr -d '"')
"${BUSCTL[@]}" call org.fedoraproject.FirewallD1 "$ZP" org.fedoraproject.FirewallD1.config.zone removePort ss 8080 tcp >/dev/null
"${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1 reload >/dev/null
restored_both() { has_runtime_port 8080 && perm_has 8080; }
wait_for 30 restored_both && pass "permanent removal + reload is undone (runtime and permanent)" || fail "after reload: runtime $(runtime_ports); permanent $(grep -c 8080 "$W/etc-firewalld/zones/public.xml")"
wait_for 5 reach && pass "traffic accepted again" || fail "8080 refused after the restore"

# --- undeclared settings: reported, and removed only with prune ---------------------------------------
"${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone addPort sssi public 7070 tcp 0 >/dev/null
undeclared() { st | grep "port 7070/tcp is not declared" >/dev/null; }
kill -HUP "$DPID"
wait_for 10 undeclared && pass "an undeclared port is reported in status" || fail "undeclared not reported: $(st | head -c 600)"
has_runtime_port 7070 && pass "and left alone (prune = false)" || fail "7070 removed without prune"
sed -i 's/^state = "enabled"/state = "enabled"\nprune = true/' "$R/etc/rhel-node-agent/config.d/50-test.toml"
kill -HUP "$DPID"
gone() { ! has_runtime_port 7070; }
wait_for 15 gone && pass "prune = true removes it" || fail "7070 still there with prune"

if HOST_RULES_AFTER=$(host_rules); then
  [ "$HOST_RULES_BEFORE" = "$HOST_RULES_AFTER" ] && pass "the host's own nft ruleset is unchanged" || fail "host ruleset changed"
else fail "nft list ruleset failed on the host after the suite"; fi
echo "firewalld-private: $PASS/$((PASS+FAIL)) checks passed"
[ "$FAIL" = 0 ]
