#!/usr/bin/env bash
# The agent as systemd runs it: the real unit file (systemd/rhel-node-agent.service, sandbox
# included) and the binary installed into a container whose PID 1 is real systemd, next to a
# stand-in crio.service. Proves: the unit reaches active (Type=notify) with a STATUS= line;
# a dropped policy file updates registries.conf and reloads crio exactly once; a bad policy leaves
# the file untouched, shows the error in status, and the daemon stays up; `systemctl reload`
# (SIGHUP) reloads the configuration; a frozen agent is restarted by the watchdog
# (Result=watchdog); `systemctl stop` is clean. Needs root.
set -uo pipefail
cd "$(dirname "$0")/../.."
BIN=${RNA_BIN:-target/debug/rhel-node-agent}
. tests/systemd/lib.sh
make_workdir unit
t0=$(date +%s)

U="$W/upper"
stage_crio "$U"
stage_agent "$U" "$BIN"
# A short watchdog for the test (the shipped unit says 30 s).
install -D -m 0644 /dev/stdin "$U/etc/systemd/system/rhel-node-agent.service.d/50-test.conf" <<'EOF2'
[Service]
WatchdogSec=3s
RestartSec=1s
EOF2
mkdir -p "$U/etc/containers/registries.conf.d" "$U/etc/rhel-node-agent/mirrors.d" "$U/etc/rhel-node-agent/config.d"
printf '# admin file\nunqualified-search-registries = ["registry.access.redhat.com"]\n' > "$U/etc/containers/registries.conf"
printf '[mirrors]\non_drain_required = "apply"\n' > "$U/etc/rhel-node-agent/config.d/50-test.toml"
boot_container "$W" rna-unit-test || exit 1

prop() { IN systemctl show -p "$1" --value rhel-node-agent.service; }
conf() { IN cat /etc/containers/registries.conf; }
put_policy() {  # put_policy NAME < text   (atomic, inside the container)
  IN sh -c "cat > /etc/rhel-node-agent/mirrors.d/.tmp && mv /etc/rhel-node-agent/mirrors.d/.tmp /etc/rhel-node-agent/mirrors.d/$1"
}
agent_status() { IN rhel-node-agent status -o json; }
# Checks for wait_for (shell functions: they see IN and LEADER). No `grep -q` after a pipe: with
# pipefail, grep exiting at the first match kills the writer with SIGPIPE and fails the check.
is_active() { [ "$(IN systemctl is-active rhel-node-agent.service)" = active ]; }
conf_has() { conf | grep "$1" >/dev/null; }
status_text_has() { prop StatusText | grep "$1" >/dev/null; }
status_has() { agent_status | grep "$1" >/dev/null; }
journal_has() { IN journalctl -u rhel-node-agent --no-pager | grep "$1" >/dev/null; }
restarted_since() { [ "$(prop NRestarts)" -gt "$1" ]; }

wait_for "agent active" is_active
st=$(IN systemctl is-active rhel-node-agent.service)
[ "$st" = active ] && pass "unit active (Type=notify READY=1)" || { fail "unit is $st"; IN journalctl -u rhel-node-agent --no-pager | tail -20; }
case "$(prop StatusText)" in "mirrors: 0 sources applied, firewalld: unmanaged, phase: idle") pass "STATUS= visible: $(prop StatusText)";; *) fail "StatusText: $(prop StatusText)";; esac

idms_yaml mirror-a.local/ns | put_policy 10-idms.yaml
one_reload() { [ "$(reloads)" = 1 ]; }
if wait_for "policy applied" conf_has mirror-a.local && wait_for "one reload" one_reload; then
  sleep 0.5
  [ "$(reloads)" = 1 ] && pass "dropped policy applied under the sandbox and crio reloaded exactly once" || fail "reloads: $(reloads)"
else fail "policy not applied (reloads=$(reloads)); $(IN journalctl -u rhel-node-agent --no-pager | tail -5)"; fi
wait_for "status text" status_text_has '1 sources applied' \
  && pass "STATUS= updated: $(prop StatusText)" || fail "StatusText: $(prop StatusText)"

before=$(conf)
printf 'kind: Pod\nmetadata: {name: p}\n' | put_policy 20-bad.yaml
if wait_for "error in status" status_has '20-bad.yaml:1: Pod/p'; then
  pass "bad policy: error shown by rhel-node-agent status"
else fail "bad policy error not shown: $(agent_status)"; fi
[ "$(conf)" = "$before" ] && pass "bad policy: registries.conf untouched" || fail "registries.conf changed by a bad policy"
[ "$(IN systemctl is-active rhel-node-agent.service)" = active ] && pass "bad policy: daemon stays up" || fail "daemon not active"
journal_fields() { IN journalctl -u rhel-node-agent -o verbose --no-pager | grep "RNA_POLICY=/etc/rhel-node-agent/mirrors.d/20-bad.yaml" >/dev/null; }
if wait_for "journal fields" journal_fields && IN journalctl -u rhel-node-agent -o verbose --no-pager | grep "RNA_COMPONENT=mirrors" >/dev/null; then
  pass "journal entries carry RNA_COMPONENT and RNA_POLICY"
else fail "no RNA_COMPONENT/RNA_POLICY fields in the journal"; IN journalctl -u rhel-node-agent -o verbose --no-pager | grep -E "MESSAGE=|RNA_|PRIORITY|ERROR"; agent_status; fi
IN rm /etc/rhel-node-agent/mirrors.d/20-bad.yaml

pid0=$(prop MainPID)
printf '[mirrors]\non_drain_required = "apply"\nbackups = 7\n' | IN sh -c 'cat > /etc/rhel-node-agent/config.d/60-reload.toml'
IN systemctl reload rhel-node-agent.service
if wait_for "reload logged" journal_has 'configuration reloaded'; then
  [ "$(prop MainPID)" = "$pid0" ] && [ "$(IN systemctl is-active rhel-node-agent.service)" = active ] \
    && pass "systemctl reload (SIGHUP): configuration reloaded, same process" || fail "reload restarted the process"
else fail "no 'configuration reloaded' in the journal"; fi

restarts0=$(prop NRestarts)
IN kill -STOP "$pid0"
if wait_for "watchdog restart" restarted_since "$restarts0"; then
  wait_for "active again" is_active
  IN journalctl -u rhel-node-agent --no-pager | grep "Failed with result 'watchdog'" >/dev/null \
    && pass "frozen agent: Result=watchdog, restarted (NRestarts $(prop NRestarts))" \
    || fail "restarted, but not by the watchdog: $(IN journalctl -u rhel-node-agent --no-pager | tail -5)"
else fail "no watchdog restart (NRestarts=$(prop NRestarts), Result=$(prop Result))"; fi

IN systemctl stop rhel-node-agent.service
st=$(IN systemctl is-active rhel-node-agent.service); res=$(prop Result)
[ "$st" = inactive ] && [ "$res" = success ] && pass "systemctl stop is clean (Result=$res)" || fail "after stop: $st, Result=$res"

echo "# elapsed $(( $(date +%s) - t0 ))s"
[ $FAIL -eq 0 ] || { echo "--- journal"; IN journalctl -u rhel-node-agent --no-pager | tail -25; }
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
