# Shared helpers of the systemd tests: boot real systemd as PID 1 in systemd-nspawn on an overlay of
# the cached rootfs (tests/systemd/build-rootfs.sh), with its own network namespace and its system
# bus exposed to the host. Source it; then `boot_container W NAME` (files staged under $W/upper appear
# in the container), `IN cmd...` runs a command inside, `$BUS` is the container's bus address, and
# `stop_container` powers it off. Needs root.

PASS=0; FAIL=0
pass() { PASS=$((PASS+1)); echo "[PASS] $1"; }
fail() { FAIL=$((FAIL+1)); echo "[FAIL] $1"; }
wait_for() {  # wait_for DESCRIPTION COMMAND...   (up to 10 s)
  local what=$1; shift
  for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "  timed out: $what"; return 1
}

# make_workdir NAME: $W, a scratch directory under /var/tmp that is removed on exit, with the
# container stopped first (KEEP=1 keeps it). A script with more to undo defines before_cleanup.
make_workdir() {
  W=$(mktemp -d "/var/tmp/rna-$1.XXXXXX")
  trap cleanup_workdir EXIT
}
cleanup_workdir() {
  if declare -F before_cleanup >/dev/null; then before_cleanup; fi
  stop_container
  [ "${KEEP:-0}" = 1 ] && { echo "kept $W"; return; }
  rm -rf "$W"
}

boot_container() {  # boot_container W NAME
  local W=$1 NAME=$2 ROOTFS st
  ROOTFS=$(tests/systemd/build-rootfs.sh) || { echo "cannot build the rootfs"; return 1; }
  mkdir -p "$W/dbus" "$W/upper" "$W/work" "$W/merged"
  unshare --mount --propagation private sh -c '
    mount -t overlay overlay -o "lowerdir=$0,upperdir=$1/upper,workdir=$1/work" "$1/merged"
    exec systemd-nspawn --boot --directory="$1/merged" --machine="$2" --register=no --keep-unit \
        --private-network --bind="$1/dbus:/run/dbus" --console=read-only
  ' "$ROOTFS" "$W" "$NAME" > "$W/console.log" 2>&1 &
  NSPAWN=$!
  BUS="unix:path=$W/dbus/system_bus_socket"
  local MGR="org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager"
  for _ in $(seq 1 600); do
    st=$(busctl --address="$BUS" get-property $MGR SystemState 2>/dev/null || true)
    case "$st" in *running*|*degraded*) break;; esac
    kill -0 "$NSPAWN" 2>/dev/null || { echo "nspawn died:"; cat "$W/console.log"; return 1; }
    sleep 0.1
  done
  LEADER=$(ps -o pid= --ppid "$NSPAWN" | tr -d ' ' | head -n1)
  echo "# container $NAME up ($st)"
}

IN() { nsenter --target "$LEADER" --all env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

stop_container() {
  if [ -n "${NSPAWN:-}" ]; then kill -TERM "$NSPAWN" 2>/dev/null; wait "$NSPAWN" 2>/dev/null; NSPAWN=""; fi
}

# The agent as the package installs it: the binary, the shipped unit, enabled at boot.
stage_agent() {  # stage_agent UPPER_DIR BINARY
  mkdir -p "$1/etc/systemd/system/multi-user.target.wants"
  install -D -m 0755 "$2" "$1/usr/bin/rhel-node-agent"
  install -D -m 0644 systemd/rhel-node-agent.service "$1/etc/systemd/system/rhel-node-agent.service"
  ln -sf ../rhel-node-agent.service "$1/etc/systemd/system/multi-user.target.wants/rhel-node-agent.service"
}

# A stand-in crio.service that records reloads in /var/log/crio-reloads and, when
# /etc/crio-fail-reload exists, dies during the reload (as a CRI-O rejecting its configuration).
stage_crio() {  # stage_crio UPPER_DIR
  mkdir -p "$1/etc/systemd/system/multi-user.target.wants"
  cat > "$1/etc/systemd/system/crio.service" <<'UNIT'
[Unit]
Description=stand-in for CRI-O that records reloads
[Service]
Type=simple
ExecStart=/bin/sleep infinity
ExecReload=/bin/sh -c 'echo reload >> /var/log/crio-reloads; if [ -e /etc/crio-fail-reload ]; then kill -9 $MAINPID; fi'
Restart=no
[Install]
WantedBy=multi-user.target
UNIT
  ln -sf ../crio.service "$1/etc/systemd/system/multi-user.target.wants/crio.service"
}
reloads_are() { [ "$(reloads)" = "$1" ]; }
reloads() { IN sh -c 'test -f /var/log/crio-reloads && wc -l < /var/log/crio-reloads || echo 0' | tr -d ' '; }

# An IDMS for quay.io/ns with one mirror, as policy YAML on stdout.
idms_yaml() {
  printf 'apiVersion: config.openshift.io/v1\nkind: ImageDigestMirrorSet\nmetadata: {name: d}\nspec:\n  imageDigestMirrors:\n  - source: quay.io/ns\n    mirrors: [%s]\n' "$1"
}
