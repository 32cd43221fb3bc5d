#!/usr/bin/env bash
# Build a tiny, reproducible single-layer OCI image layout offline (no daemon, no network).
#
#   tests/e2e/make-oci-image.sh OUTDIR [TAG] [MESSAGE]
#
# OUTDIR becomes an OCI layout usable as `oci:OUTDIR:TAG` (skopeo). The manifest digest
# ("sha256:<hex>") is printed on stdout. Same inputs => same digest (fixed mtimes/owners/order,
# gzip without name/timestamp, fixed "created" dates).
set -euo pipefail

out=${1:?usage: make-oci-image.sh OUTDIR [TAG] [MESSAGE]}
tag=${2:-latest}
msg=${3:-rhel-node-agent e2e test image}

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# blob FILE MEDIATYPE -> moves FILE into the layout, prints a JSON descriptor
blob() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$out/blobs/sha256/$hex"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$hex" "$size"
}

rm -rf "$out"
mkdir -p "$out/blobs/sha256" "$scratch/rootfs/etc"
printf '%s\n' "$msg" > "$scratch/rootfs/hello.txt"
printf 'NAME="rna-e2e"\nID=rna-e2e\n' > "$scratch/rootfs/etc/os-release"

# layer: uncompressed digest = diff_id, gzip'ed blob goes into the manifest
tar --sort=name --mtime='2020-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
    -C "$scratch/rootfs" -cf "$scratch/layer.tar" .
diff_id=$(sha256sum "$scratch/layer.tar" | cut -d' ' -f1)
gzip -n -9 -c "$scratch/layer.tar" > "$scratch/layer.tgz"
layer_desc=$(blob "$scratch/layer.tgz" application/vnd.oci.image.layer.v1.tar+gzip)

printf '{"created":"2020-01-01T00:00:00Z","architecture":"amd64","os":"linux","config":{"Cmd":["/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created":"2020-01-01T00:00:00Z","created_by":"tests/e2e/make-oci-image.sh"}]}' \
  "$diff_id" > "$scratch/config.json"
config_desc=$(blob "$scratch/config.json" application/vnd.oci.image.config.v1+json)

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
  "$config_desc" "$layer_desc" > "$scratch/manifest.json"
manifest_hex=$(sha256sum "$scratch/manifest.json" | cut -d' ' -f1)
manifest_desc=$(blob "$scratch/manifest.json" application/vnd.oci.image.manifest.v1+json)

# index entry = manifest descriptor + ref.name annotation (the TAG in oci:OUTDIR:TAG)
printf '{"schemaVersion":2,"manifests":[%s]}' \
  "${manifest_desc%\}},\"annotations\":{\"org.opencontainers.image.ref.name\":\"$tag\"}}" > "$out/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"

echo "sha256:$manifest_hex"
