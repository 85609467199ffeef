#!/usr/bin/env bash
# Builds the local control plane binaries (kube-apiserver, kube-controller-manager,
# kubectl, etcd) and helm from the Go module proxy, and caches them outside the repo
# by version. Prints the bin directory on stdout. Safe to run again: a cached binary
# is never rebuilt.
#
# Versions: Kubernetes 1.34.4 (the 1.34 line vendors the etcd 3.6 client), etcd 3.6.16
# (newest 3.6 patch served; 3.4 from Debian is below Kubernetes' documented minimum),
# helm 3.22.0. The wrapper modules in hack/tools/* pin them with go.mod + go.sum.
set -euo pipefail

KUBE_VERSION=1.34.4
ETCD_VERSION=3.6.16
HELM_VERSION=3.22.0
HELM_CLIENT_GO_MINOR=37   # client-go minor that helm v3.22.0 requires (hack/tools/helm/go.mod)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/cache.sh"
bindir="$cache/bin/k8s-v${KUBE_VERSION}-etcd-v${ETCD_VERSION}-helm-v${HELM_VERSION}"
mkdir -p "$bindir"

if ! command -v go >/dev/null 2>&1; then
  echo "build-binaries: Go >= 1.26 is required (none on PATH)" >&2
  exit 1
fi

log() { echo "build-binaries: $*" >&2; }

build() {  # build NAME MODULE_DIR PACKAGE LDFLAGS
  local name="$1" moddir="$2" pkg="$3" ldflags="$4"
  if [[ -x "$bindir/$name" ]]; then
    return 0
  fi
  log "building $name from $pkg (cached afterwards in $bindir)"
  local start=$SECONDS
  (cd "$moddir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$bindir/$name.tmp" "$pkg")
  mv "$bindir/$name.tmp" "$bindir/$name"
  log "built $name in $((SECONDS - start))s"
}

kube_stamp() {  # version variables the upstream build stamps into a package
  local pkg="$1"
  echo "-X $pkg.gitVersion=v${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${KUBE_VERSION#*.}" | sed 's/gitMinor=\([0-9]*\)\..*/gitMinor=\1/'
}

kube_ldflags="$(kube_stamp k8s.io/component-base/version) $(kube_stamp k8s.io/client-go/pkg/version)"
build kube-apiserver "$here/tools/kube" k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build kubectl "$here/tools/kube" k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
build kube-controller-manager "$here/tools/kube" k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
build etcd "$here/tools/etcd" go.etcd.io/etcd/server/v3 ""
build helm "$here/tools/helm" helm.sh/helm/v3/cmd/helm \
  "-X helm.sh/helm/v3/internal/version.version=v${HELM_VERSION} \
   -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${HELM_CLIENT_GO_MINOR} \
   -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${HELM_CLIENT_GO_MINOR}"

# promtool (Prometheus 3.15.1, the Go module v0.315.1; v0.316.0 wants Go 1.26.7, above the project's
# 1.26): `promtool check rules` and `promtool test rules` on the chart's PrometheusRule
# (hack/tools/promtool pins it). Cached in a directory of its own, so its version never forces the
# binaries above to rebuild; linked into the one printed below. The tag remove_all_sd leaves out the
# cloud service discoveries (AWS, Azure, GCE, ...), which no rule check uses and whose SDKs are much of
# its build; promtool keeps file and Kubernetes discovery.
PROMTOOL_VERSION=0.315.1
promtool_dir="$cache/bin/promtool-v${PROMTOOL_VERSION}"
mkdir -p "$promtool_dir"
GOFLAGS="$(go env GOFLAGS) -tags=remove_all_sd" bindir="$promtool_dir" \
  build promtool "$here/tools/promtool" github.com/prometheus/prometheus/cmd/promtool \
  "-X github.com/prometheus/common/version.Version=3.${PROMTOOL_VERSION#0.3}"
ln -sfn "$promtool_dir/promtool" "$bindir/promtool"

# kube-score 1.20.0: the chart rendered with its ci/ values, scored (hack/tools/kube-score pins it).
# Cached like promtool.
KUBE_SCORE_VERSION=1.20.0
kube_score_dir="$cache/bin/kube-score-v${KUBE_SCORE_VERSION}"
mkdir -p "$kube_score_dir"
bindir="$kube_score_dir" build kube-score "$here/tools/kube-score" github.com/zegl/kube-score/cmd/kube-score \
  "-X main.version=${KUBE_SCORE_VERSION}"
ln -sfn "$kube_score_dir/kube-score" "$bindir/kube-score"

echo "$bindir"

# kstatus: what GitOps tools read status with, as a command for the status tests: sigs.k8s.io/cli-utils'
# status.Compute (Flux's default health check, kapply, Config Sync) and Flux's CEL health checks
# (github.com/fluxcd/pkg/runtime/cel); hack/tools/kstatus pins both. Cached in a directory of its own,
# so its versions never force the binaries above to rebuild; linked into the one printed above.
KSTATUS_VERSION=0.37.2
FLUX_RUNTIME_VERSION=0.117.0
kstatus_dir="$cache/bin/kstatus-v${KSTATUS_VERSION}-flux-runtime-v${FLUX_RUNTIME_VERSION}"
mkdir -p "$kstatus_dir"
bindir="$kstatus_dir" build kstatus "$here/tools/kstatus" sandbox-operator.dev/hack/tools/kstatus ""
ln -sfn "$kstatus_dir/kstatus" "$bindir/kstatus"
