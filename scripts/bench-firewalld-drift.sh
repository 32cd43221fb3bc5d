#!/usr/bin/env bash
# Benchmark: how fast the agent undoes firewalld drift under real systemd (nspawn, the cached
# rootfs of tests/systemd). With firewalld.state = "disabled", N times each:
#   enable-now: `systemctl enable --now firewalld` → until it is disabled and inactive again;
#   enable:     `systemctl enable firewalld` (unit files only) → until it is disabled again.
# Each sample is timed inside the container (one process: the command, then a tight poll), from
# just before the command to the first poll that sees the declared state. Prints p50/p95/max in
# ms. Needs root; not part of scripts/test. Usage: sudo scripts/bench-firewalld-drift.sh [N]
set -uo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
BIN=${RNA_BIN:-target/release/rhel-node-agent}
[ -x "$BIN" ] || cargo build --release >/dev/null
. tests/systemd/lib.sh
W=$(mktemp -d /var/tmp/rna-fwbench.XXXXXX)
trap 'stop_container; rm -rf "$W"' EXIT
U="$W/upper"
mkdir -p "$U/etc/systemd/system/multi-user.target.wants" "$U/etc/containers" "$U/etc/rhel-node-agent/config.d"
stage_agent "$U" "$BIN"
: > "$U/etc/containers/registries.conf"
printf '[mirrors]\nreload_units = []\n[firewalld]\nstate = "disabled"\n' > "$U/etc/rhel-node-agent/config.d/50-bench.toml"
boot_container "$W" rna-fwbench >/dev/null || exit 1
settled() { [ "$(IN systemctl is-enabled firewalld.service)/$(IN systemctl is-active firewalld.service)" = disabled/inactive ]; }
for _ in $(seq 1 300); do settled && break; sleep 0.1; done
settled || { echo "firewalld never reached disabled/inactive"; exit 1; }

sample() {  # sample COMMAND: ms until disabled/inactive again (30 s cap)
  IN sh -c '
    t0=$(date +%s%N); '"$1"' >/dev/null 2>&1
    while [ "$(systemctl is-enabled firewalld.service)" != disabled ] || [ "$(systemctl is-active firewalld.service)" != inactive ]; do
      [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 30000 ] && break
    done
    echo $(( ($(date +%s%N) - t0) / 1000000 ))'
}
stats() {  # stats NAME < samples
  sort -n | awk -v name="$1" '{a[NR]=$1} END {
    p50=a[int((NR+1)*0.5)]; p95=a[int(NR*0.95+0.999)]; if (p95=="") p95=a[NR];
    printf "%-11s n=%d  p50=%d ms  p95=%d ms  max=%d ms\n", name, NR, p50, p95, a[NR] }'
}
for kind in "enable-now:systemctl enable --now firewalld.service" "enable:systemctl enable firewalld.service"; do
  name=${kind%%:*}; cmd=${kind#*:}
  for _ in $(seq 1 "$N"); do sample "$cmd"; sleep 0.3; done | stats "$name"
done
echo "drifts counted by the agent: $(IN rhel-node-agent status -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["firewalld_detail"]["drifts"])')"
