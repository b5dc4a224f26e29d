#!/usr/bin/env bash
# operator-scale.sh - the operator at scale: pvesim with N running VMs, N Services against the
# Kubernetes API server in KUBECONFIG, and the operator running on this machine. Prints how long
# until every Service reports its node, the PVE calls per resync by endpoint once everything is
# quiet (from the operator's /metrics), and the operator's peak RSS.
#
# Usage: bench/operator-scale.sh N [--keep]
#   N        guests and Services (e.g. 1000)
#   --keep   leave the namespace, pvesim's info file and the logs behind (default: delete them)
# Env: KUBECONFIG             the API server to use (a disposable cluster: the script applies
#                             crds/ and creates and deletes its own namespace)
#      HOMELAB_AUTOPILOT_BIN  our binary (default: cargo build --release, target/release/...)
#      RESYNC_SECONDS         the ProxmoxCluster's resyncIntervalSeconds (default 30, min 30)
#      QUIET_SECONDS          how long the quiet window after convergence lasts (default 3 resyncs)
#      CONVERGE_TIMEOUT       seconds to wait for every Service to report its node (default 600)
#      METRICS_PORT           port of the operator's /metrics on 127.0.0.1 (default 18080)
#      BENCH_NAMESPACE        namespace of the run (default autopilot-scale)
# Without an API server that answers (or without kubectl) it prints one SKIP line and exits 0,
# like .ci/run. Needs curl and python3.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$here/.." && pwd)
usage() { sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "operator-scale.sh: error: $*" >&2; exit 1; }
log() { echo "== $*" >&2; }

# ---------------------------------------------------------------- arguments
n="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) [ -z "$n" ] || die "one N only"; n=$1; shift ;;
  esac
done
[ -n "$n" ] || { usage >&2; die "N is required"; }
case "$n" in ''|*[!0-9]*) die "N must be a positive integer, got '$n'" ;; esac
[ "$n" -ge 1 ] || die "N must be at least 1"
resync=${RESYNC_SECONDS:-30}
quiet=${QUIET_SECONDS:-$((3 * resync))}
converge_timeout=${CONVERGE_TIMEOUT:-600}
metrics_port=${METRICS_PORT:-18080}
ns=${BENCH_NAMESPACE:-autopilot-scale}
for v in "$resync" "$quiet" "$converge_timeout" "$metrics_port"; do
  case "$v" in ''|*[!0-9]*) die "RESYNC_SECONDS, QUIET_SECONDS, CONVERGE_TIMEOUT and METRICS_PORT must be integers" ;; esac
done
[ "$resync" -ge 30 ] || die "RESYNC_SECONDS must be at least 30 (the CRD's minimum)"
[ "$quiet" -ge "$resync" ] || die "QUIET_SECONDS must cover at least one resync ($resync s)"

# ---------------------------------------------------------------- is there an API server?
if ! command -v kubectl >/dev/null 2>&1; then
  echo "SKIP bench/operator-scale.sh: kubectl not found, so no Kubernetes API server to run against"
  exit 0
fi
if ! kubectl get --raw /version --request-timeout=5s >/dev/null 2>&1; then
  echo "SKIP bench/operator-scale.sh: no Kubernetes API server answers (KUBECONFIG=${KUBECONFIG:-unset})"
  exit 0
fi
command -v curl >/dev/null 2>&1 || die "curl is required"
command -v python3 >/dev/null 2>&1 || die "python3 is required"

# ---------------------------------------------------------------- binary
if [ -n "${HOMELAB_AUTOPILOT_BIN:-}" ]; then
  bin=$HOMELAB_AUTOPILOT_BIN
else
  log "cargo build --release (set HOMELAB_AUTOPILOT_BIN to skip)"
  (cd "$repo_root" && cargo build --release --quiet) || die "cargo build --release failed"
  bin="$repo_root/target/release/homelab-autopilot"
