#!/usr/bin/env bash
# The dependency checks of the RPMs in DIR (default target/rpm): what each binary links against and
# what each package requires must exist on its RHEL release. The install tests use --nodeps, so this
# is the check that catches a wrong dependency. The allow-lists are documented in
# packaging/README.md ("Dependencies").
#   el8 (RHEL 8: glibc 2.28, no OpenSSL 3, rpm 4.14): NEEDED within the glibc 2.28 split libraries
#       and libgcc_s; no GLIBC_ symbol version newer than 2.28; no OpenSSL at all (rustls).
#   el9 (RHEL 9: glibc 2.34, OpenSSL 3.0, rpm 4.16): NEEDED within glibc, libgcc_s and OpenSSL 3;
#       no GLIBC_ newer than 2.34; OpenSSL symbol versions only OPENSSL_3.0.0 (RHEL 9.0 ships 3.0.1).
set -uo pipefail
cd "$(dirname "$0")/../.."
DIR=$(cd "${1:-target/rpm}" && pwd)
PASS=0; FAIL=0
pass() { PASS=$((PASS+1)); echo "[PASS] $1"; }
fail() { FAIL=$((FAIL+1)); echo "[FAIL] $1"; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT

# ver_le A B: A <= B as versions
ver_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$1" ]; }

# Requirements rpm may generate, per release (extended regular expressions, whole line).
REQ_COMMON=(
  '/bin/sh'
  'systemd'
  'config\(rhel-node-agent\) = [0-9.]+-[0-9]+\.el[89]'
  'rtld\(GNU_HASH\)'
  'ld-linux-x86-64\.so\.2(\(\))?\(64bit\)'
  'ld-linux-x86-64\.so\.2\(GLIBC_[0-9.]+\)\(64bit\)'
  'libc\.so\.6(\(\))?\(64bit\)'
  'libc\.so\.6\(GLIBC_[0-9.]+\)\(64bit\)'
  'libm\.so\.6(\(\))?\(64bit\)'
  'libm\.so\.6\(GLIBC_[0-9.]+\)\(64bit\)'
  'libgcc_s\.so\.1(\(\))?\(64bit\)'
  'libgcc_s\.so\.1\(GCC_[0-9.]+\)\(64bit\)'
  # rpm 4.14 (RHEL 8) knows all of these; no PayloadIsZstd (gzip payload).
  'rpmlib\((CompressedFileNames|FileDigests|PayloadFilesHavePrefix|PayloadIsXz)\) <= [0-9.-]+'
)
REQ_EL8=(
  'libpthread\.so\.0(\(\))?\(64bit\)' 'libpthread\.so\.0\(GLIBC_[0-9.]+\)\(64bit\)'
  'libdl\.so\.2(\(\))?\(64bit\)' 'libdl\.so\.2\(GLIBC_[0-9.]+\)\(64bit\)'
  'librt\.so\.1(\(\))?\(64bit\)' 'librt\.so\.1\(GLIBC_[0-9.]+\)\(64bit\)'
)
REQ_EL9=(
  'libssl\.so\.3(\(\))?\(64bit\)' 'libssl\.so\.3\(OPENSSL_3\.0\.0\)\(64bit\)'
  'libcrypto\.so\.3(\(\))?\(64bit\)' 'libcrypto\.so\.3\(OPENSSL_3\.0\.0\)\(64bit\)'
)
NEEDED_EL8="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2"
NEEDED_EL9="libc.so.6 libm.so.6 libgcc_s.so.1 libssl.so.3 libcrypto.so.3 ld-linux-x86-64.so.2"

for rel in el8 el9; do
  rpmf=$(ls "$DIR"/rhel-node-agent-*."$rel".x86_64.rpm 2>/dev/null | head -n1)
  [ -n "$rpmf" ] || { fail "$rel: no RPM in $DIR"; continue; }
  echo "# $rel: $(basename "$rpmf")"
  mkdir -p "$W/$rel"
  (cd "$W/$rel" && rpm2cpio "$rpmf" | cpio -idm --quiet)
  bin="$W/$rel/usr/bin/rhel-node-agent"
  [ -x "$bin" ] || { fail "$rel: no /usr/bin/rhel-node-agent in the payload"; continue; }
  case $rel in el8) allowed=$NEEDED_EL8; glibc_max=2.28; reqs=("${REQ_COMMON[@]}" "${REQ_EL8[@]}");;
               el9) allowed=$NEEDED_EL9; glibc_max=2.34; reqs=("${REQ_COMMON[@]}" "${REQ_EL9[@]}");; esac
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
  extra=""
  for lib in $needed; do case " $allowed " in *" $lib "*) ;; *) extra+=" $lib";; esac; done
  [ -z "$extra" ] && pass "$rel: NEEDED within the allow-list ($needed)" || fail "$rel: NEEDED outside the allow-list:$extra"
  syms=$(readelf -W --dyn-syms -V "$bin")
  gmax=$(echo "$syms" | grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' | sed 's/GLIBC_//' | sort -uV | tail -n1)
  ver_le "$gmax" "$glibc_max" && pass "$rel: newest glibc symbol GLIBC_$gmax <= $glibc_max" || fail "$rel: needs GLIBC_$gmax > $glibc_max"
  ossl=$(echo "$syms" | grep -oE 'OPENSSL_[0-9][0-9.]*' | sort -u | tr '\n' ' ')
  case $rel in
    el8) [ -z "$ossl" ] && pass "el8: no OpenSSL symbol versions (rustls)" || fail "el8: OpenSSL symbols: $ossl";;
    el9) [ "$ossl" = "OPENSSL_3.0.0 " ] && pass "el9: OpenSSL symbol versions: $ossl" || fail "el9: OpenSSL symbol versions: '$ossl' (want only OPENSSL_3.0.0)";;
  esac
  "$bin" --version | grep -E "tls $([ $rel = el8 ] && echo rustls || echo openssl)\)" >/dev/null \
    && pass "$rel: $("$bin" --version)" || fail "$rel: --version: $("$bin" --version)"
  bad=""
  while IFS= read -r r; do
    ok=0
    for re in "${reqs[@]}"; do [[ $r =~ ^${re}$ ]] && { ok=1; break; }; done
    [ $ok = 1 ] || bad+=" [$r]"
    case $r in *GLIBC_*) v=${r#*GLIBC_}; v=${v%%)*}; ver_le "$v" "$glibc_max" || bad+=" [$r: newer than $glibc_max]";; esac
  done < <(rpm -qp --requires "$rpmf" 2>/dev/null)
  [ -z "$bad" ] && pass "$rel: rpm -qp --requires within the $rel list ($(rpm -qp --requires "$rpmf" 2>/dev/null | wc -l) entries)" \
    || fail "$rel: requirements RHEL ${rel#el} does not provide:$bad"
done
echo "check-deps: $PASS passed, $FAIL failed"
[ $FAIL -eq 0 ] && [ $PASS -gt 0 ]
