#!/usr/bin/env bash
# The agent against real firewalld (Debian's, nftables backend) on a private system-like D-Bus, in
# a network namespace this test creates, with its permanent configuration in a temp dir
# (../shared/recipes/systemd-firewalld A). Proves: declared ports and services land in both the
# runtime and the permanent configuration and in that namespace's nft ruleset; traffic from a second
# namespace is refused before and accepted after the port is declared; an idempotent re-apply makes
# zero mutating D-Bus calls; a bad declaration (unknown zone or service) is an error naming the key
# and changes nothing; the daemon restores a declared port someone removed, and one lost by a
# permanent removal + reload; undeclared settings are reported and left alone, removed with prune;
# under --root without --system-bus the agent does not manage firewalld; the host's own ruleset is
# never touched. Needs root.
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
HOST_RULES_BEFORE=$(nft list ruleset 2>/dev/null | sha256sum)
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
wait_for 5 ip netns exec "$NS" sh -c 'ss -ltn | grep -q ":8080 "'

R="$W/root"
: > "$R/etc/containers/registries.conf"
# The agent's configuration: firewalld enabled (no units reloaded: no systemd on this bus), then the
# zone declarations from stdin.
conf() {
  { printf '[mirrors]\nreload_units = []\n[firewalld]\nstate = "enabled"\n'; cat; } > "$R/etc/rhel-node-agent/config.d/50-test.toml"
}
rna() { "$BIN" --root "$R" --system-bus "$BUS" "$@"; }
runtime_ports() { "${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone getPorts s public; }
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
reach && fail "port 8080 reachable before it is declared" || pass "traffic to 8080 refused before the port is declared"
out=$(rna firewall status 2>&1); rc=$?
case "$out" in *"not in sync"*"add port 8080/tcp to zone public (runtime)"*"add port 8080/tcp to zone public (permanent)"*) pass "firewall status shows the missing port in both layers";; *) fail "status ($rc): $out";; esac
out=$(rna firewall apply --dry-run 2>&1)
has_runtime_port 8080 && fail "dry run changed the runtime" || pass "apply --dry-run changes nothing"

# --- apply -----------------------------------------------------------------------------------------
out=$(rna firewall apply 2>&1); rc=$?
[ $rc = 0 ] && pass "firewall apply succeeded" || fail "apply exit $rc: $out"
has_runtime_port 8080 && pass "8080/tcp in the runtime configuration" || fail "runtime ports: $(runtime_ports)"
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

# --- the daemon restores drift ------------------------------------------------------------------------
conf <<'EOF'
[[firewalld.zone]]
name = "public"
ports = ["8080/tcp"]
services = ["ssh"]
interfaces = ["rnafw0"]
EOF
"$BIN" --root "$R" --system-bus "$BUS" daemon -v > "$W/daemon.log" 2>&1 &
DPID=$!; PIDS+=($DPID)
st() { "$BIN" --root "$R" status -o json 2>/dev/null; }
drifts() { st | python3 -c 'import json,sys; print(json.load(sys.stdin)["firewalld_detail"]["drifts"])' 2>/dev/null; }
synced() { st | python3 -c 'import json,sys; d=json.load(sys.stdin)["firewalld_detail"]; sys.exit(0 if d["last_reconcile"] and not d["last_error"] else 1)'; }
wait_for 20 synced || fail "daemon did not reconcile firewalld: $(st)"
d0=$(drifts)
t0=$(date +%s%N)
"${BUSCTL[@]}" call "${FW[@]}" org.fedoraproject.FirewallD1.zone removePort sss public 8080 tcp >/dev/null
if wait_for 30 has_runtime_port 8080; then
  pass "a declared port removed at runtime is restored ($(( ($(date +%s%N) - t0) / 1000000 )) ms)"
else fail "runtime removal not undone: $(runtime_ports)"; fi
more_drift() { [ "$(drifts)" -gt "$d0" ]; }
wait_for 5 more_drift && pass "the drift is counted in status ($(drifts))" || fail "drifts: $(drifts)"
grep "firewalld drift restored" "$W/daemon.log" | grep -q "port 8080/tcp" && pass "the drift is logged with what was restored" || fail "no drift log line"
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

HOST_RULES_AFTER=$(nft list ruleset 2>/dev/null | sha256sum)
[ "$HOST_RULES_BEFORE" = "$HOST_RULES_AFTER" ] && pass "the host's own nft ruleset is unchanged" || fail "host ruleset changed"
echo "firewalld-private: $PASS/$((PASS+FAIL)) checks passed"
[ "$FAIL" = 0 ]
