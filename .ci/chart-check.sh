#!/usr/bin/env bash
# Checks the Helm chart in charts/homelab-autopilot. Offline (always): helm lint, helm template
# (defaults and ci/all-features.yaml), validation of the rendered manifests against the Kubernetes 1.28
# schemas (kubernetes-validate, strict), per-value-set render assertions and values typos failing.
# Against the API server in KUBECONFIG, when one answers: the chart's CRDs applied, a server-side
# dry-run apply of both renders, a real `helm install` whose ServiceAccount is impersonated with
# `kubectl auth can-i` (it can do exactly what the operator needs and nothing else, cluster-wide and
# with watchNamespace), and `helm uninstall` keeping the store PVC and the CRDs.
#
#   --require-cluster   fail if no API server answers (.ci/run passes it when KUBECONFIG answered)
#   --no-cluster        skip the cluster part without probing (.ci/run passes it otherwise)
#   (neither)           run the cluster part when an API server answers, else skip it
#
# By hand, against a k3s or kind cluster:
#   PATH="$(bash .ci/install-tools.sh):$PATH"
#   KUBECONFIG=~/.kube/config bash .ci/chart-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
chart=charts/homelab-autopilot
out=target/chart-check
require_cluster=false
no_cluster=false
case "${1:-}" in
  --require-cluster) require_cluster=true ;;
  --no-cluster) no_cluster=true ;;
  "") ;;
  *) echo "usage: $0 [--require-cluster | --no-cluster]" >&2; exit 2 ;;
