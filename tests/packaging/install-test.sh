#!/usr/bin/env bash
# Install, upgrade and erase the RPMs in throw-away roots (rpm --root, --nodeps: check-deps.sh
# checks the dependencies), once per release: the el8 RPM in a root shaped like RHEL 8 (systemctl
# only), the el9 RPM in a root shaped like RHEL 9 (systemd-update-helper). Scriptlets run chrooted
# with a static busybox as /bin/sh and stubs that record every systemctl / update-helper call.
# Proves: files, modes and owners as packaged; %config(noreplace) (.rpmnew on an upgrade whose
# default changed, .rpmsave on erase, silent replacement when untouched); admin fragments, hooks and
# policies survive upgrade and erase; the scriptlets ran with the right arguments (preset on
# install, restart-if-running on upgrade and nothing else, disable --now on erase).
#
# The upgrade packages come from tests/packaging/build-upgrades.sh ($RNA_RPM_UPGRADES, or built
# here): release 2 with the same defaults, release 3 with a changed 50-site.toml.
# usage: tests/packaging/install-test.sh [DIR]   (DIR: the RPMs of scripts/build-rpm, target/rpm)
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DIR=$(cd "${1:-target/rpm}" && pwd)
BUSYBOX=$(command -v busybox) || { echo "busybox-static is needed"; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then echo "$BUSYBOX is dynamically linked: install busybox-static"; exit 1; fi
W=$(mktemp -d /var/tmp/rna-rpm-install.XXXXXX)
trap 'rm -rf "$W"' EXIT
PASS=0; FAIL=0
pass() { PASS=$((PASS+1)); echo "[PASS] $1"; }
fail() { FAIL=$((FAIL+1)); echo "[FAIL] $1"; }
expect() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
quiet() { "$@" >/dev/null; }

# The upgrade packages (release 2: same defaults; release 3: 50-site.toml changed).
UPG=${RNA_RPM_UPGRADES:-}
if [ -z "$UPG" ]; then
  UPG=$W/upgrades
  tests/packaging/build-upgrades.sh "$UPG" >/dev/null || { echo "cannot build the upgrade packages"; exit 1; }
fi

SITE=etc/rhel-node-agent/config.d/50-site.toml
UNIT=rhel-node-agent.service
ROOT=$W/root
RPM() { rpm --root "$ROOT" --define '_dbpath /var/lib/rpm' --nodeps "$@" 2>&1 |
          grep -v -e 'should not be used directly' -e 'assuming you know what' | sed 's/^/    | /'; }
mkroot() {  # mkroot el8|el9
  rm -rf "$ROOT"; mkdir -p "$ROOT"/{bin,dev,usr/bin,usr/lib/systemd,var/log,etc}
  mknod -m 666 "$ROOT/dev/null" c 1 3   # scriptlets get no /dev under --root
  cp "$BUSYBOX" "$ROOT/bin/busybox"
  chroot "$ROOT" /bin/busybox --install -s /bin
  printf '#!/bin/sh\necho "systemctl $*" >> /var/log/systemd-calls.log\n' > "$ROOT/usr/bin/systemctl"
  chmod 755 "$ROOT/usr/bin/systemctl"
  if [ "$1" = el9 ]; then
    printf '#!/bin/sh\necho "systemd-update-helper $*" >> /var/log/systemd-calls.log\n' > "$ROOT/usr/lib/systemd/systemd-update-helper"
    chmod 755 "$ROOT/usr/lib/systemd/systemd-update-helper"
  fi
  : > "$ROOT/var/log/systemd-calls.log"
}
calls() { cat "$ROOT/var/log/systemd-calls.log"; }
calls_are() {  # calls_are WHAT EXPECTED : the stub log is exactly EXPECTED (then cleared)
  local got; got=$(calls)
  if [ "$got" = "$2" ]; then pass "$1: ${2:-no systemd calls}"; else fail "$1: expected '${2}', got '$got'"; fi
  : > "$ROOT/var/log/systemd-calls.log"
}
has() { grep -F -- "$2" "$ROOT/$1" >/dev/null 2>&1; }
q() { rpm --root "$ROOT" --define '_dbpath /var/lib/rpm' "$@" 2>/dev/null; }

# The packaged files: type+mode owner:group path (man pages, docs and licences are checked apart).
EXPECTED_FILES='-rwxr-xr-x root:root /usr/bin/rhel-node-agent
-rw-r--r-- root:root /usr/lib/systemd/system/rhel-node-agent.service
drwxr-xr-x root:root /usr/lib/rhel-node-agent
drwxr-xr-x root:root /usr/lib/rhel-node-agent/config.d
-rw-r--r-- root:root /usr/lib/rhel-node-agent/config.d/10-defaults.toml
drwxr-xr-x root:root /usr/lib/rhel-node-agent/hooks.d
drwxr-xr-x root:root /usr/lib/rhel-node-agent/hooks.d/post-upgrade.d
drwxr-xr-x root:root /usr/lib/rhel-node-agent/hooks.d/pre-cordon.d
drwxr-xr-x root:root /usr/lib/rhel-node-agent/hooks.d/pre-uncordon.d
drwxr-xr-x root:root /usr/lib/rhel-node-agent/hooks.d/pre-upgrade.d
drwxr-xr-x root:root /etc/rhel-node-agent
drwxr-xr-x root:root /etc/rhel-node-agent/config.d
-rw-r--r-- root:root /etc/rhel-node-agent/config.d/50-site.toml
drwxr-xr-x root:root /etc/rhel-node-agent/mirrors.d
drwxr-xr-x root:root /etc/rhel-node-agent/hooks.d
drwxr-xr-x root:root /etc/rhel-node-agent/hooks.d/post-upgrade.d
drwxr-xr-x root:root /etc/rhel-node-agent/hooks.d/pre-cordon.d
drwxr-xr-x root:root /etc/rhel-node-agent/hooks.d/pre-uncordon.d
drwxr-xr-x root:root /etc/rhel-node-agent/hooks.d/pre-upgrade.d
drwxr-xr-x root:root /usr/share/rhel-node-agent
-rw-r--r-- root:root /usr/share/rhel-node-agent/rbac.yaml
-rw-r--r-- root:root /usr/share/rhel-node-agent/rbac-mhc.yaml
drwxr-xr-x root:root /usr/share/rhel-node-agent/ansible
-rw-r--r-- root:root /usr/share/rhel-node-agent/ansible/pre_cordon.yml
-rw-r--r-- root:root /usr/share/rhel-node-agent/ansible/pre_upgrade.yml
-rw-r--r-- root:root /usr/share/rhel-node-agent/ansible/pre_uncordon.yml
-rw-r--r-- root:root /usr/share/rhel-node-agent/ansible/post_upgrade.yml
-rw-r--r-- root:root /usr/share/rhel-node-agent/ansible/inventory.example
-rw-r--r-- root:root /usr/share/bash-completion/completions/rhel-node-agent
-rw-r--r-- root:root /usr/share/zsh/site-functions/_rhel-node-agent
-rw-r--r-- root:root /usr/share/licenses/rhel-node-agent/LICENSE
-rw-r--r-- root:root /usr/share/licenses/rhel-node-agent/THIRD-PARTY-LICENSES
-rw-r--r-- root:root /usr/share/doc/rhel-node-agent/README.md
-rw-r--r-- root:root /usr/share/doc/rhel-node-agent/CHANGELOG.md
-rw-r--r-- root:root /usr/share/doc/rhel-node-agent/docs/hooks.md'

check_installed() {  # check_installed REL PKG
  local rel=$1 pkg=$2 line mode owner path st missing=""
  while read -r mode owner path; do
    st=$(stat -c '%A %U:%G' "$ROOT$path" 2>/dev/null || echo "absent")
    [ "$st" = "$mode $owner" ] || missing+=" [$path: $st, want $mode $owner]"
  done <<< "$EXPECTED_FILES"
  [ -z "$missing" ] && pass "$rel: $(wc -l <<< "$EXPECTED_FILES") files and directories with the listed modes and owners" \
    || fail "$rel: files:$missing"
  local pages; pages=$(q -ql "$pkg" | grep -c '^/usr/share/man/man1/rhel-node-agent.*\.1')
  [ "$pages" -ge 20 ] && pass "$rel: $pages man pages (command and subcommands)" || fail "$rel: $pages man pages"
  expect "$rel: the main man page documents the subcommands" sh -c "zcat -f $ROOT/usr/share/man/man1/rhel-node-agent.1* | grep -F 'rhel\\-node\\-agent\\-mirrors' >/dev/null"
  local cfg; cfg=$(q -qc "$pkg" | tr '\n' ' ')
  [ "$cfg" = "/etc/rhel-node-agent/config.d/50-site.toml " ] && pass "$rel: the one %config file is 50-site.toml" || fail "$rel: config files: $cfg"
  local nr; nr=$(q -q --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$pkg" | grep '50-site.toml$' | cut -d' ' -f1)
  [[ $nr == *n* ]] && pass "$rel: 50-site.toml is noreplace ($nr)" || fail "$rel: 50-site.toml flags '$nr'"
  local vr; vr=$(q -ql "$pkg" | grep -E '^/(var|run)/' | tr '\n' ' ')
  [ -z "$vr" ] && pass "$rel: nothing under /var or /run (the unit's StateDirectory=/RuntimeDirectory=)" || fail "$rel: packaged under /var or /run: $vr"
  expect "$rel: every line of the shipped 50-site.toml is a comment" sh -c "! grep -v -e '^#' -e '^\$' $ROOT/$SITE"
  expect "$rel: the installed binary runs: $("$ROOT/usr/bin/rhel-node-agent" --version 2>&1)" quiet "$ROOT/usr/bin/rhel-node-agent" --version
  expect "$rel: the installed binary accepts the installed configuration" quiet "$ROOT/usr/bin/rhel-node-agent" --root "$ROOT" config check
  expect "$rel: rpm -V is clean after install" sh -c "[ -z \"\$(rpm --root '$ROOT' --define '_dbpath /var/lib/rpm' -V --nodeps $pkg 2>&1)\" ]"
}

admin_files() {  # what an administrator adds; survives upgrade and erase
  printf '[mirrors]\nbackups = 9   # LOCAL-EDIT\n' >> "$ROOT/$SITE"
  printf '[kubernetes.drain]\ntimeout = "20m"\n' > "$ROOT/etc/rhel-node-agent/config.d/60-admin.toml"
  printf '#!/bin/sh\necho admin hook\n' > "$ROOT/etc/rhel-node-agent/hooks.d/pre-upgrade.d/10-admin"
  chmod 755 "$ROOT/etc/rhel-node-agent/hooks.d/pre-upgrade.d/10-admin"
  printf 'apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: a}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [mirror.local/ns]\n' > "$ROOT/etc/rhel-node-agent/mirrors.d/10-admin.yaml"
}
admin_files_kept() {  # admin_files_kept WHAT
  local f lost=""
  for f in etc/rhel-node-agent/config.d/60-admin.toml etc/rhel-node-agent/hooks.d/pre-upgrade.d/10-admin etc/rhel-node-agent/mirrors.d/10-admin.yaml; do
    [ -s "$ROOT/$f" ] || lost+=" $f"
  done
  [ -x "$ROOT/etc/rhel-node-agent/hooks.d/pre-upgrade.d/10-admin" ] || lost+=" (hook no longer executable)"
  [ -z "$lost" ] && pass "$1: admin fragment, hook and policy kept" || fail "$1: lost:$lost"
}

for rel in el8 el9; do
  R1=$(ls "$DIR"/rhel-node-agent-*-1."$rel".x86_64.rpm) R2=$(ls "$UPG"/r2/rhel-node-agent-*-2."$rel".x86_64.rpm) R3=$(ls "$UPG"/r3/rhel-node-agent-*-3."$rel".x86_64.rpm)
  if [ $rel = el8 ]; then
    ON_INSTALL="systemctl --no-reload preset $UNIT"; ON_UPGRADE="systemctl try-restart $UNIT"; ON_ERASE="systemctl --no-reload disable --now $UNIT"
  else
    ON_INSTALL="systemd-update-helper install-system-units $UNIT"; ON_UPGRADE="systemd-update-helper mark-restart-system-units $UNIT"; ON_ERASE="systemd-update-helper remove-system-units $UNIT"
  fi

  echo "=== $rel S1: install; admin edits; upgrade with a changed default (.rpmnew); erase (.rpmsave)"
  mkroot $rel
  RPM -ivh "$R1"
  calls_are "$rel install: scriptlet" "$ON_INSTALL"
  check_installed $rel rhel-node-agent
  admin_files
  RPM -Uvh "$R3"
  calls_are "$rel upgrade: restart only if running, nothing disabled or preset" "$ON_UPGRADE"
  expect "$rel upgrade: the edited 50-site.toml is kept" has $SITE 'LOCAL-EDIT'
  expect "$rel upgrade: the new default is written as 50-site.toml.rpmnew" has $SITE.rpmnew 'added in release 3'
  admin_files_kept "$rel upgrade"
  expect "$rel upgrade: release 3 installed" sh -c "rpm --root '$ROOT' --define '_dbpath /var/lib/rpm' -q rhel-node-agent | grep -- '-3.$rel' >/dev/null"
  expect "$rel upgrade: the admin's configuration is still valid" quiet "$ROOT/usr/bin/rhel-node-agent" --root "$ROOT" config check
  RPM -e rhel-node-agent
  calls_are "$rel erase: scriptlet" "$ON_ERASE"
  expect "$rel erase: the edited 50-site.toml is saved as .rpmsave" has $SITE.rpmsave 'LOCAL-EDIT'
  admin_files_kept "$rel erase"
  expect "$rel erase: binary, unit and vendor defaults removed" sh -c "[ ! -e '$ROOT/usr/bin/rhel-node-agent' ] && [ ! -e '$ROOT/usr/lib/systemd/system/$UNIT' ] && [ ! -e '$ROOT/usr/lib/rhel-node-agent' ]"
  expect "$rel erase: empty package directories removed" sh -c "[ ! -e '$ROOT/etc/rhel-node-agent/hooks.d/pre-cordon.d' ]"

  echo "=== $rel S2: untouched configuration, changed default: replaced silently"
  mkroot $rel
  RPM -ivh "$R1" >/dev/null; : > "$ROOT/var/log/systemd-calls.log"
  RPM -Uvh "$R3"
  expect "$rel: untouched 50-site.toml replaced by the new default" has $SITE 'added in release 3'
  expect "$rel: no .rpmnew" test ! -e "$ROOT/$SITE.rpmnew"

  echo "=== $rel S3: edited configuration, unchanged default: kept, no .rpmnew"
  mkroot $rel
  RPM -ivh "$R1" >/dev/null
  admin_files
  : > "$ROOT/var/log/systemd-calls.log"
  RPM -Uvh "$R2"
  calls_are "$rel upgrade (same defaults): scriptlet" "$ON_UPGRADE"
  expect "$rel: edit kept" has $SITE 'LOCAL-EDIT'
  expect "$rel: no .rpmnew when the default did not change" test ! -e "$ROOT/$SITE.rpmnew"
  admin_files_kept "$rel upgrade (same defaults)"
done
echo "install-test: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
