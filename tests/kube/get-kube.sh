#!/usr/bin/env bash
# Build (once) and cache a real kube-apiserver + kube-controller-manager v1.20.2 from Debian
# bookworm's own kubernetes source package with Debian's Go 1.19, and etcd 3.4 from Debian
# (../shared/recipes/kube-apiserver). Idempotent; prints the cache's bin directory on stdout.
# Nothing under /etc changes (a private apt configuration fetches the source). About 4.5 min cold
# on 2 cores; instant when cached. Needs root (apt) only for the first run.
set -euo pipefail
CACHE=${RNA_TEST_CACHE:-/var/cache/rhel-node-agent-test}
W=$CACHE/kube-1.20.2-v1
mkdir -p "$W"/{apt/lists/partial,apt/cache/archives/partial,debs,debroot,debroot-go,debsrc,bin}
exec 9>"$W/.lock"; flock 9
cd "$W"
if [ -x bin/kube-apiserver ] && [ -x bin/kube-controller-manager ] && [ -x bin/etcd ] && [ -f .reflect2-go118 ]; then echo "$W/bin"; exit 0; fi
t0=$(date +%s)
if [ ! -x bin/etcd ] || [ ! -x debroot-go/usr/lib/go-1.19/bin/go ]; then
  ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 || apt-get update -qq >&2
  (cd debs && apt-get download -q golang-1.19-go golang-1.19-src etcd-server >/dev/null)
  for d in debs/golang-1.19-*.deb; do dpkg -x "$d" debroot-go; done
  for d in debs/etcd-*.deb; do dpkg -x "$d" debroot; done
  ln -sf "$W/debroot/usr/bin/etcd" bin/etcd
fi
if [ ! -d debsrc/kubernetes-1.20.2 ]; then
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)
  echo "deb-src $uri bookworm main" > apt/sources.list
  O=(-o "Dir::Etc::SourceList=$W/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache")
  apt-get "${O[@]}" update -qq >&2
  (cd debsrc && apt-get "${O[@]}" source --download-only -q kubernetes=1.20.5+really1.20.2-1.1+deb12u1 >/dev/null \
     && tar -xzf kubernetes_1.20.5+really1.20.2.orig.tar.gz)
  [ -d debsrc/kubernetes-1.20.2 ] || mv debsrc/kubernetes-*/ debsrc/kubernetes-1.20.2
fi
# Go >= 1.18 changed reflect.mapiterinit (the caller passes the iterator); the vendored
# modern-go/reflect2 v1.0.1 still expects it returned, and kube-apiserver crashes ("fatal error:
# fault") on the first custom resource. Apply reflect2 v1.0.2's fix to the vendored copy, once.
if [ ! -f .reflect2-go118 ]; then
  R=debsrc/kubernetes-1.20.2/vendor/github.com/modern-go/reflect2
  python3 - "$R" <<'PY'
import sys, re
r = sys.argv[1]
p = r + "/unsafe_link.go"; s = open(p).read()
s = s.replace("func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter",
              "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)")
s = re.sub(r"type hiter struct \{.*?\n\}", """type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}""", s, flags=re.S)
open(p, "w").write(s)
p = r + "/unsafe_map.go"; s = open(p).read()
s = s.replace("""	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),""", """	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,""")
open(p, "w").write(s)
PY
  grep -q "it \*hiter)" "$R/unsafe_link.go" && grep -q "hiter:      &it" "$R/unsafe_map.go" || { echo "reflect2 patch failed" >&2; exit 1; }
  rm -f bin/kube-apiserver bin/kube-controller-manager
  touch .reflect2-go118
fi
export GOROOT=$W/debroot-go/usr/lib/go-1.19 PATH=$W/debroot-go/usr/lib/go-1.19/bin:$PATH
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS= GO111MODULE=off CGO_ENABLED=0
export GOCACHE=$W/gocache GOPATH=$W/gopath
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$W/debsrc/kubernetes-1.20.2" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"
if [ ! -x "$W/bin/kube-apiserver" ]; then
  # 1.20 builds in GOPATH mode; the generated OpenAPI file is not shipped in the source package.
  go build -o "$W/bin/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
  DIRS=$(grep -Rl --include='*.go' '+k8s:openapi-gen=' pkg cmd vendor/k8s.io/ 2>/dev/null | grep -v -E '^vendor/k8s.io/(code-generator|sample-apiserver)/' | grep -v '_test.go' | xargs -n1 dirname | LC_ALL=C sort -u | sed 's#^#k8s.io/kubernetes/#' | paste -sd, -)
  mkdir -p _output
  "$W/bin/openapi-gen" --logtostderr -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r _output/KUBE_violations.report 2>/dev/null
  V=k8s.io/kubernetes/vendor/k8s.io/component-base/version
  go build -ldflags "-s -w -X $V.gitVersion=v1.20.2 -X $V.gitMajor=1 -X $V.gitMinor=20" -o "$W/bin/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
  mv "$W/bin/kube-apiserver.tmp" "$W/bin/kube-apiserver"
fi
if [ ! -x "$W/bin/kube-controller-manager" ]; then
  go build -ldflags "-s -w" -o "$W/bin/kube-controller-manager.tmp" k8s.io/kubernetes/cmd/kube-controller-manager
  mv "$W/bin/kube-controller-manager.tmp" "$W/bin/kube-controller-manager"
fi
echo "kube binaries built in $(( $(date +%s) - t0 )) s" >&2
echo "$W/bin"