esac
step() { printf '\n--- chart: %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"

# Namespaces of the cluster part: all start with chart-check, so a leftover of an interrupted run is
# recognisably ours and is removed before and after.
ns=chart-check             # release namespace
watched=chart-check-watched # watchNamespace of the namespaced-mode release
other=chart-check-other     # a namespace the namespaced release must not reach (never created)
kinds=(proxmoxclusters services backuppolicies updatepolicies restoretests replicationjobs)

step "helm lint --strict (defaults, all features)"
helm lint --strict "$chart"
helm lint --strict "$chart" -f "$chart/ci/all-features.yaml"

step "helm template (defaults, all features)"
helm template ap "$chart" --namespace "$ns" >"$out/defaults.yaml"
helm template ap "$chart" --namespace "$ns" -f "$chart/ci/all-features.yaml" >"$out/all-features.yaml"

step "rendered manifests vs Kubernetes 1.28 schemas (kubernetes-validate --strict)"
# ServiceMonitor and PrometheusRule (monitoring.coreos.com) have no schema in kubernetes-validate:
# they alone are skipped there, checked structurally instead, and left out of the dry-run below.
python3 .ci/chart_manifests.py validate --kube-version 1.28 --core-out "$out/defaults.core.yaml" "$out/defaults.yaml"
python3 .ci/chart_manifests.py validate --kube-version 1.28 --core-out "$out/all-features.core.yaml" "$out/all-features.yaml"

step "render assertions per value set; values typos fail naming the key"
python3 .ci/chart_manifests.py check-renders "$chart"
if helm template ap "$chart" --set replicaCount2=1 >/dev/null 2>"$out/typo.err"; then
  fail "helm template --set replicaCount2=1 succeeded; values.schema.json must reject unknown keys"
fi
grep -q "replicaCount2" "$out/typo.err" || fail "the typo error does not name the key: $(cat "$out/typo.err")"
echo "ok   --set replicaCount2=1 fails: $(grep -o "additional properties.*" "$out/typo.err")"

if $no_cluster; then
  echo "SKIP chart cluster checks: no Kubernetes cluster (set KUBECONFIG to run them)"
  exit 0
fi
if ! kubectl version --request-timeout=5s >/dev/null 2>&1; then
  $require_cluster && fail "no Kubernetes API reachable (KUBECONFIG=${KUBECONFIG:-unset})"
  echo "SKIP chart cluster checks: no Kubernetes API (set KUBECONFIG)"
  exit 0
fi

cleanup() {
  helm uninstall ap --namespace "$ns" --ignore-not-found >/dev/null 2>&1 || true
  helm uninstall apw --namespace "$ns" --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" "$watched" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
cleanup
kubectl wait --for=delete namespace/"$ns" namespace/"$watched" --timeout=120s >/dev/null 2>&1 || true
trap cleanup EXIT

step "apply the chart's CRDs, then a server-side dry-run apply of both renders"
python3 .ci/chart_manifests.py select CustomResourceDefinition "$out/defaults.yaml" >"$out/crds.yaml"
if [[ -s "$out/crds.yaml" ]]; then
  kubectl apply --server-side --force-conflicts --field-manager=chart-check -f "$out/crds.yaml"
  kubectl wait --for=condition=Established --timeout=60s -f "$out/crds.yaml"
else
  echo "note: $chart/templates/crds renders no CRDs yet (homelab-autopilot crd --write fills it)"
fi
kubectl create namespace "$ns"
kubectl create namespace "$watched"
kubectl apply --server-side --dry-run=server --field-manager=chart-check -f "$out/defaults.core.yaml"
# all-features watches namespace "homelab": render it for the test namespace instead.
helm template ap "$chart" --namespace "$ns" -f "$chart/ci/all-features.yaml" --set watchNamespace="$watched" \
  >"$out/all-features.dry-run.yaml"
python3 .ci/chart_manifests.py validate --kube-version 1.28 --core-out "$out/all-features.dry-run.core.yaml" \
  "$out/all-features.dry-run.yaml" >/dev/null
kubectl apply --server-side --dry-run=server --field-manager=chart-check -f "$out/all-features.dry-run.core.yaml"

# can/cannot SUBJECT VERB RESOURCE [kubectl auth can-i flags]: impersonates SUBJECT (with the
# groups the API server gives a ServiceAccount) and expects exactly "yes" / "no".
can_i() { kubectl auth can-i --as="$1" "${@:2}" 2>/dev/null || true; }
can() { [[ "$(can_i "$@")" == yes ]] || fail "$1 should be allowed: ${*:2}"; echo "ok   can    ${*:2}"; }
cannot() { [[ "$(can_i "$@")" == no ]] || fail "$1 must not be allowed: ${*:2}"; echo "ok   cannot ${*:2}"; }

step "helm install (all namespaces); RBAC of its ServiceAccount via kubectl auth can-i --as"
# --take-ownership: the CRDs were applied above (and by tests/kind) without Helm's ownership labels.
helm install ap "$chart" --namespace "$ns" --take-ownership --hide-notes
sa="system:serviceaccount:$ns:ap-homelab-autopilot"
# Every verb on one kind; the rule lists are generated from one kind list, which check-renders
# compares with the contract for all six, so the other kinds get one probe per rule.
bp=backuppolicies.autopilot.homelab.dev
for v in get list watch patch update; do can "$sa" "$v" "$bp" -n "$other"; done
for v in get patch update; do can "$sa" "$v" "$bp" --subresource=status -n "$other"; done
can "$sa" update "$bp" --subresource=finalizers -n "$other"
for v in create delete deletecollection; do cannot "$sa" "$v" "$bp" -n "$other"; done
can "$sa" list "$bp" --all-namespaces
for k in "${kinds[@]}"; do
  can "$sa" watch "$k.autopilot.homelab.dev" -n "$other"
  can "$sa" patch "$k.autopilot.homelab.dev" --subresource=status -n "$other"
  can "$sa" update "$k.autopilot.homelab.dev" --subresource=finalizers -n "$other"
  cannot "$sa" delete "$k.autopilot.homelab.dev" -n "$other"
done
for v in create patch; do can "$sa" "$v" events.events.k8s.io -n "$other"; done
for v in get list delete; do cannot "$sa" "$v" events.events.k8s.io -n "$other"; done
cannot "$sa" create events -n "$other" # core/v1 Events: the operator records events.k8s.io/v1 only
for v in get list watch; do can "$sa" "$v" secrets -n "$other"; done
for v in create update patch delete; do cannot "$sa" "$v" secrets -n "$other"; done
for v in get list watch; do can "$sa" "$v" customresourcedefinitions.apiextensions.k8s.io; done
for v in create update patch delete; do cannot "$sa" "$v" customresourcedefinitions.apiextensions.k8s.io; done
can "$sa" create leases.coordination.k8s.io -n "$ns"
for v in get update; do can "$sa" "$v" leases.coordination.k8s.io/ap-homelab-autopilot -n "$ns"; done
cannot "$sa" get leases.coordination.k8s.io/kube-controller-manager -n "$ns"
cannot "$sa" delete leases.coordination.k8s.io/ap-homelab-autopilot -n "$ns"
cannot "$sa" create leases.coordination.k8s.io -n "$other"
for v in get list create delete; do cannot "$sa" "$v" pods -n "$ns"; done
cannot "$sa" create pods --subresource=exec -n "$ns"
cannot "$sa" get configmaps -n "$ns"
cannot "$sa" create deployments.apps -n "$ns"
cannot "$sa" create serviceaccounts --subresource=token -n "$ns"
cannot "$sa" list namespaces
cannot "$sa" get nodes
cannot "$sa" bind clusterroles.rbac.authorization.k8s.io
cannot "$sa" escalate clusterroles.rbac.authorization.k8s.io
cannot "$sa" '*' '*'

step "helm install with watchNamespace: rights in that namespace only"
helm install apw "$chart" --namespace "$ns" --hide-notes --set watchNamespace="$watched" \
  --set crds.install=false --set store.persistence.enabled=false
sa="system:serviceaccount:$ns:apw-homelab-autopilot"
for k in "${kinds[@]}"; do
  can "$sa" watch "$k.autopilot.homelab.dev" -n "$watched"
  can "$sa" patch "$k.autopilot.homelab.dev" --subresource=status -n "$watched"
  cannot "$sa" watch "$k.autopilot.homelab.dev" -n "$other"
done
cannot "$sa" list backuppolicies.autopilot.homelab.dev --all-namespaces
can "$sa" get secrets -n "$watched"
cannot "$sa" get secrets -n "$other"
can "$sa" create events.events.k8s.io -n "$watched"
cannot "$sa" create events.events.k8s.io -n "$other"
can "$sa" watch customresourcedefinitions.apiextensions.k8s.io
can "$sa" update leases.coordination.k8s.io/apw-homelab-autopilot -n "$ns"
cannot "$sa" update leases.coordination.k8s.io/ap-homelab-autopilot -n "$ns"

step "helm uninstall keeps the chunk store PVC and the CRDs"
helm uninstall ap --namespace "$ns" --wait
helm uninstall apw --namespace "$ns" --wait
kubectl get persistentvolumeclaim ap-homelab-autopilot-store --namespace "$ns" >/dev/null ||
  fail "helm uninstall deleted the chunk store PVC"
echo "ok   PVC ap-homelab-autopilot-store survives helm uninstall"
if kubectl get clusterrole "ap-homelab-autopilot-$ns" >/dev/null 2>&1; then
  fail "helm uninstall left the ClusterRole behind"
fi
echo "ok   ClusterRole removed with the release"
if [[ -s "$out/crds.yaml" ]]; then
  kubectl get -f "$out/crds.yaml" >/dev/null || fail "helm uninstall deleted the CRDs"
  echo "ok   CRDs survive helm uninstall"
fi

step "chart checks done"