fi
[ -x "$bin" ] || die "binary '$bin' is not executable"

# ---------------------------------------------------------------- work dir and cleanup
work=$(mktemp -d "${TMPDIR:-/tmp}/operator-scale.XXXXXX")
sim_pid="" op_pid="" created_ns=0
cleanup() {
  local rc=$?
  # Only the processes this script started, by their PID.
  if [ -n "$op_pid" ]; then kill "$op_pid" 2>/dev/null || true; wait "$op_pid" 2>/dev/null || true; fi
  if [ -n "$sim_pid" ]; then kill "$sim_pid" 2>/dev/null || true; wait "$sim_pid" 2>/dev/null || true; fi
  if [ "$keep" -eq 1 ]; then
    echo "kept: namespace $ns, work dir $work (operator.log, pvesim.log, sim.json, metrics)" >&2
  else
    if [ "$created_ns" -eq 1 ]; then
      kubectl delete namespace "$ns" --wait=false --ignore-not-found >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
seconds_between() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.1f}")' "$1" "$2"; }

# ---------------------------------------------------------------- pvesim with N more VMs
log "pvesim with $n generated running VMs"
"$bin" pvesim --listen 127.0.0.1:0 --scale-guests "$n" --info-file "$work/sim.json" \
  >"$work/pvesim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 1 300); do
  [ -s "$work/sim.json" ] && break
  kill -0 "$sim_pid" 2>/dev/null || die "pvesim exited: $(tail -n 5 "$work/pvesim.log")"
  sleep 0.1
done
[ -s "$work/sim.json" ] || die "pvesim wrote no info file in 30 s"
info() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/sim.json" "$1"; }
sim_url=$(info url)
fingerprint=$(info fingerprint)
token_id=$(info tokenId)
token_secret=$(info tokenSecret)

# ---------------------------------------------------------------- CRDs, namespace, cluster
log "CRDs, namespace $ns, ProxmoxCluster (resyncIntervalSeconds $resync)"
kubectl apply --server-side --force-conflicts -f "$repo_root/crds/" >/dev/null
kubectl wait --for condition=established --timeout=60s \
  crd/proxmoxclusters.autopilot.homelab.dev crd/services.autopilot.homelab.dev >/dev/null
if kubectl get namespace "$ns" >/dev/null 2>&1; then
  die "namespace $ns exists already (a previous run with --keep?): delete it or set BENCH_NAMESPACE"
fi
kubectl create namespace "$ns" >/dev/null
created_ns=1
kubectl -n "$ns" create secret generic pve-token \
  --from-literal=tokenId="$token_id" --from-literal=tokenSecret="$token_secret" >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: autopilot.homelab.dev/v1alpha1
kind: ProxmoxCluster
metadata:
  name: scale
spec:
  endpoints:
    - url: "$sim_url"
  credentialsSecretRef:
    name: pve-token
  tls:
    fingerprint: "$fingerprint"
  resyncIntervalSeconds: $resync
EOF

# ---------------------------------------------------------------- the operator
log "operator (namespace $ns, /metrics on 127.0.0.1:$metrics_port)"
"$bin" operator --namespace "$ns" --leader-election false --http-addr "127.0.0.1:$metrics_port" \
  --store-path "$work/store" >"$work/operator.log" 2>&1 &
op_pid=$!
metrics_url="http://127.0.0.1:$metrics_port/metrics"
for _ in $(seq 1 600); do
  curl -fs -o /dev/null "http://127.0.0.1:$metrics_port/readyz" && break
  kill -0 "$op_pid" 2>/dev/null || die "the operator exited: $(tail -n 5 "$work/operator.log")"
  sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$metrics_port/readyz" || die "the operator is not ready after 60 s"

