#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions called indirectly (traps, check) are reachable
# The openshift-ansible hook files (packaging/ansible/*.yml) run by real ansible-playbook against a
# real daemon: a local play that mimics openshift-ansible's playbooks/upgrade.yml (serial: 1;
# pre_cordon hook, cordon, drain, pre_upgrade hook, packages + reboot, pre_uncordon hook,
# uncordon, post_upgrade hook) on localhost, with the agent under a temp --root.
#
#   tests/ansible/ansible-upgrade.sh          (no root needed; needs ansible-playbook and python3)
#
# Environment:
#   RNA_BIN=path   binary under test (default target/debug/rhel-node-agent, relative to repo root)
#   KEEP=1         keep the work dir (play output, daemon log, hook log) and print its path
#
# Cases: 1. a clean run: four phases in order, one upgrade id, closed record with two boots;
#        2. a failing pre-upgrade hook fails the play before the packages/reboot stand-in;
#        3. the fixed hook and a re-run finish the same record (pre-cordon "already done");
#        4. target version from l_cluster_version and --upgrade-id from rhel_node_agent_upgrade_id.
# The "reboot" writes a new boot id to ROOT/proc/sys/kernel/random/boot_id (the agent reads it
# there under --root) and restarts the daemon 2 s later, so pre_uncordon waits for it
# (--wait-daemon) as it would after a real reboot.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
cd "$REPO"

if ! command -v ansible-playbook >/dev/null 2>&1; then
  echo "ansible-upgrade: ansible-playbook is not installed (apt-get install ansible-core)" >&2
  exit 1
fi
BIN=${RNA_BIN:-target/debug/rhel-node-agent}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
[ -x "$BIN" ] || { echo "ansible-upgrade: $BIN is missing or not executable (cargo build)" >&2; exit 1; }

W=$(mktemp -d /tmp/rna-ansible.XXXXXX)
ROOT=$W/root
BOOT_ID=$ROOT/proc/sys/kernel/random/boot_id
HOOKS=$ROOT/etc/rhel-node-agent/hooks.d
SOCK=$ROOT/run/rhel-node-agent/control.sock
HOOKLOG=$W/hooks.log
MARKERS=$W/markers
PIDFILE=$W/daemon.pid   # the current daemon's pid (rewritten by the "reboot" stand-in)

