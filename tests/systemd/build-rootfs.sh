#!/usr/bin/env bash
# Build (once) the bootable Debian 12 rootfs the systemd tests boot with systemd-nspawn: systemd as
# PID 1, dbus, firewalld + nftables (for the firewalld tests), netbase (firewalld needs
# /etc/protocols), rpm (the installed-package test installs the RPM inside). Cached by version
# under $RNA_TEST_CACHE; prints the rootfs path.
# Needs root; installs systemd-container (pinned to the host's systemd version) and debootstrap.
set -euo pipefail
CACHE=${RNA_TEST_CACHE:-/var/cache/rhel-node-agent-test}
VERSION=v2
OUT="$CACHE/rootfs-bookworm-$VERSION"
if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
# One builder at a time (parallel test runs share the cache).
mkdir -p "$CACHE"
exec 9>"$CACHE/.rootfs.lock"
flock 9
if [ -f "$OUT/.complete" ]; then echo "$OUT"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
SDV=$(dpkg-query -W -f='${Version}' systemd 2>/dev/null || true)
need=()
command -v systemd-nspawn >/dev/null || need+=("systemd-container${SDV:+=$SDV}")
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || apt-get update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${need[@]}" >&2
fi
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
rm -rf "$OUT.tmp"; mkdir -p "$(dirname "$OUT")"
debootstrap --variant=minbase --include=systemd,dbus,systemd-sysv bookworm "$OUT.tmp" "$MIRROR" >&2
systemd-nspawn -q -D "$OUT.tmp" --register=no --keep-unit -E DEBIAN_FRONTEND=noninteractive sh -c \
  'apt-get update -qq && apt-get install -y -qq --no-install-recommends firewalld nftables netbase iproute2 procps rpm >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*' >&2
# A quiet test target: no getty, no apt timers, fixed hostname, a fresh machine-id per boot.
rm -f "$OUT.tmp/etc/systemd/system/getty.target.wants/"* 2>/dev/null || true
ln -sf /dev/null "$OUT.tmp/etc/systemd/system/console-getty.service"
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer dpkg-db-backup.timer fstrim.timer; do
  ln -sf /dev/null "$OUT.tmp/etc/systemd/system/$u"
done
echo rna-test > "$OUT.tmp/etc/hostname"
: > "$OUT.tmp/etc/machine-id"
touch "$OUT.tmp/.complete"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
