#!/usr/bin/env bash
# The upgrade packages the install tests need, from the binaries scripts/build-rpm staged (no
# rebuild): OUT/r2 = release 2 with the same defaults, OUT/r3 = release 3 whose shipped
# 50-site.toml changed (so an edited copy gets a .rpmnew). Built from a copy of the tracked files.
# usage: tests/packaging/build-upgrades.sh OUT
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
OUT=${1:?usage: build-upgrades.sh OUT}
rm -rf "$OUT"; mkdir -p "$OUT/src"; OUT=$(cd "$OUT" && pwd)
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -C "$OUT/src" -xf -
(cd "$OUT/src" && scripts/build-rpm --no-build --stage-root "$REPO/target/rpm" --release 2 --out "$OUT/r2") >/dev/null
printf '#\n# [api]\n# metrics_listen = "127.0.0.1:9858"   # example added in release 3\n' >> "$OUT/src/packaging/config/50-site.toml"
(cd "$OUT/src" && scripts/build-rpm --no-build --stage-root "$REPO/target/rpm" --release 3 --out "$OUT/r3") >/dev/null
rm -rf "$OUT/src"
ls "$OUT"/r2/*.x86_64.rpm "$OUT"/r3/*.x86_64.rpm
