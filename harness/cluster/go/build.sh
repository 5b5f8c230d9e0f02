#!/usr/bin/env bash
# Build the real control plane (kube-apiserver, kube-controller-manager, kube-scheduler) and the kubelet
# for Candor's tests.
#
# Output: the directory holding the binaries, printed as the last line of stdout:
#   ${CANDOR_K8S_CACHE:-$HOME/.cache/candor/k8s}/<k8s version>/bin
# The cache lives outside the repository and is reused when every binary is present, so only the
# first run pays for the module download and compile (Go's GOMODCACHE/GOCACHE are reused as well).
# Concurrent runs (make test + the pytest fixture, parallel sessions) serialise on a lock file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")"
[[ -n "$version" ]] || { echo "build.sh: no 'require k8s.io/kubernetes vX.Y.Z' line in $here/go.mod" >&2; exit 2; }
cache="${CANDOR_K8S_CACHE:-$HOME/.cache/candor/k8s}"
bin="$cache/$version/bin"
binaries=(kube-apiserver kube-controller-manager kube-scheduler kubelet)

have_all() {
    local b
    for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if have_all; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH; install Go >= 1.26 (go.mod's go line) to build $version" >&2; exit 2; }
mkdir -p "$cache/$version"
exec 9>"$cache/$version/.build.lock"
flock 9
if have_all; then echo "$bin"; exit 0; fi  # another process finished the build while we waited

major_minor="${version#v}"; major="${major_minor%%.*}"; minor="${major_minor#*.}"; minor="${minor%%.*}"
# component-base/version feeds `kubectl version`, /version and the compatibility version checks.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

staging="$(mktemp -d "$cache/$version/.staging.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "build.sh: building ${binaries[*]} $version into $bin (first time only; several minutes)" >&2
start=$(date +%s)
(
    cd "$here"
    # One `go build` for all commands so their shared packages compile once. nice: the machine is shared.
    # -mod=readonly: go.mod/go.sum are committed and complete; a build must never rewrite them.
    GOFLAGS="${GOFLAGS:--mod=readonly}" CGO_ENABLED=0 GOTOOLCHAIN=local \
        nice -n 10 go build -trimpath -ldflags="$ldflags" -o "$staging/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet
)
mkdir -p "$bin"
for b in "${binaries[@]}"; do mv "$staging/$b" "$bin/$b"; done
echo "build.sh: built in $(( $(date +%s) - start )) s" >&2
echo "$bin"
