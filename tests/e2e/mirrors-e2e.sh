#!/usr/bin/env bash
# End-to-end test of `rhel-node-agent mirrors apply`: OpenShift ICSP / IDMS / ITMS (+ Image
# cluster object) -> /etc/containers/registries.conf, verified with a real containers/image
# client (skopeo) against real registries (docker-registry), all on loopback.
#
#   sudo tests/e2e/mirrors-e2e.sh
#
# Environment:
#   RNA_BIN=path          binary under test (default target/debug/rhel-node-agent, relative to repo root)
#   KEEP=1                keep the work dir (logs, rendered configs, registry logs) and print its path
#   E2E_SELFTEST=1        do NOT call the agent: write the expected registries.conf by hand
#                         (validates the environment and the assertions)
#   E2E_POLICIES_AS=files|dir
#                         files (default): one --policies FILE per YAML; dir: one --policies DIR per case.
#   RNA_MODE=in-place     value of --mode (set RNA_MODE= to not pass --mode at all)
#
# Isolation: the script re-runs itself under `unshare --net --mount --pid` (only `lo`, private mounts,
# every process dies with the namespace). /etc/containers is a bind mount of a temp dir, /var/lib,
# /var/tmp and /run are tmpfs, HOME/TMPDIR/XDG_RUNTIME_DIR point into the temp work dir.
# Registries: 127.0.0.1:5002 source (empty), :5001 mirror, :5004 mirror2, :5003 dead.
#
# The registries are plain HTTP. Every policy set includes the Image "cluster" object with
# spec.registrySources.insecureRegistries = all four hosts, and the agent must render that as
# `insecure = true` ON EACH [[registry.mirror]] in those scopes (OpenShift MCO behaviour).
# A host-level `[[registry]] location = "127.0.0.1:5001" insecure = true` is NOT enough: in
# containers/image 5.23 a mirror endpoint uses only its own `insecure` flag (checked on this
# machine: "server gave HTTP response to HTTPS client" for the mirror despite the host entry).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