# ---------------------------------------------------------------- N Services
first_vmid=10000   # SeedSpec::FIRST_GENERATED_VMID: the example cluster uses no VMID above it
python3 - "$n" "$first_vmid" >"$work/services.yaml" <<'EOF'
import sys
n, first = int(sys.argv[1]), int(sys.argv[2])
for vmid in range(first, first + n):
    print(f"""---
apiVersion: autopilot.homelab.dev/v1alpha1
kind: Service
metadata:
  name: scale-{vmid}
spec:
  clusterRef:
    name: scale
  vmid: {vmid}
  type: VM""")
EOF
reported() {
  kubectl -n "$ns" get services.autopilot.homelab.dev --request-timeout=30s \
    -o jsonpath='{range .items[*]}{.status.node}{"\n"}{end}' 2>/dev/null | grep -c . || true
}
log "applying $n Services"
t_apply=$(now)
kubectl -n "$ns" apply --server-side --field-manager=operator-scale -f "$work/services.yaml" >/dev/null
t_applied=$(now)
deadline=$(( $(date +%s) + converge_timeout ))
count=0
while :; do
  count=$(reported)
  [ "$count" -ge "$n" ] && break
  [ "$(date +%s)" -lt "$deadline" ] || die "only $count of $n Services report their node after ${converge_timeout} s"
  kill -0 "$op_pid" 2>/dev/null || die "the operator exited: $(tail -n 5 "$work/operator.log")"
  sleep 0.5
done
t_done=$(now)

# ---------------------------------------------------------------- quiet window
log "all $n Services report their node; quiet window of $quiet s ($((quiet / resync)) resyncs)"
curl -fs "$metrics_url" >"$work/metrics-before.txt" || die "cannot read $metrics_url"
sleep "$quiet"
curl -fs "$metrics_url" >"$work/metrics-after.txt" || die "cannot read $metrics_url"
peak_rss_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$op_pid/status" 2>/dev/null || echo "")

# ---------------------------------------------------------------- report
echo
echo "operator-scale: N=$n guests and Services, resyncIntervalSeconds=$resync"
echo "  apply of $n Services took             $(seconds_between "$t_apply" "$t_applied") s"
echo "  every Service reported its node       $(seconds_between "$t_applied" "$t_done") s after the apply finished ($(seconds_between "$t_apply" "$t_done") s after it started)"
if [ -n "$peak_rss_kib" ]; then
  echo "  operator peak RSS (VmHWM)             $((peak_rss_kib / 1024)) MiB"
else
  echo "  operator peak RSS                     unknown (no /proc/$op_pid/status)"
fi
python3 - "$work/metrics-before.txt" "$work/metrics-after.txt" "$quiet" "$resync" <<'EOF'
import re, sys
from collections import defaultdict

line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

def read(path):
    series = {}
    with open(path) as f:
        for line in f:
            m = line_re.match(line.strip())
            if not m or line.startswith('#'):
                continue
            name, labels, value = m.groups()
            series[(name, tuple(sorted(label_re.findall(labels or ''))))] = float(value)
    return series

before, after = read(sys.argv[1]), read(sys.argv[2])
resyncs = float(sys.argv[3]) / float(sys.argv[4])

def delta(suffix, key_of):
    out = defaultdict(float)
    for (name, labels), value in after.items():
        if name.endswith(suffix):
            out[key_of(dict(labels))] += value - before.get((name, labels), 0.0)
    return {k: v for k, v in out.items() if v}

calls = delta('pve_requests_total', lambda l: f"{l.get('method', '?')} {l.get('path_template', '?')}")
print(f"  PVE calls per resync (quiet window of {resyncs:g} resyncs, from /metrics):")
if not calls:
    print("    none")
for endpoint, count in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])):
    print(f"    {count / resyncs:8.1f}  {endpoint}")
print(f"    {sum(calls.values()) / resyncs:8.1f}  total")
reconciles = delta('reconcile_total', lambda l: l.get('controller', '?'))
print("  reconciles per resync, by controller:")
for controller, count in sorted(reconciles.items()):
    print(f"    {count / resyncs:8.1f}  {controller}")
EOF