# Stop the daemon whose pid is in $PIDFILE, if it is still ours (an agent with our --root).
stop_daemon() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  # (the agent, or the `sh` that execs it after the "reboot": both have $ROOT in their argv)
  if grep -qF -- "$ROOT" "/proc/$pid/cmdline" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
}
cleanup() {
  stop_daemon
  if [ "${KEEP:-0}" = 1 ]; then echo "# work dir kept: $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

PASS=0 FAIL=0
check() {  # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@"; then PASS=$((PASS+1)); echo "[PASS] $what"; else FAIL=$((FAIL+1)); echo "[FAIL] $what"; fi
}
finish() {
  echo "ansible-upgrade: $PASS/$((PASS+FAIL)) checks passed"
  if [ "$FAIL" -eq 0 ]; then exit 0; else exit 1; fi
}
show() {  # show FILE [LINES]: the tail of a log, indented (for a failed case)
  echo "    --- $1"
  tail -n "${2:-40}" "$1" 2>/dev/null | sed 's/\x1b\[[0-9;]*m//g; s/^/    | /' || true
}

# ------------------------------------------------------------------ the node (temp root)
mkdir -p "$ROOT/etc/containers" "$(dirname "$BOOT_ID")" "$W/tmp" "$W/home"
: >"$ROOT/etc/containers/registries.conf"
cat /proc/sys/kernel/random/uuid >"$BOOT_ID"
for phase in pre-cordon pre-upgrade pre-uncordon post-upgrade; do
  mkdir -p "$HOOKS/$phase.d"
  cat >"$HOOKS/$phase.d/50-log" <<EOF
#!/bin/sh
echo "$phase \$RNA_UPGRADE_ID \$RNA_TARGET_VERSION \$RNA_ATTEMPT" >>'$HOOKLOG'
if [ -e '$W/fail-$phase' ]; then echo "$phase hook failing on purpose" >&2; exit 1; fi
echo "$phase hook ok"
EOF
  chmod 755 "$HOOKS/$phase.d/50-log"
done
: >"$HOOKLOG"

start_daemon() {
  "$BIN" --root "$ROOT" daemon >>"$W/daemon.log" 2>&1 &
  echo $! >"$PIDFILE"
}
start_daemon
for _ in $(seq 200); do [ -S "$SOCK" ] && break; sleep 0.05; done
if [ ! -S "$SOCK" ]; then
  echo "[FAIL] setup: the daemon did not create $SOCK"; show "$W/daemon.log"; FAIL=1; finish
fi

# ------------------------------------------------------------------ ansible
export HOME=$W/home ANSIBLE_CONFIG=$W/ansible.cfg ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 \
  ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_LOCAL_TEMP=$W/tmp/ansible-local \
  ANSIBLE_REMOTE_TEMP=$W/tmp/ansible-remote ANSIBLE_HOST_KEY_CHECKING=0 \
  ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_LOCALHOST_WARNING=0
: >"$ANSIBLE_CONFIG"   # ignore /etc/ansible/ansible.cfg and ~/.ansible.cfg

write_inventory() {  # write_inventory FILE [EXTRA VAR LINES...]
  local f=$1; shift
  {
    echo "localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3"
    echo
    echo "[all:vars]"
    for h in pre_cordon pre_upgrade pre_uncordon post_upgrade; do
      echo "openshift_node_${h}_hook=$REPO/packaging/ansible/$h.yml"
    done
    echo "rhel_node_agent_bin=$BIN"
    echo "rhel_node_agent_args=\"--root $ROOT\""
    echo "rhel_node_agent_wait_daemon=30"
    echo "rna_test_dir=$W"
    printf '%s\n' "$@"
  } >"$f"
}
write_inventory "$W/inventory" "l_cluster_version=4.14" "rhel_node_agent_target_version=4.14.3"
write_inventory "$W/inventory-4" "l_cluster_version=4.15" "rhel_node_agent_upgrade_id=rna-test-4.15"

# The order of openshift-ansible's roles/openshift_node/tasks/upgrade.yml, with stand-ins for
# everything but the hooks; each stand-in appends its name to $MARKERS.
cat >"$W/upgrade.yml" <<EOF
---
- name: Upgrade RHEL workers (stand-in for openshift-ansible playbooks/upgrade.yml)
  hosts: all
  serial: 1
  gather_facts: false
  tasks:
  - name: Run the pre-cordon hook
    include_tasks: "{{ openshift_node_pre_cordon_hook }}"
    when: openshift_node_pre_cordon_hook is defined

  - name: Cordon node prior to upgrade
    shell: echo cordon >> {{ rna_test_dir }}/markers

  - name: Drain node prior to upgrade
    shell: echo drain >> {{ rna_test_dir }}/markers

  - name: Run the pre-upgrade hook
    include_tasks: "{{ openshift_node_pre_upgrade_hook }}"
    when: openshift_node_pre_upgrade_hook is defined

  - name: Upgrade packages, apply the machine config, reboot
    shell: |
      set -e
      echo upgrade >> {{ rna_test_dir }}/markers
      # the daemon goes down with the node ...
      pid=\$(cat {{ rna_test_dir }}/daemon.pid)
      kill "\$pid"
      while kill -0 "\$pid" 2>/dev/null; do sleep 0.05; done
      # ... the node comes back with a new boot id, the daemon 2 s later
      cat /proc/sys/kernel/random/uuid > "$BOOT_ID.new"
      mv "$BOOT_ID.new" "$BOOT_ID"
      sh -c 'echo \$\$ > "\$0"; sleep 2; exec "\$1" --root "\$2" daemon' \\
        {{ rna_test_dir }}/daemon.pid "$BIN" "$ROOT" >> {{ rna_test_dir }}/daemon.log 2>&1 < /dev/null &
      while [ "\$(cat {{ rna_test_dir }}/daemon.pid)" = "\$pid" ]; do sleep 0.05; done

  - name: Run the pre-uncordon hook
    include_tasks: "{{ openshift_node_pre_uncordon_hook }}"
    when: openshift_node_pre_uncordon_hook is defined

  - name: Uncordon node after upgrade
    shell: echo uncordon >> {{ rna_test_dir }}/markers

  - name: Run the post-upgrade hook
    include_tasks: "{{ openshift_node_post_upgrade_hook }}"
    when: openshift_node_post_upgrade_hook is defined
EOF

RUN=0 RC=0
play() {  # play INVENTORY: run the play, RC = its exit status, output in $W/play$RUN.log
  RUN=$((RUN+1)); : >"$MARKERS"; : >"$HOOKLOG"
  RC=0
  timeout 300 ansible-playbook -i "$1" "$W/upgrade.yml" >"$W/play$RUN.log" 2>&1 || RC=$?
  OUT=$W/play$RUN.log
  echo "# play $RUN exited $RC ($(grep -E '^localhost +:' "$OUT" | tr -s ' ' || echo 'no recap'))"
}
markers() { paste -sd' ' "$MARKERS"; }
hooklog() { cut -d' ' -f"$1" "$HOOKLOG" | paste -sd' ' -; }
task_status() {  # task_status 'TASK NAME': the first status word after that task's header
  awk -v t="TASK [$1]" 'index($0, t) == 1 { getline; while ($0 == "") getline; sub(/:.*/, ""); print; exit }' "$OUT"
}
status() {  # (a failing `upgrade status` leaves a document on which every js check fails)
  "$BIN" --root "$ROOT" upgrade status -o json >"$W/status.json" 2>"$W/status.err" ||
    { echo "# upgrade status failed: $(head -c 300 "$W/status.err")"; echo '{}' >"$W/status.json"; }
}
# js EXPR: a Python expression over d (the `upgrade status -o json` document) and
# rec(id) (the record with that id, open or closed); exit 0 when truthy.
js() {
  python3 - "$W/status.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
def rec(i):
    return next((r for r in ([d["open"]] if d["open"] else []) + d["closed"] if r["id"] == i), None)
def ph(r, name):
    return next(p for p in r["phases"] if p["phase"] == name)
try:
    ok = eval("(" + sys.argv[2] + ")")
except Exception as e:
    print(f"    check error: {e!r}", file=sys.stderr)
    ok = False
sys.exit(0 if ok else 1)
PY
}
case_failed() { show "$OUT" 60; show "$HOOKLOG"; show "$W/daemon.log" 20; python3 -m json.tool "$W/status.json" | head -60 | sed 's/^/    | /' || true; }
F0=$FAIL

# ================================================================== 1. clean run
echo "# case 1: clean run"
play "$W/inventory"
status
ID1=$(head -n1 "$HOOKLOG" | cut -d' ' -f2); ID1=${ID1:-none}
check "1: ansible-playbook exited 0 (got $RC)" [ "$RC" -eq 0 ]
check "1: stand-ins ran in order (got: $(markers))" [ "$(markers)" = "cordon drain upgrade uncordon" ]
check "1: hooks ran in phase order (got: $(hooklog 1))" \
  [ "$(hooklog 1)" = "pre-cordon pre-upgrade pre-uncordon post-upgrade" ]
check "1: every hook saw upgrade id $ID1 (got: $(hooklog 2))" [ "$(hooklog 2)" = "$ID1 $ID1 $ID1 $ID1" ]
check "1: every hook saw target 4.14.3 (rhel_node_agent_target_version over l_cluster_version; got: $(hooklog 3))" \
  [ "$(hooklog 3)" = "4.14.3 4.14.3 4.14.3 4.14.3" ]
check "1: every hook saw attempt 1 (got: $(hooklog 4))" [ "$(hooklog 4)" = "1 1 1 1" ]
check "1: the phase tasks were 'changed'" \
  [ "$(task_status 'rhel-node-agent: phase pre-cordon') $(task_status 'rhel-node-agent: phase post-upgrade')" = "changed changed" ]
check "1: the debug task showed the agent's output" grep -q 'pre-uncordon succeeded' "$OUT"
check "1: upgrade status: no open record" js 'd["open"] is None'
check "1: upgrade status: the last closed record is $ID1, target 4.14.3" \
  js "d['closed'][-1]['id'] == '$ID1' and d['closed'][-1]['target_version'] == '4.14.3'"
check "1: upgrade status: all four phases succeeded, one attempt each" \
  js "all(p['state'] == 'succeeded' and len(p['attempts']) == 1 for p in rec('$ID1')['phases'])"
check "1: upgrade status: 2 boots" js "len(rec('$ID1')['boots']) == 2"
[ "$FAIL" -eq "$F0" ] || case_failed; F0=$FAIL

# ================================================================== 2. failing pre-upgrade hook
echo "# case 2: failing pre-upgrade hook"
touch "$W/fail-pre-upgrade"
play "$W/inventory"
status
ID2=$(head -n1 "$HOOKLOG" | cut -d' ' -f2); ID2=${ID2:-none2}
check "2: ansible-playbook exited non-zero (got $RC)" [ "$RC" -ne 0 ]
check "2: cordon and drain ran, upgrade and uncordon did not (got: $(markers))" [ "$(markers)" = "cordon drain" ]
check "2: hooks: pre-cordon then pre-upgrade (got: $(hooklog 1))" [ "$(hooklog 1)" = "pre-cordon pre-upgrade" ]
check "2: a new upgrade id ($ID2, not $ID1)" [ "$ID2" != "$ID1" ]
check "2: the play shows the hook's error" grep -q 'pre-upgrade hook failing on purpose' "$OUT"
check "2: the recap counts one failure" grep -Eq '^localhost +:.* failed=1' "$OUT"
check "2: upgrade status: open record $ID2" js "d['open'] is not None and d['open']['id'] == '$ID2'"
check "2: upgrade status: pre-cordon succeeded, pre-upgrade failed, the rest pending" \
  js "[p['state'] for p in d['open']['phases']] == ['succeeded', 'failed', 'pending', 'pending']"
[ "$FAIL" -eq "$F0" ] || case_failed; F0=$FAIL

# ================================================================== 3. fixed hook, re-run
echo "# case 3: fixed hook, the play again"
rm -f "$W/fail-pre-upgrade"
play "$W/inventory"
status
check "3: ansible-playbook exited 0 (got $RC)" [ "$RC" -eq 0 ]
check "3: stand-ins ran in order (got: $(markers))" [ "$(markers)" = "cordon drain upgrade uncordon" ]
check "3: hooks: pre-cordon did not run again (got: $(hooklog 1))" \
  [ "$(hooklog 1)" = "pre-upgrade pre-uncordon post-upgrade" ]
check "3: hooks saw upgrade id $ID2 (got: $(hooklog 2))" [ "$(hooklog 2)" = "$ID2 $ID2 $ID2" ]
check "3: pre-upgrade hook saw attempt 2 (got: $(hooklog 4))" [ "$(hooklog 4)" = "2 1 1" ]
check "3: the pre-cordon task was 'ok' (already done), pre-upgrade 'changed'" \
  [ "$(task_status 'rhel-node-agent: phase pre-cordon') $(task_status 'rhel-node-agent: phase pre-upgrade')" = "ok changed" ]
check "3: upgrade status: no open record" js 'd["open"] is None'
check "3: upgrade status: the last closed record is $ID2 (the one that was open)" js "d['closed'][-1]['id'] == '$ID2'"
check "3: upgrade status: all four phases succeeded" js "all(p['state'] == 'succeeded' for p in rec('$ID2')['phases'])"
check "3: upgrade status: attempts per phase 1, 2, 1, 1" \
  js "[len(p['attempts']) for p in rec('$ID2')['phases']] == [1, 2, 1, 1]"
check "3: upgrade status: pre-upgrade attempt 1 failed, attempt 2 succeeded" \
  js "[a['state'] for a in ph(rec('$ID2'), 'pre-upgrade')['attempts']] == ['failed', 'succeeded']"
check "3: upgrade status: 2 boots" js "len(rec('$ID2')['boots']) == 2"
[ "$FAIL" -eq "$F0" ] || case_failed; F0=$FAIL

# ================================================================== 4. l_cluster_version, upgrade id
echo "# case 4: l_cluster_version=4.15 and rhel_node_agent_upgrade_id"
play "$W/inventory-4"
status
check "4: ansible-playbook exited 0 (got $RC)" [ "$RC" -eq 0 ]
check "4: hooks saw upgrade id rna-test-4.15 (got: $(hooklog 2))" \
  [ "$(hooklog 2)" = "rna-test-4.15 rna-test-4.15 rna-test-4.15 rna-test-4.15" ]
check "4: hooks saw target 4.15 (got: $(hooklog 3))" [ "$(hooklog 3)" = "4.15 4.15 4.15 4.15" ]
check "4: upgrade status: rna-test-4.15 closed, target 4.15, all succeeded" \
  js "d['open'] is None and d['closed'][-1]['id'] == 'rna-test-4.15' and d['closed'][-1]['target_version'] == '4.15'
      and all(p['state'] == 'succeeded' for p in d['closed'][-1]['phases'])"
[ "$FAIL" -eq "$F0" ] || case_failed

finish
