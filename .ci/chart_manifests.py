#!/usr/bin/env python3
"""Offline checks of the Helm chart's rendered manifests, used by .ci/chart-check.sh.

  validate [--kube-version V] [--core-out FILE] FILE...
      Validates every object against the Kubernetes V JSON schemas of kubernetes-validate in strict
      mode (unknown fields fail). An object whose kind has no schema fails, except the two
      prometheus-operator kinds (ServiceMonitor, PrometheusRule): kubernetes-validate ships no
      schemas for CRD kinds, so those two are checked structurally here instead, and reported as
      skipped. --core-out writes the schema-validated objects (everything but those two) to FILE,
      for the server-side dry-run.
  select KIND FILE
      Prints the objects of one kind (e.g. the CRDs to apply before the dry-run).
  check-renders CHART
      Renders the chart with several value sets and asserts what each must produce: the security
      settings, the exact RBAC rules (no wildcards), namespaced mode, the store volume variants,
      the CRD switches, name truncation, and that bad values fail naming the key.
"""
import argparse
import re
import subprocess
import sys

import yaml

MONITORING = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
GROUP = "autopilot.homelab.dev"
KINDS = ["proxmoxclusters", "services", "backuppolicies", "updatepolicies", "restoretests", "replicationjobs"]
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
RELEASE_NS = "autopilot-system"


def load(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def name_of(doc):
    return f"{doc['kind']}/{doc['metadata']['name']}"


def rbac_triples(rules):
    """(apiGroup, resource, verb, resourceName or '') for every combination a rule list grants."""
    out = set()
    for rule in rules:
        for group in rule.get("apiGroups", []):
            for res in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    for rn in rule.get("resourceNames") or [""]:
                        out.add((group, res, verb, rn))
    return out


# What the operator may do on namespaced resources (the operator's RBAC contract), and nothing more.
NAMESPACED = (
    {(GROUP, k, v, "") for k in KINDS for v in ("get", "list", "watch", "patch", "update")}
    | {(GROUP, f"{k}/status", v, "") for k in KINDS for v in ("get", "patch", "update")}
    | {(GROUP, f"{k}/finalizers", "update", "") for k in KINDS}
    | {("events.k8s.io", "events", v, "") for v in ("create", "patch")}
    | {("", "secrets", v, "") for v in ("get", "list", "watch")}
)
CRD_READ = {("apiextensions.k8s.io", "customresourcedefinitions", v, "") for v in ("get", "list", "watch")}


def check_servicemonitor(doc, docs, errors):
    spec = doc["spec"]
    wanted = spec["selector"]["matchLabels"]
    namespaces = spec.get("namespaceSelector", {}).get("matchNames", [doc["metadata"]["namespace"]])
    services = [
        d for d in docs
        if d["kind"] == "Service" and d["apiVersion"] == "v1"
        and d["metadata"].get("namespace") in namespaces
        and wanted.items() <= d["metadata"].get("labels", {}).items()
    ]
    if not services:
        errors.append(f"{name_of(doc)}: selector {wanted} matches no Service in {namespaces}")
    for ep in spec.get("endpoints", []):
        for svc in services:
            if ep.get("port") not in {p.get("name") for p in svc["spec"]["ports"]}:
                errors.append(f"{name_of(doc)}: endpoint port {ep.get('port')!r} is not a port name of {name_of(svc)}")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not DURATION.match(str(ep[key])):
                errors.append(f"{name_of(doc)}: endpoint {key} {ep[key]!r} is not a duration")


def balanced(expr):
    pairs, stack, quote = {")": "(", "]": "[", "}": "{"}, [], None
    for ch in expr:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and quote is None


def check_prometheusrule(doc, errors):
    groups = doc["spec"].get("groups") or []
    if not groups:
        errors.append(f"{name_of(doc)}: no rule groups")
    for group in groups:
        if not group.get("rules"):
            errors.append(f"{name_of(doc)}: group {group.get('name')!r} has no rules")
        for rule in group.get("rules") or []:
            label = rule.get("alert") or rule.get("record")
            if ("alert" in rule) == ("record" in rule):
                errors.append(f"{name_of(doc)}: rule {label!r} needs exactly one of alert/record")
            expr = str(rule.get("expr", "")).strip()
            if not expr or not balanced(expr):
                errors.append(f"{name_of(doc)}: rule {label!r} has an empty or unbalanced expr: {expr!r}")
            if "{{" in expr:
                errors.append(f"{name_of(doc)}: rule {label!r} has an unrendered template in expr")
            if "for" in rule and not DURATION.match(str(rule["for"])):
                errors.append(f"{name_of(doc)}: rule {label!r} has a bad for: {rule['for']!r}")
            if "alert" in rule:
                if not rule.get("labels", {}).get("severity"):
                    errors.append(f"{name_of(doc)}: alert {label!r} has no severity label")
                if not rule.get("annotations", {}).get("summary"):
                    errors.append(f"{name_of(doc)}: alert {label!r} has no summary")
            for key in ("labels", "annotations"):
                for k, v in (rule.get(key) or {}).items():
                    if not isinstance(v, str):
                        errors.append(f"{name_of(doc)}: rule {label!r} {key}.{k} is not a string")


def cmd_validate(args):
    from kubernetes_validate import utils as kv

    docs = load(args.files)
    errors, core = [], []
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in MONITORING:
            before = len(errors)
            if doc["kind"] == "ServiceMonitor":
                check_servicemonitor(doc, docs, errors)
            else:
                check_prometheusrule(doc, errors)
            state = "ok" if len(errors) == before else "FAILED"
            print(f"SKIP schema {name_of(doc)} ({doc['apiVersion']}): kubernetes-validate has no schema "
                  f"for prometheus-operator kinds; structural check {state}")
            continue
        try:
            kv.validate(doc, args.kube_version, strict=True)
            print(f"ok   {name_of(doc)} ({doc['apiVersion']}) against Kubernetes {args.kube_version}")
            core.append(doc)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name_of(doc)}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            errors.append(f"{name_of(doc)}: {e.message} (only the prometheus-operator kinds may lack a schema)")
    if args.core_out:
        with open(args.core_out, "w") as f:
            yaml.safe_dump_all(core, f, sort_keys=False)
    for e in errors:
        print(f"ERROR {e}", file=sys.stderr)
    return 1 if errors else 0