# =============================================================================== outer (host side)
if [ "${1:-}" != "--inner" ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "mirrors-e2e: needs root: sudo $0" >&2; exit 2; fi
  pkgs=()
  command -v skopeo >/dev/null 2>&1 || pkgs+=(skopeo)
  command -v docker-registry >/dev/null 2>&1 || pkgs+=(docker-registry)
  command -v curl >/dev/null 2>&1 || pkgs+=(curl)
  command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
  command -v unshare >/dev/null 2>&1 || pkgs+=(util-linux)
  if [ ${#pkgs[@]} -gt 0 ]; then
    echo "mirrors-e2e: installing ${pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update && apt-get install -y "${pkgs[@]}"; } >&2 || { echo "mirrors-e2e: apt-get failed" >&2; exit 2; }
  fi
  [ -d /etc/containers ] || { echo "mirrors-e2e: /etc/containers missing (containers-common not installed?)" >&2; exit 2; }

  cd "$REPO" || exit 2
  T0=$(date +%s.%N)
  BIN=${RNA_BIN:-target/debug/rhel-node-agent}
  case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
  if [ "${E2E_SELFTEST:-0}" != 1 ]; then
    pre=""
    if [ ! -x "$BIN" ]; then
      pre="$BIN is missing or not executable (build it, or run with E2E_SELFTEST=1)"
    elif ! help=$(timeout 10 "$BIN" mirrors apply --help 2>&1) || ! grep -q -- '--registries-conf' <<<"$help"; then
      pre="'$BIN mirrors apply --help' does not work or does not mention --registries-conf: $(head -c 300 <<<"$help" | tr '\n' ' ')"
    fi
    if [ -n "$pre" ]; then echo "[FAIL] preflight: $pre"; echo "0 passed, 1 failed"; exit 1; fi
  fi

  W=$(mktemp -d /tmp/rna-mirrors-e2e.XXXXXX) || exit 2
  if [ "${KEEP:-0}" = 1 ]; then echo "# work dir (KEEP=1): $W"; fi
  cleanup_outer() { [ "${KEEP:-0}" = 1 ] || rm -rf "$W"; }
  trap cleanup_outer EXIT
  export E2E_W=$W E2E_BIN=$BIN E2E_T0=$T0 E2E_REPO=$REPO
  # --kill-child + --pid: if unshare dies, the inner shell (PID 1 of the new PID namespace) is
  # SIGKILLed and the kernel kills every process left in that namespace (registries, skopeo, agent).
  unshare --net --mount --pid --mount-proc --propagation private --kill-child \
    bash "$HERE/mirrors-e2e.sh" --inner &
  upid=$!
  trap 'kill -KILL "$upid" 2>/dev/null; wait "$upid" 2>/dev/null; echo "mirrors-e2e: interrupted" >&2; exit 130' INT TERM HUP
  wait "$upid"
  exit $?
fi

# =============================================================================== inner (namespaces)
W=$E2E_W BIN=$E2E_BIN
SELFTEST=${E2E_SELFTEST:-0}
POLICIES_AS=${E2E_POLICIES_AS:-files}
MODE=${RNA_MODE-in-place}
cd "$E2E_REPO" || exit 2

PASS=0 FAIL=0
PIDS=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2fs", b-a}'; }
inner_cleanup() {
  local p i
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for i in $(seq 30); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap inner_cleanup EXIT
trap 'exit 130' INT TERM

finish() {
  echo "# elapsed $(since "$E2E_T0")"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" -eq 0 ] && exit 0 || exit 1
}
setup_fail() { # reason [file-to-show]
  FAIL=$((FAIL+1))
  echo "[FAIL] setup: $1"
  [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2" | sed 's/^/    /'
  finish
}

# ------------------------------------------------------------------ isolation
ip link set lo up || setup_fail "ip link set lo up"
mkdir -p "$W"/{etc-containers/registries.conf.d,host-etc-containers,home,tmp,xdg,data,cfg,logs,cases,policies,root,out}
# read-only view of the host's /etc/containers, to prove at the end that it was not touched
mount --bind /etc/containers "$W/host-etc-containers" && mount -o remount,bind,ro "$W/host-etc-containers" ||
  setup_fail "bind-mount host /etc/containers read-only"
tree_sum() { (cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 -r sh -c 'for f; do if [ -f "$f" ]; then sha256sum "$f"; else echo "dir/other $f"; fi; done' x) | sha256sum | cut -c1-16; }
HOST_ETC_SUM0=$(tree_sum "$W/host-etc-containers")
VERSIONS="$(skopeo --version); docker-registry $(dpkg-query -W -f='${Version}' docker-registry 2>/dev/null)"   # before /var/lib is hidden
# skopeo (root) writes its blob-info cache under /var/lib/containers; the agent must keep its
# state under --root. A fresh tmpfs on /var/lib (this namespace only) catches both.
for d in /var/lib /var/tmp /run; do mount -t tmpfs -o mode=0755 tmpfs "$d" || setup_fail "mount tmpfs on $d"; done

printf '{"default":[{"type":"insecureAcceptAnything"}]}\n' > "$W/etc-containers/policy.json"
# the node's base registries.conf (admin-owned content the agent must preserve byte-for-byte)
{
  echo '# /etc/containers/registries.conf -- base file written by tests/e2e/mirrors-e2e.sh'
  echo 'unqualified-search-registries = []'
  echo 'short-name-mode = "enforcing"'
  echo
  echo '# admin: an unrelated entry the agent must keep as-is'
  echo '[[registry]]'
  echo 'location = "registry.example.invalid/admin"'
  echo 'insecure = false   # trailing comment'
} > "$W/etc-containers/registries.conf"
cp -p "$W/etc-containers/registries.conf" "$W/base-registries.conf"
mount --bind "$W/etc-containers" /etc/containers || setup_fail "bind-mount over /etc/containers"

export HOME=$W/home TMPDIR=$W/tmp XDG_RUNTIME_DIR=$W/xdg
unset XDG_CONFIG_HOME XDG_DATA_HOME REGISTRY_AUTH_FILE DOCKER_CONFIG CONTAINERS_REGISTRIES_CONF \
      CONTAINERS_CONF CONTAINERS_STORAGE_CONF http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY

REGCONF=/etc/containers/registries.conf
DROPIN=/etc/containers/registries.conf.d
SRC=127.0.0.1:5002/ubi8/ubi-minimal
M1=127.0.0.1:5001/mirror/ubi-minimal
M2=127.0.0.1:5004/mirror2/ubi-minimal
DEAD=127.0.0.1:5003/dead/ubi-minimal
INSECURE_HOSTS=(127.0.0.1:5001 127.0.0.1:5004 127.0.0.1:5002 127.0.0.1:5003)

if [ "$SELFTEST" = 1 ]; then echo "# mode: SELFTEST (agent NOT called; expected registries.conf written by hand)"
else echo "# mode: agent $BIN ($(timeout 10 "$BIN" --version 2>/dev/null | head -1))"; fi
echo "# policies as: $POLICIES_AS; --mode: ${MODE:-<not passed>}; $VERSIONS"

# ------------------------------------------------------------------ image + registries
DIGEST=$("$HERE/make-oci-image.sh" "$W/oci" 8.10 "hello from the e2e mirror" 2>"$W/logs/make-oci-image.log") ||
  setup_fail "make-oci-image.sh failed" "$W/logs/make-oci-image.log"

start_registry() { # name addr
  mkdir -p "$W/data/$1"
  cat > "$W/cfg/$1.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $W/data/$1
  delete:
    enabled: true
http:
  addr: $2
  secret: e2e-not-a-secret
EOF
  docker-registry serve "$W/cfg/$1.yml" > "$W/logs/$1.log" 2>&1 < /dev/null &
  PIDS+=($!)
}
ts=$(now)
start_registry mirror  127.0.0.1:5001
start_registry source  127.0.0.1:5002
start_registry mirror2 127.0.0.1:5004
for r in mirror:5001 source:5002 mirror2:5004; do
  ok=0
  for i in $(seq 100); do
    curl -fs --max-time 2 "http://127.0.0.1:${r#*:}/v2/" >/dev/null && { ok=1; break; }
    sleep 0.1
  done
  [ $ok = 1 ] || setup_fail "registry ${r%%:*} (127.0.0.1:${r#*:}) did not come up" "$W/logs/${r%%:*}.log"
done
if curl -s --max-time 2 http://127.0.0.1:5003/v2/ >/dev/null 2>&1; then setup_fail "127.0.0.1:5003 should be dead but answers"; fi
echo "# registries up in $(since "$ts"): 5002 source (empty), 5001 mirror, 5004 mirror2; 5003 dead"

ts=$(now)
timeout 30 skopeo copy -q "oci:$W/oci:8.10" docker://$M1:8.10 --dest-tls-verify=false > "$W/logs/push-5001.log" 2>&1 ||
  setup_fail "push to $M1 failed" "$W/logs/push-5001.log"
timeout 30 skopeo copy -q "oci:$W/oci:8.10" docker://$M2:8.10 --dest-tls-verify=false > "$W/logs/push-5004.log" 2>&1 ||
  setup_fail "push to $M2 failed" "$W/logs/push-5004.log"
ACCEPT='application/vnd.oci.image.manifest.v1+json'
for u in 127.0.0.1:5001/v2/mirror/ubi-minimal 127.0.0.1:5004/v2/mirror2/ubi-minimal; do
  got=$(curl -fsI --max-time 5 -H "Accept: $ACCEPT" "http://$u/manifests/8.10" | tr -d '\r' | awk -F': ' 'tolower($1)=="docker-content-digest"{print $2}')
  [ "$got" = "$DIGEST" ] || setup_fail "digest on $u is '$got', expected $DIGEST"
done
cat5002=$(curl -fs --max-time 5 http://127.0.0.1:5002/v2/_catalog)
[ "$cat5002" = '{"repositories":[]}' ] || setup_fail "source 5002 is not empty: $cat5002"
echo "# image $DIGEST pushed to $M1:8.10 and $M2:8.10 in $(since "$ts"); 5002 catalog $cat5002"

# ------------------------------------------------------------------ policies
# write_mirrorset KIND FILE NAME SOURCE MIRROR_SOURCE_POLICY MIRROR...
#   KIND: ICSP | IDMS | ITMS. Also writes $(expected_of FILE): what the agent is expected to render
#   (OpenShift MCO style), used only by E2E_SELFTEST=1.
write_mirrorset() {
  local kind=$1 f=$2 name=$3 src=$4 pol=$5 api=config.openshift.io/v1 k key m
  shift 5
  case $kind in
    ICSP) api=operator.openshift.io/v1alpha1; k=ImageContentSourcePolicy; key=repositoryDigestMirrors ;;
    IDMS) k=ImageDigestMirrorSet; key=imageDigestMirrors ;;
    ITMS) k=ImageTagMirrorSet; key=imageTagMirrors ;;
  esac
  {
    printf 'apiVersion: %s\nkind: %s\nmetadata:\n  name: %s\nspec:\n  %s:\n  - source: "%s"\n    mirrors:\n' "$api" "$k" "$name" "$key" "$src"
    for m; do printf '    - "%s"\n' "$m"; done
    [ -n "$pol" ] && printf '    mirrorSourcePolicy: %s\n' "$pol"
  } > "$f"
  {
    printf '\n[[registry]]\nprefix = ""\nlocation = "%s"\n' "$src"
    [ "$kind" = ICSP ] && echo 'mirror-by-digest-only = true'
    [ "$pol" = NeverContactSource ] && echo 'blocked = true'
    echo 'insecure = true'
    for m; do
      printf '[[registry.mirror]]\nlocation = "%s"\n' "$m"
      echo 'insecure = true'
      [ "$kind" = IDMS ] && echo 'pull-from-mirror = "digest-only"'
      [ "$kind" = ITMS ] && echo 'pull-from-mirror = "tag-only"'
    done
  } > "$(expected_of "$f")"
}
# write_image DIR: the Image "cluster" object marking all test registries insecure
write_image() {
  local h
  {
    printf 'apiVersion: config.openshift.io/v1\nkind: Image\nmetadata:\n  name: cluster\nspec:\n  registrySources:\n    insecureRegistries:\n'
    for h in "${INSECURE_HOSTS[@]}"; do printf '    - "%s"\n' "$h"; done
  } > "$1/00-image-cluster.yaml"
  { for h in "${INSECURE_HOSTS[@]}"; do printf '\n[[registry]]\nprefix = ""\nlocation = "%s"\ninsecure = true\n' "$h"; done; } \
    > "$(expected_of "$1/00-image-cluster.yaml")"
}
expected_of() { local e=$W/expected/${1#"$W"/policies/}.toml; mkdir -p "${e%/*}"; printf '%s' "$e"; }
policy_files() { ls -1 "$1"/*.yaml 2>/dev/null | LC_ALL=C sort; }

# ------------------------------------------------------------------ agent invocation
# selftest_apply [--dry-run] POLICY_PATH...: render base + expected fragments, write only on change
selftest_apply() {
  local dry=0 p f tmp=$W/tmp/selftest-render.conf
  [ "${1:-}" = --dry-run ] && { dry=1; shift; }
  cp "$W/base-registries.conf" "$tmp"
  for p; do
    if [ -d "$p" ]; then for f in $(policy_files "$p"); do cat "$(expected_of "$f")" >> "$tmp"; done
    else cat "$(expected_of "$p")" >> "$tmp"; fi
  done
  if [ $dry = 1 ]; then diff -u "$REGCONF" "$tmp"; return 0; fi
  cmp -s "$tmp" "$REGCONF" || cp "$tmp" "$REGCONF"
}
APPLY_N=0
# agent_apply [--dry-run] [POLICY_DIR]: apply the policies of DIR (none = remove everything).
# Sets APPLY_RC, APPLY_OUT, APPLY_ERR, APPLY_CMD.
agent_apply() {
  local dry=() f args=()
  [ "${1:-}" = --dry-run ] && { dry=(--dry-run); shift; }
  if [ -n "${1:-}" ]; then
    if [ "$POLICIES_AS" = dir ]; then args=(--policies "$1")
    else for f in $(policy_files "$1"); do args+=(--policies "$f"); done; fi
  fi
  APPLY_N=$((APPLY_N+1))
  APPLY_OUT=$W/cases/$CASE.apply$APPLY_N.out APPLY_ERR=$W/cases/$CASE.apply$APPLY_N.err
  if [ "$SELFTEST" = 1 ]; then
    APPLY_CMD="selftest_apply ${dry[*]} ${args[*]}"
    local paths=() i
    for ((i=1; i<${#args[@]}; i+=2)); do paths+=("${args[$i]}"); done
    selftest_apply "${dry[@]}" "${paths[@]}" > "$APPLY_OUT" 2> "$APPLY_ERR"; APPLY_RC=$?
  else
    local cmd=("$BIN" --root "$W/root" mirrors apply --registries-conf "$REGCONF" --dropin-dir "$DROPIN")
    [ -n "$MODE" ] && cmd+=(--mode "$MODE")
    cmd+=("${args[@]}" "${dry[@]}")
    APPLY_CMD="${cmd[*]}"
    timeout 30 "${cmd[@]}" > "$APPLY_OUT" 2> "$APPLY_ERR"; APPLY_RC=$?
  fi
  printf '%s\n' "$APPLY_CMD" > "$W/cases/$CASE.apply$APPLY_N.cmd"
  printf '%s\n' "$APPLY_RC" > "$W/cases/$CASE.apply$APPLY_N.rc"
  rendered > "$W/cases/$CASE.apply$APPLY_N.rendered"
  CASE_APPLIES+=("$APPLY_N")
}
# the effective input of containers/image: main file + drop-ins in load order
rendered() {
  local f
  cat "$REGCONF"
  for f in "$DROPIN"/*.conf; do [ -e "$f" ] && { echo "# ---- drop-in $f"; cat "$f"; }; done
}

# ------------------------------------------------------------------ skopeo + log helpers
SK_N=0
sk() { # sk ARGS... (runs skopeo --debug, node layout: no --registries-conf). Sets SK_RC, SK_LOG.
  SK_N=$((SK_N+1)); SK_LOG=$W/cases/$CASE.skopeo$SK_N.log
  printf '+ skopeo --debug %s\n' "$*" > "$SK_LOG"
  timeout 30 skopeo --debug "$@" >> "$SK_LOG" 2>&1; SK_RC=$?
  CASE_LOGS+=("$SK_LOG")
  sleep 0.2   # the registries write the access-log line after the response has been sent
}
re() { local s=${1//./\\.}; printf '%s' "$s"; }
tried_re() { printf 'Trying to access \\\\?"%s' "$(re "$1")"; }  # matches the escaped and the raw form
log_has()  { grep -qE -- "$2" "$1"; }
log_lacks() { ! grep -qE -- "$2" "$1"; }
first_line() { grep -nE -- "$2" "$1" | head -1 | cut -d: -f1; }
declare -A MARK
mark_logs() { local r; for r in mirror source mirror2; do MARK[$r]=$(wc -l < "$W/logs/$r.log"); done; }
reg_new() { tail -n +"$((MARK[$1]+1))" "$W/logs/$1.log" | grep -F '/v2/'; }   # requests since mark_logs
reg_got()   { reg_new "$1" | grep -E -- "$2" >/dev/null; }
reg_lacks() { ! reg_new "$1" | grep -E -- "$2" >/dev/null; }
reg_silent() { [ -z "$(reg_new "$1")" ]; }
reg_show() { reg_new "$1" | sed -E 's/^.*"((GET|HEAD|PUT|POST|PATCH|DELETE) [^"]*)".*$/\1/; s/^.*http\.request\.uri="([^"]*)".*$/uri \1/' | sort | uniq -c | head -5 | tr -s ' ' | paste -sd';' -; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
file_digest_is() { [ -f "$1" ] && [ "sha256:$(sha_of "$1")" = "$2" ]; }
lt() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" -lt "$2" ]; }
changed_from_base() { ! cmp -s "$W/base-registries.conf" "$REGCONF" || [ -n "$(dropin_state)" ]; }
mtime() { stat -c '%y inode=%i' "$1"; }
dropin_state() { (cd "$DROPIN" && find . -mindepth 1 -printf '%p %s %T@\n' | LC_ALL=C sort); }

# ------------------------------------------------------------------ case framework
begin_case() { CASE=$1; REASONS=(); CASE_LOGS=(); CASE_APPLIES=(); CASE_TS=$(now); mark_logs; }
check() { local why=$1; shift; "$@" || REASONS+=("$why"); }
end_case() {
  local n l
  if [ ${#REASONS[@]} -eq 0 ]; then
    PASS=$((PASS+1)); echo "[PASS] $CASE ($(since "$CASE_TS"))"; return
  fi
  FAIL=$((FAIL+1))
  local msg; msg=$(printf '%s; ' "${REASONS[@]}"); echo "[FAIL] $CASE: ${msg%; }"
  for n in "${CASE_APPLIES[@]}"; do
    echo "    --- apply #$n exited $(cat "$W/cases/$CASE.apply$n.rc"): $(cat "$W/cases/$CASE.apply$n.cmd")"
    echo "    --- its stdout (out|) and stderr (err|), first 15 lines each:"
    [ -s "$W/cases/$CASE.apply$n.out" ] && head -n 15 "$W/cases/$CASE.apply$n.out" | sed 's/^/    out| /'
    [ -s "$W/cases/$CASE.apply$n.err" ] && head -n 15 "$W/cases/$CASE.apply$n.err" | sed 's/^/    err| /'
  done
  echo "    --- rendered $REGCONF (+ drop-ins) now:"
  rendered | head -n 80 | sed 's/^/    | /'
  for l in "${CASE_LOGS[@]}"; do
    echo "    --- $(head -1 "$l")"
    grep -E 'Loading registries configuration|Trying to access|is blocked|level=fatal|level=error|Failed to decode|^Error|Mirrors also failed' "$l" |
      sed -E 's/^time="[^"]*" //' | cut -c1-260 | head -n 20 | sed 's/^/    log| /'
  done
}

echo "# setup done in $(since "$E2E_T0")"
P=$W/policies

# ================================================================== 1. ICSP digest pull via mirror
begin_case 1-icsp-digest-pull-via-mirror
mkdir -p "$P/icsp"
write_mirrorset ICSP "$P/icsp/10-icsp.yaml" e2e-icsp "$SRC" "" "$M1"
write_image "$P/icsp"
agent_apply "$P/icsp"
check "mirrors apply exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
sk inspect --no-tags "docker://$SRC@$DIGEST"
check "skopeo inspect exited $SK_RC (expected 0)" [ "$SK_RC" -eq 0 ]
check "debug log has no 'Trying to access \"$M1@'" log_has "$SK_LOG" "$(tried_re "$M1@")"
check "digest inspected is not $DIGEST" log_has "$SK_LOG" "\"Digest\": \"$DIGEST\""
check "5001 access log has no manifest GET for $DIGEST (5001: $(reg_show mirror))" \
  reg_got mirror "\"GET /v2/mirror/ubi-minimal/manifests/$DIGEST "
check "source 5002 was contacted ($(reg_show source))" reg_silent source
rm -rf "$W/out/copy1"
sk copy "docker://$SRC@$DIGEST" "dir:$W/out/copy1"
check "skopeo copy exited $SK_RC (expected 0)" [ "$SK_RC" -eq 0 ]
check "copied manifest.json does not hash to $DIGEST" file_digest_is "$W/out/copy1/manifest.json" "$DIGEST"
end_case
if [ "$SELFTEST" != 1 ]; then
  timeout 30 "$BIN" --root "$W/root" mirrors effective --registries-conf "$REGCONF" --dropin-dir "$DROPIN" \
    > "$W/cases/effective.out" 2> "$W/cases/effective.err"
  echo "[INFO] mirrors effective: exit $? ($(wc -l < "$W/cases/effective.out") lines on stdout; $( (grep -qF "$M1" "$W/cases/effective.out" && echo "mentions $M1") || echo "does NOT mention $M1"))"
fi

# ================================================================== 2. ICSP tag pull refused
begin_case 2-icsp-tag-pull-refused-digest-only
check "precondition: the ICSP of case 1 is not in effect (no $M1 in the rendered config)" grep -qF "$M1" <(rendered)
sk inspect --no-tags "docker://$SRC:8.10"
check "tag pull succeeded (exit 0), expected a refusal" [ "$SK_RC" -ne 0 ]
check "the mirror 127.0.0.1:5001 was tried for a tag pull" log_lacks "$SK_LOG" "$(tried_re 127.0.0.1:5001)"
check "5001 served a manifest for the tag ($(reg_show mirror))" reg_lacks mirror '/manifests/8\.10'
end_case

# ================================================================== 3. ITMS tag pull via mirror
begin_case 3-itms-tag-pull-via-mirror
mkdir -p "$P/itms"
write_mirrorset ITMS "$P/itms/10-itms.yaml" e2e-itms "$SRC" "" "$M1"
write_image "$P/itms"
agent_apply "$P/itms"
check "mirrors apply exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
sk inspect --no-tags "docker://$SRC:8.10"
check "skopeo inspect exited $SK_RC (expected 0)" [ "$SK_RC" -eq 0 ]
check "debug log has no 'Trying to access \"$M1:8.10'" log_has "$SK_LOG" "$(tried_re "$M1:8.10")"
check "5001 access log has no manifest GET for tag 8.10 (5001: $(reg_show mirror))" \
  reg_got mirror '"GET /v2/mirror/ubi-minimal/manifests/8\.10 '
end_case

# ================================================================== 4. IDMS NeverContactSource
begin_case 4-idms-never-contact-source
mkdir -p "$P/idms-never"
write_mirrorset IDMS "$P/idms-never/10-idms.yaml" e2e-idms-never "$SRC" NeverContactSource "$M1"
write_image "$P/idms-never"
agent_apply "$P/idms-never"
check "mirrors apply exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
mark_logs
sk inspect --no-tags "docker://$SRC@$DIGEST"
check "digest pull exited $SK_RC (expected 0)" [ "$SK_RC" -eq 0 ]
check "digest pull: no 'Trying to access \"$M1@'" log_has "$SK_LOG" "$(tried_re "$M1@")"
check "digest pull: 5001 has no manifest GET ($(reg_show mirror))" reg_got mirror "\"GET /v2/mirror/ubi-minimal/manifests/$DIGEST "
check "digest pull: source 5002 got requests ($(reg_show source))" reg_silent source
mark_logs
sk inspect --no-tags "docker://$SRC:8.10"
check "tag pull exited 0, expected failure (source must be blocked)" [ "$SK_RC" -ne 0 ]
check "tag pull: source 5002 got requests ($(reg_show source))" reg_silent source
check "tag pull: error does not say the source is blocked" log_has "$SK_LOG" 'is blocked'
end_case

# ================================================================== 5. failover between mirrors
begin_case 5-idms-failover-dead-mirror-then-second
mkdir -p "$P/failover"
write_mirrorset IDMS "$P/failover/10-idms.yaml" e2e-idms-failover "$SRC" "" "$DEAD" "$M2"
write_image "$P/failover"
agent_apply "$P/failover"
check "mirrors apply exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
r=$(rendered)
l3=$(grep -nF "$DEAD" <<<"$r" | head -1 | cut -d: -f1); l4=$(grep -nF "$M2" <<<"$r" | head -1 | cut -d: -f1)
check "rendered config does not list $DEAD (line ${l3:-none}) before $M2 (line ${l4:-none})" lt "$l3" "$l4"
sk inspect --no-tags "docker://$SRC@$DIGEST"
check "digest pull exited $SK_RC (expected 0)" [ "$SK_RC" -eq 0 ]
t3=$(first_line "$SK_LOG" "$(tried_re "$DEAD@")"); t4=$(first_line "$SK_LOG" "$(tried_re "$M2@")")
check "debug log: dead mirror 5003 tried at line ${t3:-never}, 5004 at line ${t4:-never} (expected 5003 first)" lt "$t3" "$t4"
check "5004 access log has no manifest GET for $DIGEST (5004: $(reg_show mirror2))" \
  reg_got mirror2 "\"GET /v2/mirror2/ubi-minimal/manifests/$DIGEST "
check "source 5002 was contacted although a mirror served the image ($(reg_show source))" reg_silent source
end_case

# ================================================================== 6. removal restores the base file
begin_case 6-remove-all-restores-base
dropin_before=""   # the drop-in dir started empty
check "precondition: nothing was applied before (config equals base), removal would be vacuous" changed_from_base
agent_apply
check "mirrors apply (no --policies) exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
check "$REGCONF differs from the original base file ($(diff "$W/base-registries.conf" "$REGCONF" | grep -c '^[<>]') differing lines)" \
  cmp -s "$W/base-registries.conf" "$REGCONF"
check "drop-in dir not back to its initial (empty) state: $(dropin_state | tr '\n' ' ')" [ "$(dropin_state)" = "$dropin_before" ]
sk inspect --no-tags "docker://$SRC@$DIGEST"
check "digest pull exited 0 after removal, expected failure" [ "$SK_RC" -ne 0 ]
check "a mirror was still tried after removal" log_lacks "$SK_LOG" "$(tried_re 127.0.0.1:500[134])"
end_case
[ ${#REASONS[@]} -gt 0 ] && diff -u "$W/base-registries.conf" "$REGCONF" | head -n 40 | sed 's/^/    diff| /'

# ================================================================== 7. idempotence
begin_case 7-apply-twice-is-idempotent
mkdir -p "$P/many"
write_mirrorset ICSP "$P/many/10-icsp.yaml" e2e-many-icsp "$SRC" "" "$M1"
write_mirrorset ITMS "$P/many/20-itms.yaml" e2e-many-itms 127.0.0.1:5002/ubi9/other "" 127.0.0.1:5001/mirror/other
write_mirrorset IDMS "$P/many/30-idms.yaml" e2e-many-idms 127.0.0.1:5002/ubi9/third NeverContactSource "$DEAD" "$M2"
write_image "$P/many"
agent_apply "$P/many"
check "first apply exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
check "first apply did not change $REGCONF/drop-ins at all" changed_from_base
cp -p "$REGCONF" "$W/out/after-first-apply.conf"
m1=$(mtime "$REGCONF"); d1=$(dropin_state)
sleep 0.1
agent_apply "$P/many"
check "second apply exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
check "second apply changed the bytes of $REGCONF" cmp -s "$W/out/after-first-apply.conf" "$REGCONF"
m2=$(mtime "$REGCONF")
check "second apply touched $REGCONF (mtime/inode '$m1' -> '$m2')" [ "$m1" = "$m2" ]
check "second apply changed the drop-in dir" [ "$(dropin_state)" = "$d1" ]
end_case

# ================================================================== 8. podman (optional)
echo "[SKIP] 8-podman (optional, not run)"

# ================================================================== 9. --dry-run writes nothing
begin_case 9-dry-run-prints-diff-writes-nothing
cp -p "$REGCONF" "$W/out/before-dry-run.conf"
m1=$(mtime "$REGCONF"); d1=$(dropin_state)
agent_apply --dry-run "$P/icsp"
check "dry-run exited $APPLY_RC" [ "$APPLY_RC" -eq 0 ]
check "dry-run printed nothing on stdout (expected a diff)" [ -s "$APPLY_OUT" ]
check "dry-run changed the bytes of $REGCONF" cmp -s "$W/out/before-dry-run.conf" "$REGCONF"
check "dry-run touched $REGCONF (mtime/inode '$m1' -> '$(mtime "$REGCONF")')" [ "$m1" = "$(mtime "$REGCONF")" ]
check "dry-run changed the drop-in dir" [ "$(dropin_state)" = "$d1" ]
end_case

# ================================================================== 10. host untouched
begin_case 10-host-untouched
check "host /etc/containers changed" [ "$(tree_sum "$W/host-etc-containers")" = "$HOST_ETC_SUM0" ]
# (/var/lib/containers: skopeo's blob-info cache; /run/mount: util-linux's utab from our own mounts)
stray=$(find /var/lib /var/tmp /run -mindepth 1 -maxdepth 1 ! -path /var/lib/containers ! -path /run/mount -printf '%p ' 2>/dev/null)
check "something wrote outside --root (would have hit the host): $stray" [ -z "$stray" ]
end_case
[ "$SELFTEST" = 1 ] || echo "# agent state under --root: $(cd "$W/root" && find . -mindepth 1 | head -n 10 | paste -sd' ' -)"

finish
