#!/usr/bin/env bash
# The installed package under real systemd: the el9 RPM installed with rpm inside the
# systemd-nspawn container (PID 1 is systemd 252; Debian has no systemd-update-helper, so the
# scriptlets take the systemctl path RHEL 8 takes), started from the packaged unit and files only.
# Proves: install neither starts the agent nor fails; the unit reaches active (Type=notify READY)
# from the packaged files; status and a dropped policy work; an upgrade leaves a stopped agent
# stopped and restarts a running one; erase stops and disables it; the admin's files survive.
# usage: tests/systemd/package-unit.sh [DIR]   (the RPMs of scripts/build-rpm; upgrades from
#        $RNA_RPM_UPGRADES or built here)
set -uo pipefail
cd "$(dirname "$0")/../.."
DIR=$(cd "${1:-target/rpm}" && pwd)
. tests/systemd/lib.sh
make_workdir pkg
t0=$(date +%s)
UPG=${RNA_RPM_UPGRADES:-}
if [ -z "$UPG" ]; then
  UPG=$W/upgrades
  tests/packaging/build-upgrades.sh "$UPG" >/dev/null || { echo "cannot build the upgrade packages"; exit 1; }
fi

U="$W/upper"
mkdir -p "$U/root/rpms" "$U/etc/containers"
cp "$(ls "$DIR"/rhel-node-agent-*-1.el9.x86_64.rpm)" "$U/root/rpms/r1.rpm"
cp "$(ls "$UPG"/r2/rhel-node-agent-*-2.el9.x86_64.rpm)" "$U/root/rpms/r2.rpm"
cp "$(ls "$UPG"/r3/rhel-node-agent-*-3.el9.x86_64.rpm)" "$U/root/rpms/r3.rpm"
printf '# admin file\nunqualified-search-registries = ["registry.access.redhat.com"]\n' > "$U/etc/containers/registries.conf"
boot_container "$W" rna-pkg-test || exit 1

RPM() { IN rpm --dbpath /var/lib/rpm --nodeps "$@" 2>&1 | grep -v -e 'should not be used directly' -e 'assuming you know what' | sed 's/^/    | /'; }
prop() { IN systemctl show -p "$1" --value rhel-node-agent.service; }
state() { IN systemctl is-active rhel-node-agent.service; }
is_active() { [ "$(state)" = active ]; }
conf_has() { IN cat /etc/containers/registries.conf | grep "$1" >/dev/null; }

IN mkdir -p /var/lib/rpm
RPM -ivh /root/rpms/r1.rpm
IN test -x /usr/bin/rhel-node-agent && IN test -f /usr/lib/systemd/system/rhel-node-agent.service \
  && pass "installed with rpm inside the container: $(IN rhel-node-agent --version)" || fail "the package did not install"
[ "$(state)" = inactive ] && pass "install does not start the agent (preset only; enabled: $(IN systemctl is-enabled rhel-node-agent.service))" \
  || fail "after install the agent is $(state)"

IN systemctl daemon-reload
RPM -Uvh /root/rpms/r2.rpm
[ "$(state)" = inactive ] && pass "upgrade of a stopped agent leaves it stopped" || fail "after upgrading a stopped agent it is $(state)"

IN systemctl daemon-reload
IN systemctl start rhel-node-agent.service
if wait_for "agent active" is_active; then
  pass "the packaged unit reaches active (Type=notify READY=1): $(prop StatusText)"
else
  fail "the packaged unit is $(state)"; IN journalctl -u rhel-node-agent --no-pager | tail -20
fi
# (Debian's /lib is a link to /usr/lib: compare the resolved path.)
frag=$(IN readlink -f "$(prop FragmentPath)")
[ "$frag" = /usr/lib/systemd/system/rhel-node-agent.service ] && IN rpm --dbpath /var/lib/rpm -qf "$frag" >/dev/null \
  && pass "the unit is the packaged one: $frag ($(IN rpm --dbpath /var/lib/rpm -qf "$frag"))" || fail "unit path: $(prop FragmentPath)"
IN test -d /var/lib/rhel-node-agent && IN test -S /run/rhel-node-agent/control.sock \
  && pass "StateDirectory= and RuntimeDirectory= made by systemd (control socket up)" || fail "state/runtime directories missing"
st=$(IN rhel-node-agent status -o json 2>&1)
case "$st" in *'"mirrors"'*) pass "rhel-node-agent status answers from the packaged daemon";; *) fail "status: $st";; esac
idms_yaml mirror-a.local/ns | IN sh -c 'cat > /etc/rhel-node-agent/mirrors.d/.tmp && mv /etc/rhel-node-agent/mirrors.d/.tmp /etc/rhel-node-agent/mirrors.d/10-idms.yaml'
wait_for "policy applied" conf_has mirror-a.local \
  && pass "a policy dropped into the packaged mirrors.d is applied to registries.conf" || fail "policy not applied: $(IN cat /etc/containers/registries.conf)"
IN sh -c 'printf "[mirrors]\nbackups = 3   # LOCAL-EDIT\n" >> /etc/rhel-node-agent/config.d/50-site.toml'

inv0=$(prop InvocationID); pid0=$(prop MainPID)
RPM -Uvh /root/rpms/r3.rpm
IN systemctl daemon-reload
if wait_for "active after upgrade" is_active && [ "$(prop InvocationID)" != "$inv0" ]; then
  pass "upgrade of a running agent restarts it (MainPID $pid0 -> $(prop MainPID))"
else
  fail "after upgrading a running agent: $(state), InvocationID $inv0 -> $(prop InvocationID)"
fi
IN test -f /etc/rhel-node-agent/config.d/50-site.toml.rpmnew && IN grep LOCAL-EDIT /etc/rhel-node-agent/config.d/50-site.toml >/dev/null \
  && pass "the edited 50-site.toml kept, the new default beside it as .rpmnew" || fail "50-site.toml after upgrade: $(IN ls /etc/rhel-node-agent/config.d)"
conf_has mirror-a.local && pass "the applied mirrors survive the upgrade" || fail "registries.conf after upgrade lost the mirror"

WANTS=/etc/systemd/system/multi-user.target.wants/rhel-node-agent.service
IN test -L $WANTS || IN systemctl enable rhel-node-agent.service 2>/dev/null
RPM -e rhel-node-agent
st=$(state)
[ "$st" != active ] && pass "erase stops the agent ($st)" || fail "after erase the agent is $st"
IN test ! -e $WANTS && IN test ! -L $WANTS && pass "erase disables the unit (the multi-user.target.wants link is gone)" \
  || fail "after erase the unit is still enabled: $(IN ls -l $WANTS)"
IN test ! -e /usr/bin/rhel-node-agent && pass "erase removes the binary" || fail "binary still there"
IN test -f /etc/rhel-node-agent/mirrors.d/10-idms.yaml && IN test -f /etc/rhel-node-agent/config.d/50-site.toml.rpmsave \
  && pass "the admin's policy and edited configuration (.rpmsave) survive the erase" || fail "admin files lost on erase"

echo "# elapsed $(( $(date +%s) - t0 ))s"
[ $FAIL -eq 0 ] || { echo "--- journal"; IN journalctl -u rhel-node-agent --no-pager | tail -25; }
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