def cmd_select(args):
    picked = [d for d in load([args.file]) if d.get("kind") == args.kind]
    if picked:
        yaml.safe_dump_all(picked, sys.stdout, sort_keys=False)
    return 0


# --- check-renders ---------------------------------------------------------------------------


class Failures(list):
    def check(self, cond, what):
        print(f"{'ok  ' if cond else 'FAIL'} {what}")
        if not cond:
            self.append(what)


def render(chart, *sets, release="ap"):
    cmd = ["helm", "template", release, chart, "--namespace", RELEASE_NS]
    for s in sets:
        cmd += ["--set", s]
    res = subprocess.run(cmd, capture_output=True, text=True)
    return res.returncode, [d for d in yaml.safe_load_all(res.stdout) if d] if res.returncode == 0 else [], res.stderr


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def check_defaults(chart, f):
    rc, docs, err = render(chart)
    f.check(rc == 0, f"defaults render ({err.strip()})")
    if rc:
        return
    for d in docs:
        if d["kind"] not in CLUSTER_SCOPED:
            f.check(d["metadata"].get("namespace") == RELEASE_NS, f"{name_of(d)} is in the release namespace")
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(docs)
    sc, psc = c["securityContext"], pod["securityContext"]
    f.check(dep["spec"]["replicas"] == 1, "one replica by default")
    f.check(psc.get("runAsNonRoot") and psc.get("runAsUser") == 65532, "pod runs as non-root uid 65532")
    f.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccomp RuntimeDefault")
    f.check(sc.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    f.check(sc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    f.check(sc.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")
    f.check(c["resources"].get("requests") and c["resources"].get("limits"), "resource requests and limits")
    f.check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, "liveness /healthz on http")
    f.check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, "readiness /readyz on http")
    f.check(c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}], "port http 8080")
    env = {e["name"]: e for e in c["env"]}
    f.check(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", "POD_NAME from the downward API")
    f.check(env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace",
            "POD_NAMESPACE from the downward API")
    f.check(env["RUST_LOG"]["value"] == "info,kube=warn", "RUST_LOG from values")
    f.check(c["args"][0] == "operator" and "--leader-election=true" in c["args"], "operator with leader election")
    f.check(not any(a.startswith("--namespace") for a in c["args"]), "no --namespace: all namespaces")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vols = {v["name"]: v for v in pod["volumes"]}
    f.check(mounts.get("/tmp") == "tmp" and "emptyDir" in vols["tmp"], "writable /tmp emptyDir")
    store = mounts.get("/var/lib/homelab-autopilot/store")
    f.check(store is not None and "--store-path=/var/lib/homelab-autopilot/store" in c["args"],
            "store volume mounted at --store-path")
    pvc = one(docs, "PersistentVolumeClaim")
    f.check(pvc is not None and pvc["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep",
            "store PVC kept on uninstall")
    f.check(vols[store]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"], "store uses the PVC")
    svc = one(docs, "Service")
    f.check(svc["spec"]["ports"][0]["targetPort"] == "http", "Service targets the http port")
    f.check(one(docs, "ServiceMonitor") is None and one(docs, "PrometheusRule") is None, "monitoring off by default")

    cr = one(docs, "ClusterRole")
    granted = rbac_triples(cr["rules"])
    wanted = NAMESPACED | CRD_READ
    f.check(granted == wanted, "ClusterRole grants exactly the contract's verbs "
            f"(extra: {sorted(granted - wanted)}, missing: {sorted(wanted - granted)})")
    roles = [d for d in docs if d["kind"] == "Role"]
    f.check(len(roles) == 1 and roles[0]["metadata"]["namespace"] == RELEASE_NS, "one Role, in the release namespace")
    lease = rbac_triples(roles[0]["rules"]) if roles else set()
    expected_lease = {("coordination.k8s.io", "leases", "create", "")} | {
        ("coordination.k8s.io", "leases", v, "ap-homelab-autopilot") for v in ("get", "update")}
    f.check(lease == expected_lease, "lease Role: create, and get/update of our Lease only")
    f.check("--lease-name=ap-homelab-autopilot" in c["args"], "the Lease named in the Role is the one the operator uses")
    all_rules = [r for d in docs if d["kind"] in ("Role", "ClusterRole") for r in d["rules"]]
    f.check(not any("*" in r.get(k, []) for r in all_rules for k in ("apiGroups", "resources", "verbs")),
            "no wildcards in any rule")
    for b in (d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        f.check(b["subjects"] == [{"kind": "ServiceAccount", "name": "ap-homelab-autopilot", "namespace": RELEASE_NS}],
                f"{name_of(b)} binds only the chart's ServiceAccount")
    for crd in (d for d in docs if d["kind"] == "CustomResourceDefinition"):
        f.check(crd["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
                f"{name_of(crd)} kept on uninstall")


def check_variants(chart, f):
    rc, docs, _ = render(chart, "watchNamespace=homelab")
    c = container(docs)
    f.check("--namespace=homelab" in c["args"], "watchNamespace passes --namespace")
    role = one(docs, "Role", "ap-homelab-autopilot")
    f.check(role is not None and role["metadata"]["namespace"] == "homelab"
            and rbac_triples(role["rules"]) == NAMESPACED, "watchNamespace: namespaced rules in a Role there")
    binding = one(docs, "RoleBinding", "ap-homelab-autopilot")
    f.check(binding is not None and binding["metadata"]["namespace"] == "homelab", "watchNamespace: RoleBinding there")
    f.check(rbac_triples(one(docs, "ClusterRole")["rules"]) == CRD_READ, "watchNamespace: ClusterRole only reads CRDs")

    rc, docs, _ = render(chart, "store.persistence.existingClaim=my-backups")
    vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    f.check(one(docs, "PersistentVolumeClaim") is None
            and vols["store"]["persistentVolumeClaim"]["claimName"] == "my-backups", "existingClaim: used, none created")

    rc, docs, _ = render(chart, "store.persistence.enabled=false")
    vols = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    f.check(one(docs, "PersistentVolumeClaim") is None and "emptyDir" in vols["store"], "persistence off: emptyDir")

    rc, docs, _ = render(chart, "store.s3.url=s3://homelab-backups/autopilot",
                         "store.s3.existingSecret=s3-keys", "store.s3.endpoint=http://minio.lan:9000",
                         "store.s3.allowHttp=true")
    c = container(docs)
    env = {e["name"]: e for e in c.get("env", [])}
    f.check("--store-path=s3://homelab-backups/autopilot" in c["args"]
            and env.get("AWS_ACCESS_KEY_ID", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name") == "s3-keys"
            and env.get("AWS_ENDPOINT_URL", {}).get("value") == "http://minio.lan:9000"
            and env.get("AWS_ALLOW_HTTP", {}).get("value") == "true"
            and env.get("XDG_CACHE_HOME", {}).get("value") == "/var/lib/homelab-autopilot/store",
            "S3 store: --store-path, keys from the Secret, endpoint, index cache on the volume")
    rc, _, err = render(chart, "store.s3.url=s3://homelab-backups/autopilot")
    f.check(rc != 0 and "store.s3.existingSecret" in err, "S3 store without a key Secret is refused, naming the value")

    rc, docs, _ = render(chart, "store.encryptionKey.existingSecret=k")
    c = container(docs)
    f.check("--store-key-file=/etc/homelab-autopilot/store-key/key" in c["args"]
            and any(m["name"] == "store-key" and m["readOnly"] for m in c["volumeMounts"]), "store key mounted and passed")

    rc, docs, _ = render(chart, "crds.install=false")
    f.check(rc == 0 and one(docs, "CustomResourceDefinition") is None
            and not any(d["kind"] == "CustomResourceDefinition" for d in docs), "crds.install=false: no CRDs")
    rc, docs, _ = render(chart, "crds.keep=false")
    f.check(rc == 0 and not any(d["kind"] == "CustomResourceDefinition"
                                and "helm.sh/resource-policy" in d["metadata"].get("annotations", {}) for d in docs),
            "crds.keep=false: CRDs not annotated keep")

    rc, docs, _ = render(chart, "leaderElection.enabled=false")
    c = container(docs)
    f.check("--leader-election=false" in c["args"] and not any(d["kind"] == "Role" for d in docs),
            "leader election off: flag false, no lease Role")

    long_release = "r" * 53
    rc, docs, err = render(chart, release=long_release)
    too_long = [name_of(d) for d in docs if d["kind"] not in CLUSTER_SCOPED and len(d["metadata"]["name"]) > 63]
    f.check(rc == 0 and not too_long, f"a 53-character release name keeps names within 63 characters {too_long}")

    for bad, key in (("replicaCount2=1", "replicaCount2"), ("image.tag2=x", "tag2"),
                     ("logging.format=xml", "/logging/format"), ("replicaCount=two", "/replicaCount"),
                     ("prometheusRule.alerts.backupTooOld.marginHourz=3", "marginHourz")):
        rc, _, err = render(chart, bad)
        f.check(rc != 0 and key in err, f"--set {bad} fails naming {key}")
    rc, _, err = render(chart, "replicaCount=2", "leaderElection.enabled=false")
    f.check(rc != 0 and "leaderElection.enabled" in err, "two replicas without leader election are refused")


def cmd_check_renders(args):
    f = Failures()
    check_defaults(args.chart, f)
    check_variants(args.chart, f)
    for what in f:
        print(f"ERROR {what}", file=sys.stderr)
    return 1 if f else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--kube-version", default="1.28")
    v.add_argument("--core-out")
    v.add_argument("files", nargs="+")
    s = sub.add_parser("select")
    s.add_argument("kind")
    s.add_argument("file")
    c = sub.add_parser("check-renders")
    c.add_argument("chart")
    args = p.parse_args()
    return {"validate": cmd_validate, "select": cmd_select, "check-renders": cmd_check_renders}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
