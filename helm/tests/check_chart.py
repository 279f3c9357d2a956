#!/usr/bin/env python3
"""Checks the Helm chart helm/switchback with Helm's own Go library (helm-python-sdk).

What it checks, and why:
- `helm lint --strict` passes for each values file we ship or document: the defaults, the
  GPU and CPU sim examples, what deploy/kind/up.sh installs, external etcd (with difficulty
  routing, ServiceMonitors and OTLP on), and a mistralrs tier fed by an init container.
- Every manifest those renders produce validates against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: an unknown field is an error) for the oldest Kubernetes the
  chart claims, a middle one and the newest the validator knows. ServiceMonitor is a CRD the
  validator has no schema for: it is checked structurally here instead (its selector finds a
  Service, its endpoint ports exist on that Service).
- The config files inside the ConfigMaps parse, and hold only keys the binaries accept: the
  binaries reject unknown keys (serde deny_unknown_fields) and exit 64. ALLOWED below is the
  explicit allow-list; each allowed key's type is read from the Rust struct that declares it
  (controller/, worker/, router-plane/ src/config.rs), so a field renamed in Rust breaks this
  test rather than a cluster.
- Behaviour that a template change could quietly break: labels on every object, selectors
  that match, ports and probes that line up with the config, the preStop drain with flags
  sbctl really has (and an sbctl to run), no etcd objects with external etcd, the PDBs
  (none that could block a node drain) and the HPA, GPU requests in the GPU example, OTLP
  env on every Switchback container, the dashboard's metric names (read from the metrics
  modules), and values.schema.json refusing bad values.

Usage: check_chart.py  (run through helm/tests/check.sh, which makes the venv)
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "switchback"
EXAMPLES = CHART / "examples"
RELEASE = "sb"
NAMESPACE = "switchback"
# The chart's kubeVersion floor, a common production version, and the newest schema set the
# validator ships.
KUBE_VERSIONS = ["1.25.0", "1.30.0", "1.37.0"]
STANDARD_LABELS = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
]

# The keys the chart may write into each config file. None: a leaf, whose type comes from
# the Rust struct. A dict: a nested struct. Keys that vary per pod (id, advertise, node) come
# from the environment and must not be in a ConfigMap that all replicas share.
ALLOWED: dict[str, dict[str, Any]] = {
    "controller": {
        "listen": None,
        "metrics_listen": None,
        "stale_after_ms": None,
        "etcd": {"endpoints": None, "prefix": None, "lease_ttl_s": None, "ca_file": None, "cert_file": None, "key_file": None, "username": None, "password_file": None},
        "tls": {"ca_file": None, "cert_file": None, "key_file": None, "server_name": None},
    },
    "worker": {
        "tier": None,
        "model": None,
        "listen": None,
        "metrics_listen": None,
        "engine": {
            "kind": None,
            "model_path": None,
            "device": None,
            "dtype": None,
            "prefill_ms_per_token": None,
            "decode_ms_per_token": None,
            "default_tokens": None,
        },
        "max_concurrency": None,
        "max_queue": None,
        "default_max_tokens": None,
        "max_tokens_limit": None,
        "cost": {"input_per_mtok": None, "output_per_mtok": None},
        "etcd": {"endpoints": None, "prefix": None, "lease_ttl_s": None, "ca_file": None, "cert_file": None, "key_file": None, "username": None, "password_file": None},
        "tls": {"ca_file": None, "cert_file": None, "key_file": None, "server_name": None},
        "load_report_interval_ms": None,
        "shutdown_grace_s": None,
    },
    "router": {
        "listen": None,
        "etcd": {"endpoints": None, "prefix": None, "ca_file": None, "cert_file": None, "key_file": None, "username": None, "password_file": None},
        "tls": {"ca_file": None, "cert_file": None, "key_file": None, "server_name": None},
        "http_tls": {"cert_file": None, "key_file": None},
        "tiers": None,
        "default_tier": None,
        "max_body_bytes": None,
        "max_tokens_limit": None,
        "max_messages": None,
        "request_timeout_s": None,
        "max_attempts": None,
        "first_token_timeout_s": None,
        "admission_wait_ms": None,
        "max_pending": None,
        "suspect_hold_ms": None,
        "max_prompt_tokens": None,
        "max_message_bytes": None,
        "max_stop_sequences": None,
        "max_stop_bytes": None,
        "max_top_logprobs": None,
        "auth": {"keys_file": None, "disabled": None},
        "difficulty": {
            "predictor": None,
            "minilm_dir": None,
            "table": None,
            "default_quality": None,
        },
    },
}
# Keys the chart may render ahead of the Rust config (none today: every key must be a field
# of the binary's config struct). Until such a field is in the source the test says so
# instead of failing; once it is there, its type is checked like any other.
PENDING: dict[tuple[str, str], str] = {}
NOTED: set[tuple[str, str]] = set()

CONFIG_SOURCES = {
    "controller": ROOT / "controller" / "src" / "config.rs",
    "worker": ROOT / "worker" / "src" / "config.rs",
    "router": ROOT / "router-plane" / "src" / "config.rs",
}
# Shared raw structs a component's config refers to by path (switchback_common::tls::…).
SHARED_SOURCES = [ROOT / "common" / "src" / "tls" / "mod.rs", ROOT / "common" / "src" / "etcd_config.rs"]
# Every SWITCHBACK_* variable is a constant here; a binary reads those its sources name.
ENV_SOURCE = ROOT / "common" / "src" / "env.rs"
BINARIES = {
    "controller": "switchback-controller",
    "worker": "switchback-worker",
    "router": "switchback-router",
}


class Failures:
    """Collects failures so that one run reports all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.checks = 0

    def check(self, ok: bool, message: str) -> bool:
        self.checks += 1
        if not ok:
            self.items.append(message)
        return ok


F = Failures()


def log(message: str) -> None:
    print(f"check_chart: {message}", flush=True)


# --- the Rust side ---------------------------------------------------------------------


def strip_comments(source: str) -> str:
    return re.sub(r"//[^\n]*", "", source)


def rust_structs(path: Path) -> dict[str, dict[str, str]]:
    """Fields (name -> Rust type) of every struct, and of every struct-like enum variant as
    `Enum::variant` (variant lower-cased, as serde's rename_all = "lowercase" has it), in
    `path` and in the shared sources its types may name (`switchback_common::m::Type` is
    read as `Type`)."""
    structs: dict[str, dict[str, str]] = {}
    for shared in SHARED_SOURCES if path not in SHARED_SOURCES else []:
        structs.update(rust_structs(shared))
    # The product's structs only: a test module may hold look-alikes.
    source = strip_comments(path.read_text()).split("#[cfg(test)]")[0]
    source = re.sub(r"\bswitchback_common::(\w+::)+", "", source)
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", source, re.S):
        structs[m.group(1)] = dict(re.findall(r"pub (\w+): ([^\n]+?),\s*$", m.group(2), re.M))
    for m in re.finditer(r"pub enum (\w+) \{(.*?)\n\}", source, re.S):
        for v in re.finditer(r"(\w+) \{(.*?)\}", m.group(2), re.S):
            fields = dict(re.findall(r"(\w+): ([^\n]+?),\s*$", v.group(2), re.M))
            structs[f"{m.group(1)}::{v.group(1).lower()}"] = fields
    return structs


def env_names(*paths: Path) -> set[str]:
    """The variables the sources in `paths` read: the constants of common/src/env.rs they
    name as `env::CONST`."""
    consts = dict(re.findall(r'pub const (\w+): &str = "([A-Z_]+)"', ENV_SOURCE.read_text()))
    names: set[str] = set()
    for path in paths:
        used = set(re.findall(r"\benv::([A-Z_]+)\b", strip_comments(path.read_text())))
        names |= {value for name, value in consts.items() if name in used}
    return names


def u(bits: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"{v!r} is not an integer"
        if not 0 <= v < 2**bits:
            return f"{v} is outside u{bits}"
        return None

    return check


def i64(v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"{v!r} is not an integer"
    return None


def f64(v: Any) -> str | None:
    # serde's f64 takes YAML integers too.
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"{v!r} is not a number"
    return None


def string(v: Any) -> str | None:
    return None if isinstance(v, str) else f"{v!r} is not a string"


def socket_addr(v: Any) -> str | None:
    """Rust's SocketAddr: an IP literal and a port, no host names."""
    if not isinstance(v, str):
        return f"{v!r} is not a string"
    m = re.fullmatch(r"\[?([0-9A-Fa-f:.]+)\]?:(\d{1,5})", v)
    if not m or int(m.group(2)) > 65535:
        return f"{v!r} is not ip:port"
    try:
        ipaddress.ip_address(m.group(1))
    except ValueError:
        return f"{v!r} is not ip:port"
    return None


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else f"{v!r} is not a boolean"


def string_list(v: Any) -> str | None:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        return f"{v!r} is not a list of strings"
    return None


LEAF_TYPES: dict[str, Callable[[Any], str | None]] = {
    "String": string,
    "PathBuf": string,
    "SocketAddr": socket_addr,
    "u32": u(32),
    "u64": u(64),
    "usize": u(64),
    "i64": i64,
    "f64": f64,
    "Vec<String>": string_list,
    "bool": boolean,
}


def check_config(component: str, config: Any, where: str) -> None:
    """`config` holds only ALLOWED keys, each of the type its Rust field declares."""
    structs = rust_structs(CONFIG_SOURCES[component])
    if not F.check(isinstance(config, dict), f"{where}: the config is not a mapping"):
        return

    def walk(value: dict, allowed: dict, struct: str, path: str) -> None:
        fields = structs.get(struct)
        if not F.check(fields is not None, f"{where}: no struct {struct} in {CONFIG_SOURCES[component]}"):
            return
        for key, rust_type in fields.items():
            if not rust_type.startswith("Option<") and key != "kind":
                F.check(key in value, f"{where}: {path}{key} is required by {struct}")
        for key, v in value.items():
            full = f"{path}{key}"
            if not F.check(key in allowed, f"{where}: `{full}` is not on the allow-list for {component}"):
                continue
            rust_type = fields.get(key)
            if rust_type is None and (component, full) in PENDING:
                rust_type = PENDING[(component, full)]
                if (component, full) not in NOTED:
                    NOTED.add((component, full))
                    log(f"note: {component} `{full}` is not in {CONFIG_SOURCES[component].relative_to(ROOT)} "
                        f"yet; checked as the pending {rust_type}")
            if not F.check(rust_type is not None,
                           f"{where}: `{full}` is not a field of {struct} ({CONFIG_SOURCES[component].relative_to(ROOT)}): the binary would exit 64"):
                continue
            inner = re.fullmatch(r"Option<(.+)>", rust_type)
            rust_type = inner.group(1) if inner else rust_type
            sub = allowed[key]
            if isinstance(sub, dict):
                if not F.check(isinstance(v, dict), f"{where}: `{full}` must be a mapping"):
                    continue
                if rust_type == "RawEngine":
                    kind = v.get("kind")
                    if F.check(f"RawEngine::{kind}" in structs, f"{where}: engine.kind {kind!r} is not a variant of RawEngine"):
                        rest = {k: x for k, x in v.items() if k != "kind"}
                        walk(rest, sub, f"RawEngine::{kind}", f"{full}.")
                else:
                    walk(v, sub, rust_type, f"{full}.")
            else:
                checker = LEAF_TYPES.get(rust_type)
                if F.check(checker is not None, f"{where}: no type check for Rust type {rust_type} of `{full}`"):
                    problem = checker(v)
                    F.check(problem is None, f"{where}: `{full}`: {problem}")

    walk(config, ALLOWED[component], "RawConfig", "")


def check_allow_list_against_rust() -> None:
    """Every allowed key is a real field (or a named pending one)."""
    for component, allowed in ALLOWED.items():
        structs = rust_structs(CONFIG_SOURCES[component])
        source = CONFIG_SOURCES[component].read_text()
        F.check(source.count("deny_unknown_fields") >= 1
                and all("deny_unknown_fields" in shared.read_text() for shared in SHARED_SOURCES),
                f"{CONFIG_SOURCES[component]}: expected deny_unknown_fields on the raw structs")

        def walk(allowed: dict, struct_names: list[str], path: str) -> None:
            fields: dict[str, str] = {}
            for s in struct_names:
                fields.update(structs.get(s, {}))
            for key, sub in allowed.items():
                if key == "kind" and struct_names[0].startswith("RawEngine::"):
                    continue
                if key not in fields:
                    F.check((component, path + key) in PENDING,
                            f"allow-list: {component} `{path}{key}` is not a field of {struct_names}")
                    continue
                if isinstance(sub, dict):
                    inner = re.sub(r"^Option<(.+)>$", r"\1", fields[key])
                    names = [n for n in structs if n.startswith(inner + "::")] or [inner]
                    walk(sub, names, f"{path}{key}.")

        walk(allowed, ["RawConfig"], "")


def sbctl_flags() -> set[str]:
    """Long flags sbctl's clap derive defines (field names, kebab-cased)."""
    source = strip_comments((ROOT / "controller" / "src" / "bin" / "sbctl.rs").read_text())
    fields = re.findall(r"#\[arg\([^\]]*long[^\]]*\)\]\s*(?:pub )?(\w+):", source, re.S)
    fields += re.findall(r"#\[arg\(long\)\]\s*(\w+):", source)
    return {"--" + f.replace("_", "-") for f in fields}


def metric_names() -> set[str]:
    """Every series name the router and controller expose, from their metrics modules:
    prefix + registered name, with the suffixes prometheus-client adds by type."""
    series: set[str] = set()
    for prefix, path in [
        ("switchback_router", ROOT / "router-plane" / "src" / "metrics.rs"),
        ("switchback_controller", ROOT / "controller" / "src" / "metrics.rs"),
    ]:
        source = strip_comments(path.read_text())
        F.check(f'with_prefix("{prefix}")' in source, f"{path}: the registry prefix is not {prefix}")
        lets = dict(re.findall(r"let (\w+) =\s*([^;]+);", source, re.S))
        for name, var in re.findall(r'register\(\s*"(\w+)",\s*"[^"]*",\s*(\w+)\.clone\(\)', source, re.S):
            construction = lets.get(var, "")
            if "Counter" in construction:
                series.add(f"{prefix}_{name}_total")
            elif "Histogram" in construction:
                series |= {f"{prefix}_{name}_{s}" for s in ("bucket", "sum", "count")}
            else:
                series.add(f"{prefix}_{name}")
        for name in re.findall(r'tier_gauge(?:_f)?\(\s*&mut r,\s*"(\w+)"', source):
            series.add(f"{prefix}_{name}")
    return series


# --- rendering ---------------------------------------------------------------------------


def load_values(*paths: Path) -> dict[str, Any]:
    """Values files merged like Helm's repeated -f: maps key by key, the later file winning."""

    def merge(base: dict, override: dict) -> dict:
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    values: dict[str, Any] = {}
    for path in paths:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    return values


def render(chart: helm.Chart, values: dict[str, Any] | None, release: str = RELEASE) -> list[dict]:
    """Renders like `helm template` and returns the objects (NOTES.txt left out)."""
    manifests = chart.render(values, name=release, namespace=NAMESPACE, is_install=True)
    objects = []
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc.setdefault("__template", template)
                objects.append(doc)
    return objects


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("__")}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def component_of(obj: dict) -> str:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def pod_templates(objects: list[dict]) -> list[tuple[dict, dict]]:
    return [(o, o["spec"]["template"]) for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- checks on one render -----------------------------------------------------------------


DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def check_schemas(objects: list[dict], case: str) -> None:
    for obj in objects:
        where = f"{case}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: check_service_monitors looks at it
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(strip(obj), version, strict=True)
            except kubernetes_validate.ValidationError as e:
                F.check(False, f"{where}: invalid for Kubernetes {version}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                F.check(False, f"{where}: Kubernetes {version} has no {obj['apiVersion']} {obj['kind']}")


def check_metadata(objects: list[dict], case: str) -> None:
    names = set()
    for obj in objects:
        meta = obj["metadata"]
        where = f"{case}: {obj['kind']}/{meta['name']}"
        F.check((obj["kind"], meta["name"]) not in names, f"{where}: rendered twice")
        names.add((obj["kind"], meta["name"]))
        F.check(bool(DNS1123_SUBDOMAIN.match(meta["name"])) and len(meta["name"]) <= 253, f"{where}: bad name")
        if obj["kind"] == "Service":
            F.check(bool(DNS1035_LABEL.match(meta["name"])) and len(meta["name"]) <= 63,
                    f"{where}: a Service name must be a DNS-1035 label of at most 63 characters")
        F.check(meta.get("namespace") == NAMESPACE, f"{where}: namespace is {meta.get('namespace')!r}")
        labels = meta.get("labels", {})
        for label in STANDARD_LABELS:
            F.check(label in labels, f"{where}: label {label} missing")
        for value in labels.values():
            F.check(isinstance(value, str) and len(value) <= 63 and bool(LABEL_VALUE.match(value)),
                    f"{where}: label value {value!r} is not valid")
        F.check(labels.get("app.kubernetes.io/instance") == obj.get("__release", labels.get("app.kubernetes.io/instance")),
                f"{where}: instance label")
        F.check(labels.get("app.kubernetes.io/part-of") == "switchback", f"{where}: part-of label")
        F.check(labels.get("app.kubernetes.io/managed-by") == "Helm", f"{where}: managed-by label")
    for owner, template in pod_templates(objects):
        where = f"{case}: {owner['kind']}/{owner['metadata']['name']}"
        labels = template["metadata"]["labels"]
        for label in STANDARD_LABELS:
            F.check(label in labels, f"{where}: pod label {label} missing")
        F.check(matches(owner["spec"]["selector"]["matchLabels"], labels), f"{where}: the selector does not match the pod labels")


ZONE_LABELS = {"topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone"}


def check_no_pinning(objects: list[dict], case: str) -> None:
    """Nothing pins pods to one node or zone: no hostPath, no zone in a nodeSelector or a
    node affinity (spreading over zones is fine), no StorageClass the values did not ask for."""
    text = json.dumps([strip(o) for o in objects])
    F.check('"hostPath"' not in text, f"{case}: a hostPath volume is rendered")
    for owner, template in pod_templates(objects):
        where = f"{case}: {owner['kind']}/{owner['metadata']['name']}"
        spec = template["spec"]
        F.check(not ZONE_LABELS & set(spec.get("nodeSelector", {})), f"{where}: nodeSelector pins a zone")
        affinity = json.dumps(spec.get("affinity", {}).get("nodeAffinity", {}))
        F.check(not any(z in affinity for z in ZONE_LABELS), f"{where}: node affinity on a zone")
        if component_of(owner) == "etcd":
            F.check(not spec.get("nodeSelector") and not spec.get("affinity"), f"{where}: etcd members are pinned")
    for sts in by_kind(objects, "StatefulSet"):
        for claim in sts["spec"].get("volumeClaimTemplates", []):
            F.check("storageClassName" not in claim["spec"],
                    f"{case}: the etcd claim names a StorageClass although none was asked for")


def check_services(objects: list[dict], case: str) -> None:
    pods = pod_templates(objects)
    for svc in by_kind(objects, "Service"):
        where = f"{case}: Service/{svc['metadata']['name']}"
        selected = [t for _, t in pods if matches(svc["spec"]["selector"], t["metadata"]["labels"])]
        if not F.check(bool(selected), f"{where}: selects no pod template"):
            continue
        for port in svc["spec"]["ports"]:
            for t in selected:
                names = {p["name"] for c in t["spec"]["containers"] for p in c.get("ports", [])}
                F.check(port["targetPort"] in names, f"{where}: targetPort {port['targetPort']} is not a container port")


def check_service_monitors(objects: list[dict], case: str) -> None:
    """Structural check of the ServiceMonitor CRD objects (no schema in kubernetes-validate)."""
    services = by_kind(objects, "Service")
    for sm in by_kind(objects, "ServiceMonitor"):
        where = f"{case}: ServiceMonitor/{sm['metadata']['name']}"
        F.check(sm["apiVersion"] == "monitoring.coreos.com/v1", f"{where}: apiVersion")
        spec = sm["spec"]
        F.check(set(spec) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, f"{where}: unexpected spec keys {set(spec)}")
        F.check(spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, f"{where}: namespaceSelector")
        selected = [s for s in services if matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
        F.check(len(selected) == 1, f"{where}: selects {len(selected)} Services, expected 1")
        for endpoint in spec["endpoints"]:
            F.check(set(endpoint) <= {"port", "path", "interval", "relabelings", "scheme", "tlsConfig"}, f"{where}: endpoint keys {set(endpoint)}")
            F.check(endpoint.get("path") == "/metrics", f"{where}: path")
            F.check(bool(re.fullmatch(r"[0-9]+(ms|s|m|h)", endpoint.get("interval", ""))), f"{where}: interval")
            for s in selected:
                F.check(endpoint["port"] in {p["name"] for p in s["spec"]["ports"]},
                        f"{where}: port {endpoint['port']} is not a port of Service/{s['metadata']['name']}")
            for r in endpoint.get("relabelings", []):
                F.check(set(r) <= {"sourceLabels", "targetLabel", "action", "regex", "replacement", "separator"},
                        f"{where}: relabeling keys {set(r)}")


def configs(objects: list[dict], case: str) -> dict[str, list[tuple[dict, dict]]]:
    """component -> [(ConfigMap, parsed config)]."""
    found: dict[str, list[tuple[dict, dict]]] = {"controller": [], "worker": [], "router": []}
    for cm in by_kind(objects, "ConfigMap"):
        component = component_of(cm)
        if component not in found:
            continue
        key = f"{component}.yaml"
        where = f"{case}: ConfigMap/{cm['metadata']['name']}"
        if not F.check(list(cm.get("data", {})) == [key], f"{where}: expected exactly the key {key}"):
            continue
        try:
            config = yaml.safe_load(cm["data"][key])
        except yaml.YAMLError as e:
            F.check(False, f"{where}: {key} is not YAML: {e}")
            continue
        check_config(component, config, f"{where} {key}")
        found[component].append((cm, config))
    return found


def controller_image(objects: list[dict]) -> str:
    (d,) = [o for o in by_kind(objects, "Deployment") if component_of(o) == "controller"]
    return d["spec"]["template"]["spec"]["containers"][0]["image"]


def port_of(socket: str) -> int:
    return int(socket.rsplit(":", 1)[1])


def check_wiring(objects: list[dict], found: dict, values: dict, case: str) -> None:
    """Each Switchback container runs its binary on its ConfigMap, listens where its ports and
    probes say, and gets its per-pod identity from the downward API."""
    config_by_name = {cm["metadata"]["name"]: (component, cfg) for component, items in found.items() for cm, cfg in items}
    known_env = {
        "controller": env_names(CONFIG_SOURCES["controller"], ROOT / "common" / "src" / "telemetry.rs"),
        "worker": env_names(CONFIG_SOURCES["worker"], ROOT / "common" / "src" / "telemetry.rs"),
        "router": env_names(CONFIG_SOURCES["router"], ROOT / "common" / "src" / "telemetry.rs"),
    }
    otel = (values or {}).get("otel", {}).get("endpoint", "")
    flags = sbctl_flags()
    for owner, template in pod_templates(objects):
        component = component_of(owner)
        where = f"{case}: {owner['kind']}/{owner['metadata']['name']}"
        spec = template["spec"]
        F.check(spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{where}: pods must run as non-root")
        F.check(spec.get("securityContext", {}).get("runAsUser") == 10001, f"{where}: the images run as uid 10001")
        if component == "etcd":
            continue
        (container,) = spec["containers"]
        env = env_of(container)
        cmd = container["command"]
        F.check(cmd[0] == BINARIES[component] and cmd[1] == "--config", f"{where}: command {cmd}")
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        config_dir, config_file = cmd[2].rsplit("/", 1)
        mount = mounts.get(config_dir)
        if not F.check(mount is not None, f"{where}: {config_dir} is not mounted"):
            continue
        cm_name = volumes[mount["name"]]["configMap"]["name"]
        if not F.check(cm_name in config_by_name, f"{where}: mounts ConfigMap {cm_name}, which is not a {component} config"):
            continue
        cm_component, config = config_by_name[cm_name]
        F.check(cm_component == component and config_file == f"{component}.yaml", f"{where}: wrong config file")
        F.check(template["metadata"].get("annotations", {}).get("checksum/config"), f"{where}: no config checksum (pods would not roll on a config change)")

        for name in env:
            if name.startswith("SWITCHBACK_"):
                F.check(name in known_env[component], f"{where}: {name} is not a variable {BINARIES[component]} reads")
        if otel:
            F.check(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value") == otel, f"{where}: OTEL_EXPORTER_OTLP_ENDPOINT missing")
        else:
            F.check("OTEL_EXPORTER_OTLP_ENDPOINT" not in env, f"{where}: OTEL_EXPORTER_OTLP_ENDPOINT set without otel.endpoint")
        F.check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name", f"{where}: POD_NAME")
        F.check(env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP", f"{where}: POD_IP")
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        names = list(env)

        def probe_port(probe: str) -> int | None:
            p = container.get(probe, {}).get("httpGet", {}).get("port")
            return ports.get(p, p)

        if component == "router":
            F.check(port_of(config["listen"]) == ports["http"], f"{where}: listen vs the http port")
            F.check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{where}: readiness must be /readyz")
            F.check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{where}: liveness must be /healthz")
            F.check(probe_port("readinessProbe") == ports["http"], f"{where}: probe port")
            F.check(config["default_tier"] in config["tiers"], f"{where}: default_tier not in tiers")
            for key, path in config.get("difficulty", {}).items():
                if key != "default_quality":
                    F.check(any(path.startswith(m.rstrip("/") + "/") for m in mounts),
                            f"{where}: difficulty.{key} {path} is on no mounted volume")
        if component == "controller":
            F.check(port_of(config["listen"]) == ports["grpc"], f"{where}: listen vs the grpc port")
            F.check(port_of(config["metrics_listen"]) == ports["metrics"], f"{where}: metrics_listen vs the metrics port")
            F.check(probe_port("livenessProbe") == ports["metrics"] and container["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{where}: liveness")
            F.check(env.get("SWITCHBACK_CONTROLLER_ID", {}).get("value") == "$(POD_NAME)", f"{where}: controller id")
            F.check(env.get("SWITCHBACK_ADVERTISE", {}).get("value") == f"$(POD_IP):{ports['grpc']}", f"{where}: advertise")
        if component == "worker":
            F.check(port_of(config["listen"]) == ports["grpc"], f"{where}: listen vs the grpc port")
            F.check(port_of(config["metrics_listen"]) == ports["metrics"], f"{where}: metrics_listen vs the metrics port")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                F.check(probe_port(probe) == ports["metrics"] and container[probe]["httpGet"]["path"] == "/healthz", f"{where}: {probe}")
            F.check(env.get("SWITCHBACK_WORKER_ID", {}).get("value") == "$(POD_NAME)", f"{where}: the worker id must be the pod name")
            F.check(env.get("SWITCHBACK_ADVERTISE", {}).get("value") == f"$(POD_IP):{ports['grpc']}", f"{where}: advertise must be the pod IP and the grpc port")
            F.check(env.get("SWITCHBACK_NODE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName", f"{where}: node")
            # $(VAR) references resolve only to variables defined earlier in the list.
            F.check(names.index("POD_NAME") < names.index("SWITCHBACK_WORKER_ID") and names.index("POD_IP") < names.index("SWITCHBACK_ADVERTISE"), f"{where}: env order")
            F.check(owner["metadata"]["labels"].get("switchback.io/tier") == config["tier"], f"{where}: tier label vs config")
            # The preStop hook drains this very worker through sbctl, with flags sbctl has.
            hook = container["lifecycle"]["preStop"]["exec"]["command"]
            F.check(hook[:2] == ["/bin/sh", "-c"], f"{where}: preStop must run through a shell to expand $POD_NAME")
            script = hook[-1]
            F.check(re.search(r'\bsbctl\b.*\bdrain "\$POD_NAME"', script) is not None, f"{where}: preStop does not drain $POD_NAME: {script}")
            # sbctl is in the controller image only: an init container copies it into a
            # volume the worker mounts, at the path the hook runs.
            sbctl = re.search(r"exec (\S*sbctl) ", script)
            if F.check(sbctl is not None, f"{where}: preStop does not exec sbctl"):
                tools_dir = sbctl.group(1).rsplit("/", 1)[0]
                tools = mounts.get(tools_dir)
                copiers = [i for i in spec.get("initContainers", [])
                           if i["image"] == controller_image(objects)
                           and i["command"] == ["cp", "/usr/local/bin/sbctl", sbctl.group(1)]
                           and any(m["mountPath"] == tools_dir and tools and m["name"] == tools["name"] for m in i["volumeMounts"])]
                F.check(len(copiers) == 1, f"{where}: no init container puts sbctl at {sbctl.group(1)}")
            used = set(re.findall(r"(--[a-z][a-z-]*)", script))
            F.check(used <= flags, f"{where}: preStop uses flags sbctl lacks: {sorted(used - flags)}")
            F.check("--wait" in used, f"{where}: preStop must wait for the drain")
            endpoints = re.search(r"--etcd-endpoints='([^']*)'", script)
            F.check(endpoints is not None and endpoints.group(1).split(",") == config["etcd"]["endpoints"], f"{where}: sbctl's etcd endpoints differ from the worker's")
            prefix = re.search(r"--etcd-prefix='([^']*)'", script)
            F.check(prefix is not None and prefix.group(1) == config["etcd"]["prefix"], f"{where}: sbctl's etcd prefix differs from the worker's")
            timeout = re.search(r"--timeout-s=(\d+)", script)
            grace = spec["terminationGracePeriodSeconds"]
            F.check(timeout is not None and grace >= int(timeout.group(1)) + config.get("shutdown_grace_s", 30),
                    f"{where}: terminationGracePeriodSeconds {grace} does not cover the drain and the shutdown grace")
            engine = config["engine"]
            if engine["kind"] == "mistralrs":
                model_mounts = [p for p in mounts if engine["model_path"].startswith(p.rstrip("/") + "/")]
                F.check(bool(model_mounts), f"{where}: model_path {engine['model_path']} is on no mounted volume")


def check_cluster_shape(objects: list[dict], found: dict, values: dict, case: str) -> None:
    """Things that hold for every values file."""
    controllers = [o for o in by_kind(objects, "Deployment") if component_of(o) == "controller"]
    routers = [o for o in by_kind(objects, "Deployment") if component_of(o) == "router"]
    workers = [o for o in by_kind(objects, "Deployment") if component_of(o) == "worker"]
    F.check(len(controllers) == 1 and len(routers) == 1, f"{case}: one controller and one router Deployment")
    F.check(len(workers) == len(values_or_default(values)["tiers"]), f"{case}: one worker Deployment per tier")
    F.check(len(found["worker"]) == len(workers) and len(found["controller"]) == 1 and len(found["router"]) == 1,
            f"{case}: one ConfigMap per component and tier")

    # The controller PDB keeps one replica through voluntary disruptions.
    pdbs = [p for p in by_kind(objects, "PodDisruptionBudget") if component_of(p) == "controller"]
    if values_or_default(values)["controller"]["replicas"] < 2:
        F.check(not pdbs, f"{case}: a controller PDB over one replica would block node drains")
    elif F.check(len(pdbs) == 1, f"{case}: the controller PodDisruptionBudget is missing"):
        F.check(pdbs[0]["spec"].get("minAvailable") == 1, f"{case}: controller PDB minAvailable")
        if controllers:
            F.check(matches(pdbs[0]["spec"]["selector"]["matchLabels"], controllers[0]["spec"]["template"]["metadata"]["labels"]),
                    f"{case}: the controller PDB selects no controller pod")
            F.check(controllers[0]["spec"]["replicas"] >= 2, f"{case}: controllers need a standby")

    # Every PDB selects pods, and none can block a node drain forever: each leaves room for
    # at least one pod of what it guards to go.
    v = values_or_default(values)
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        where = f"{case}: PodDisruptionBudget/{pdb['metadata']['name']}"
        guarded = [o for o in by_kind(objects, "Deployment") + by_kind(objects, "StatefulSet")
                   if matches(pdb["spec"]["selector"]["matchLabels"], o["spec"]["template"]["metadata"]["labels"])]
        if F.check(len(guarded) == 1, f"{where}: guards {len(guarded)} workloads"):
            owner = guarded[0]
            replicas = owner["spec"].get("replicas")
            if replicas is None:  # under the router HPA
                replicas = v["router"]["autoscaling"]["minReplicas"]
            min_available = pdb["spec"].get("minAvailable")
            max_unavailable = pdb["spec"].get("maxUnavailable")
            F.check(replicas > 1, f"{where}: a PDB over a single replica blocks node drains")
            if isinstance(min_available, int):
                F.check(min_available < replicas, f"{where}: minAvailable {min_available} of {replicas} blocks node drains")
            if isinstance(max_unavailable, int):
                F.check(max_unavailable >= 1, f"{where}: maxUnavailable 0 blocks node drains")
    router_min = v["router"]["autoscaling"]["minReplicas"] if v["router"]["autoscaling"]["enabled"] else v["router"]["replicas"]
    router_pdbs = [p for p in by_kind(objects, "PodDisruptionBudget") if component_of(p) == "router"]
    F.check(len(router_pdbs) == int(v["router"]["podDisruptionBudget"]["enabled"] and router_min > 1),
            f"{case}: router PDB rendered {len(router_pdbs)} times for {router_min} replicas")
    etcd_pdbs = [p for p in by_kind(objects, "PodDisruptionBudget") if component_of(p) == "etcd"]
    bundled = not v["etcd"]["external"]["endpoints"]
    F.check(len(etcd_pdbs) == int(bundled and v["etcd"]["replicas"] > 1), f"{case}: etcd PDB for {v['etcd']['replicas']} members")

    # The router autoscaler, when on, owns the replica count and has CPU requests to scale on.
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    if values_or_default(values)["router"]["autoscaling"]["enabled"]:
        if F.check(len(hpas) == 1, f"{case}: the router HorizontalPodAutoscaler is missing") and routers:
            hpa = hpas[0]
            F.check(hpa["apiVersion"] == "autoscaling/v2", f"{case}: HPA apiVersion")
            F.check(hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": routers[0]["metadata"]["name"]},
                    f"{case}: the HPA does not target the router Deployment")
            F.check("replicas" not in routers[0]["spec"], f"{case}: the router Deployment sets replicas under an HPA")
            (c,) = routers[0]["spec"]["template"]["spec"]["containers"]
            F.check("cpu" in c.get("resources", {}).get("requests", {}), f"{case}: the HPA scales on CPU but the router requests none")
    else:
        F.check(not hpas, f"{case}: an HPA rendered with autoscaling off")

    # The router's tiers are exactly the workers' tiers, cheapest first.
    if found["router"]:
        router = found["router"][0][1]
        costs = {c["tier"]: sum(c.get("cost", {}).values()) for _, c in found["worker"]}
        F.check(sorted(router["tiers"]) == sorted(costs), f"{case}: router tiers {router['tiers']} vs worker tiers {sorted(costs)}")
        ordered = [costs.get(t, 0) for t in router["tiers"]]
        F.check(ordered == sorted(ordered), f"{case}: router tiers {router['tiers']} are not in rising cost {ordered}")
        # Every component talks to the same etcd under the same prefix.
        etcds = {json.dumps(c["etcd"].get("endpoints")) for items in found.values() for _, c in items}
        prefixes = {c["etcd"].get("prefix") for items in found.values() for _, c in items}
        F.check(len(etcds) == 1 and len(prefixes) == 1, f"{case}: components disagree on etcd: {etcds} {prefixes}")

    # The dashboard only plots series the binaries expose.
    dashboards = [c for c in by_kind(objects, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    if values_or_default(values)["metrics"]["dashboard"]["enabled"]:
        if F.check(len(dashboards) == 1, f"{case}: the Grafana dashboard ConfigMap is missing"):
            board = json.loads(dashboards[0]["data"]["switchback.json"])
            exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
            F.check(len(exprs) >= 10, f"{case}: the dashboard has only {len(exprs)} queries")
            known = metric_names()
            used = {m for e in exprs for m in re.findall(r"\bswitchback_\w+", e)}
            F.check(used <= known, f"{case}: the dashboard uses unknown metrics {sorted(used - known)}")
            F.check(len(used) >= 15, f"{case}: the dashboard covers only {len(used)} series")


def values_or_default(values: dict | None) -> dict:
    merged = DEFAULTS_CACHE["chart"].merge_values(values)
    return merged


DEFAULTS_CACHE: dict[str, Any] = {}
VERBOSE = "-v" in sys.argv[1:]


def check_render(chart: helm.Chart, case: str, values: dict | None, release: str = RELEASE) -> tuple[list[dict], dict]:
    objects = render(chart, values, release)
    for o in objects:
        o["__release"] = release
    check_schemas(objects, case)
    check_metadata(objects, case)
    check_no_pinning(objects, case)
    check_services(objects, case)
    check_service_monitors(objects, case)
    found = configs(objects, case)
    check_wiring(objects, found, values or {}, case)
    check_cluster_shape(objects, found, values, case)
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    log(f"{case}: {len(objects)} objects ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})")
    return objects, found


def strip_release(objects: list[dict]) -> None:
    for o in objects:
        o.pop("__release", None)


# --- the cases ---------------------------------------------------------------------------


def lint(values: dict | None, case: str) -> None:
    for version in ("v1.25.0", "v1.30.0"):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=version)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
        F.check(not problems, f"{case}: helm lint --strict (Kubernetes {version}): {problems}")


def expect_refused(chart: helm.Chart, values: dict, needle: str, why: str) -> None:
    """The values must fail `helm install` (schema or template), with `needle` in the message."""
    try:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        F.check(needle in str(e), f"refusing {why}: the error does not mention {needle!r}: {e}")
        if VERBOSE:
            log(f"refused {why}: {e}")
        return
    F.check(False, f"values.schema.json/templates accepted {why}")


def with_tier(base: dict, **changes: Any) -> dict:
    tier = dict(base["tiers"][0])
    for k, v in changes.items():
        if v is None:
            tier.pop(k, None)
        else:
            tier[k] = v
    return {"tiers": [tier]}


def main() -> int:
    start = time.monotonic()
    log(f"helm-python-sdk {helm.__version__} (libhelm_c {helm.helm_c_version()}, Helm {helm.helm_sdk_version()}), "
        f"kubernetes-validate {kubernetes_validate.__version__}")
    check_allow_list_against_rust()

    gpu = load_values(EXAMPLES / "gpu-values.yaml")
    cpu = load_values(EXAMPLES / "cpu-sim-values.yaml")
    kind = load_values(EXAMPLES / "cpu-sim-values.yaml", ROOT / "deploy" / "kind" / "values.yaml")
    external = {
        "etcd": {"external": {"endpoints": ["http://etcd-a.infra:2379", "http://etcd-b.infra:2379", "10.0.0.7:2379"]},
                 "prefix": "/team-a/switchback/"},
        "otel": {"endpoint": "http://otel-collector.observability:4317"},
        # Listed expensive-first: the router must still get them cheapest-first.
        "tiers": [
            {"name": "big", "model": "m-big", "engine": {"kind": "sim"}, "cost": {"inputPerMtok": 1, "outputPerMtok": 2}},
            {"name": "tiny", "model": "m-tiny", "engine": {"kind": "sim", "defaultTokens": 8}, "cost": {"inputPerMtok": 0.01}},
            {"name": "mid", "model": "m-mid", "replicas": 3, "engine": {"kind": "sim"}, "cost": {"inputPerMtok": 0.2, "outputPerMtok": 0.4},
             "extraConfig": {"max_queue": 16, "default_max_tokens": 128, "load_report_interval_ms": 500}},
        ],
        "router": {"defaultTier": "mid", "autoscaling": {"enabled": False}, "replicas": 3,
                   "extraConfig": {"max_body_bytes": 8388608, "max_attempts": 2, "suspect_hold_ms": 3000},
                   "difficulty": {"predictor": "predictor.json", "minilmDir": "all-minilm-l6-v2", "defaultQuality": 0.9,
                                  "volume": {"persistentVolumeClaim": {"claimName": "routing", "readOnly": True}}}},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }
    # TLS everywhere: mTLS between components, HTTPS on the router, TLS and a user to an
    # external etcd.
    tls = {
        "tls": {"enabled": True, "issuer": {"name": "cluster-ca"}},
        "etcd": {"external": {"endpoints": ["https://etcd-a.infra:2379"]},
                 "tls": {"secretName": "etcd-client-tls"},
                 "auth": {"username": "switchback", "passwordSecretName": "etcd-password"}},
        "router": {"httpTls": {"secretName": "api-tls"}},
        "metrics": {"serviceMonitor": {"enabled": True}},
    }
    # A model fetched by an initContainer into an emptyDir, on CPU.
    init_fetch = {
        "tiers": [{"name": "small", "model": "smollm2-135m", "engine": {"kind": "mistralrs", "modelPath": "smollm2.gguf"},
                   "modelSource": {"initContainer": {"image": "busybox:1.36", "command": ["sh", "-c", "wget -O \"$MODEL_PATH\" http://models.internal/smollm2.gguf"]},
                                   "sizeLimit": "1Gi"}}],
    }

    with helm.Chart.load(CHART) as chart:
        DEFAULTS_CACHE["chart"] = chart
        F.check(chart.metadata.get("apiVersion") == "v2", "Chart.yaml apiVersion must be v2")
        F.check(chart.schema is not None, "the chart has no values.schema.json")

        cases: list[tuple[str, dict | None, str]] = [
            ("default values", None, RELEASE),
            ("examples/gpu-values.yaml", gpu, RELEASE),
            ("examples/cpu-sim-values.yaml", cpu, RELEASE),
            # What deploy/kind/up.sh installs.
            ("cpu-sim + deploy/kind/values.yaml", kind, "switchback"),
            # The longest release name Helm allows, to catch names that grow past 63.
            ("external etcd", external, "a" * 53),
            ("mistralrs from an initContainer", init_fetch, RELEASE),
            ("TLS everywhere", tls, RELEASE),
        ]
        rendered: dict[str, tuple[list[dict], dict]] = {}
        for case, values, release in cases:
            lint(values, case)
            rendered[case] = check_render(chart, case, values, release)

        # Default values: the bundled etcd, one member, no zone pinning.
        objects, found = rendered["default values"]
        sts = by_kind(objects, "StatefulSet")
        if F.check(len(sts) == 1 and component_of(sts[0]) == "etcd", "default: the bundled etcd StatefulSet is missing"):
            F.check(sts[0]["spec"]["replicas"] == 1 and sts[0]["spec"]["podManagementPolicy"] == "Parallel", "default: etcd replicas/policy")
            headless = [s for s in by_kind(objects, "Service") if s["metadata"]["name"] == sts[0]["spec"]["serviceName"]]
            F.check(len(headless) == 1 and headless[0]["spec"].get("clusterIP") == "None", "default: etcd needs its headless Service")
        F.check(all(c["etcd"]["endpoints"] == [f"http://{RELEASE}-switchback-etcd-0.{RELEASE}-switchback-etcd-headless.{NAMESPACE}.svc:2379"]
                    for items in found.values() for _, c in items), "default: components must use the bundled etcd member")
        F.check(not by_kind(objects, "ServiceMonitor"), "default: ServiceMonitors rendered although disabled")

        # The GPU example: every worker asks for a GPU and runs mistral.rs on CUDA, on GPU nodes.
        objects, found = rendered["examples/gpu-values.yaml"]
        for d in [o for o in by_kind(objects, "Deployment") if component_of(o) == "worker"]:
            where = f"gpu example: {d['metadata']['name']}"
            spec = d["spec"]["template"]["spec"]
            (c,) = spec["containers"]
            limits = c.get("resources", {}).get("limits", {})
            F.check(int(limits.get("nvidia.com/gpu", 0)) >= 1, f"{where}: no nvidia.com/gpu limit")
            F.check(spec.get("tolerations") and (spec.get("nodeSelector") or spec.get("affinity")), f"{where}: not steered to GPU nodes")
        F.check(all(c["engine"]["kind"] == "mistralrs" and c["engine"]["device"].startswith("cuda") for _, c in found["worker"]),
                "gpu example: workers must run mistralrs on cuda")
        F.check(len(found["worker"]) >= 2, "gpu example: at least two tiers")
        F.check(len(by_kind(objects, "ServiceMonitor")) == 3, "gpu example: ServiceMonitors for router, controller and worker")
        sts = by_kind(objects, "StatefulSet")
        F.check(len(sts) == 1 and sts[0]["spec"]["replicas"] == 3 and sts[0]["spec"].get("volumeClaimTemplates"), "gpu example: 3 etcd members with volumes")
        if sts:
            peers = [a for a in sts[0]["spec"]["template"]["spec"]["containers"][0]["command"] if a.startswith("--initial-cluster=")]
            F.check(len(peers) == 1 and peers[0].count("=http://") == 3, f"gpu example: etcd --initial-cluster lists 3 members: {peers}")

        # The CPU example: sim engines only, nothing that needs a GPU.
        objects, found = rendered["examples/cpu-sim-values.yaml"]
        F.check(all(c["engine"]["kind"] == "sim" for _, c in found["worker"]), "cpu example: sim engines only")
        F.check("nvidia.com/gpu" not in json.dumps([strip(o) for o in objects]), "cpu example: asks for a GPU")
        F.check(len(found["worker"]) >= 2, "cpu example: at least two tiers")

        # The kind install: worker tiers on the labelled inference nodes of cluster.yaml.
        objects, found = rendered["cpu-sim + deploy/kind/values.yaml"]
        cluster = yaml.safe_load((ROOT / "deploy" / "kind" / "cluster.yaml").read_text())
        pools = {n.get("labels", {}).get("switchback.io/pool") for n in cluster["nodes"] if n["role"] == "worker"}
        for d in [o for o in by_kind(objects, "Deployment") if component_of(o) == "worker"]:
            selector = d["spec"]["template"]["spec"].get("nodeSelector", {})
            F.check(selector.get("switchback.io/pool") in pools, f"kind: {d['metadata']['name']} lands on no kind worker node")
        F.check(len([n for n in cluster["nodes"] if n["role"] == "worker"]) == 2 and cluster["nodes"][0]["role"] == "control-plane",
                "kind: cluster.yaml should have 1 control plane and 2 workers")
        F.check([s["metadata"]["name"] for s in by_kind(objects, "Service") if component_of(s) == "router"] == ["switchback-router"],
                "kind: up.sh port-forwards service/switchback-router")

        # External etcd: no etcd objects at all, every component on the given endpoints.
        objects, found = rendered["external etcd"]
        F.check(not [o for o in objects if component_of(o) == "etcd" or "etcd" in o["metadata"]["name"]],
                "external etcd: etcd objects rendered")
        want = external["etcd"]["external"]["endpoints"]
        F.check(all(c["etcd"]["endpoints"] == want and c["etcd"]["prefix"] == "/team-a/switchback/"
                    for items in found.values() for _, c in items), "external etcd: components must use the external endpoints")
        router = found["router"][0][1]
        F.check(router["tiers"] == ["tiny", "mid", "big"], f"external etcd: router tiers {router['tiers']} not cheapest-first")
        F.check(router["default_tier"] == "mid", "external etcd: default_tier")
        F.check(router["max_body_bytes"] == 8388608 and isinstance(router["max_body_bytes"], int),
                f"large integers must stay integers in the config (got {router['max_body_bytes']!r})")
        F.check(router["difficulty"] == {"predictor": "/switchback/difficulty/predictor.json",
                                         "minilm_dir": "/switchback/difficulty/all-minilm-l6-v2", "default_quality": 0.9},
                f"external etcd: router difficulty {router.get('difficulty')}")
        F.check("difficulty" not in rendered["default values"][1]["router"][0][1], "default: difficulty must be off without a predictor")

        F.check(len(by_kind(objects, "ServiceMonitor")) == 3, "external etcd: ServiceMonitors")

        # TLS everywhere: every component's config names files on its mounted Secrets, the
        # preStop sbctl gets the same, the router's probes speak HTTPS.
        objects, found = rendered["TLS everywhere"]
        for owner, template in pod_templates(objects):
            component = component_of(owner)
            if component not in BINARIES:
                continue
            where = f"TLS everywhere: {owner['metadata']['name']}"
            (container,) = template["spec"]["containers"]
            secrets = {v["name"]: v["secret"]["secretName"] for v in template["spec"]["volumes"] if "secret" in v}
            # The cluster certificate: one per pod from cert-manager's csi-driver, naming the
            # component's role and the pod (a worker's id is its pod name).
            (csi,) = [v for v in template["spec"]["volumes"] if "csi" in v]
            attrs = csi["csi"]["volumeAttributes"]
            F.check(csi["csi"]["driver"] == "csi.cert-manager.io", f"{where}: csi driver {csi['csi']['driver']}")
            F.check(attrs["csi.cert-manager.io/uri-sans"] == f"spiffe://switchback/{component}/${{POD_NAME}}",
                    f"{where}: uri-sans {attrs.get('csi.cert-manager.io/uri-sans')}")
            F.check(attrs["csi.cert-manager.io/issuer-name"] == "cluster-ca" and attrs["csi.cert-manager.io/issuer-kind"] == "ClusterIssuer",
                    f"{where}: issuer {attrs}")
            F.check(attrs["csi.cert-manager.io/dns-names"] == f"{RELEASE}-switchback.{NAMESPACE}.svc", f"{where}: dns-names {attrs}")
            F.check("client auth" in attrs["csi.cert-manager.io/key-usages"] and "server auth" in attrs["csi.cert-manager.io/key-usages"],
                    f"{where}: key usages {attrs}")
            secrets[csi["name"]] = "csi"
            password_items = [v["secret"]["items"] for v in template["spec"]["volumes"] if v["name"] == "etcd-auth"]
            F.check(password_items == [[{"key": component, "path": "password"}]], f"{where}: etcd password items {password_items}")
            mounted = {m["mountPath"]: secrets.get(m["name"]) for m in container["volumeMounts"]}
            config = next(c for cm, c in found[component] if cm["metadata"]["name"] in
                          [v["configMap"]["name"] for v in template["spec"]["volumes"] if "configMap" in v])
            files = [config["tls"][k] for k in ("ca_file", "cert_file", "key_file")]
            files += [config["etcd"][k] for k in ("ca_file", "cert_file", "key_file", "password_file")]
            if component == "router":
                files += [config["http_tls"][k] for k in ("cert_file", "key_file")]
                for probe in ("readinessProbe", "livenessProbe"):
                    F.check(container[probe]["httpGet"].get("scheme") == "HTTPS", f"{where}: {probe} must use HTTPS")
            for f in files:
                F.check(any(f.startswith(m + "/") and s for m, s in mounted.items()), f"{where}: {f} is on no mounted Secret")
            F.check(config["tls"]["server_name"] == f"{RELEASE}-switchback.{NAMESPACE}.svc", f"{where}: tls.server_name {config['tls'].get('server_name')}")
            F.check(config["etcd"]["username"] == f"switchback-{component}", f"{where}: etcd.username {config['etcd'].get('username')}")
            if component == "worker":
                script = container["lifecycle"]["preStop"]["exec"]["command"][-1]
                for flag, value in [("--tls-cert-file", config["tls"]["cert_file"]), ("--etcd-ca-file", config["etcd"]["ca_file"]),
                                    ("--etcd-password-file", config["etcd"]["password_file"]), ("--tls-server-name", config["tls"]["server_name"]),
                                    ("--etcd-username", "'switchback-worker'")]:
                    F.check(f"{flag}={value}" in script, f"{where}: preStop sbctl lacks {flag}={value}")
        F.check(all("tls" not in c and "ca_file" not in c["etcd"] for items in rendered["default values"][1].values() for _, c in items),
                "default: TLS must be off")
        # API keys: on by default, the keys file from a Secret mounted as a directory (a
        # subPath mount would never see a rotated Secret); off only when asked.
        objects, found = rendered["default values"]
        auth = found["router"][0][1].get("auth")
        F.check(auth == {"keys_file": "/etc/switchback/auth/keys.yaml"}, f"default: router auth {auth}")
        (router_deploy,) = [o for o in by_kind(objects, "Deployment") if component_of(o) == "router"]
        pod = router_deploy["spec"]["template"]["spec"]
        keys_volumes = [v for v in pod["volumes"] if "secret" in v]
        F.check(len(keys_volumes) == 1 and keys_volumes[0]["secret"]["secretName"] == f"{RELEASE}-switchback-router-keys",
                f"default: the router must mount the keys Secret: {keys_volumes}")
        keys_mounts = [m for m in pod["containers"][0]["volumeMounts"] if keys_volumes and m["name"] == keys_volumes[0]["name"]]
        F.check(len(keys_mounts) == 1 and keys_mounts[0]["mountPath"] == "/etc/switchback/auth" and "subPath" not in keys_mounts[0],
                f"default: the keys Secret must be mounted as a directory at /etc/switchback/auth: {keys_mounts}")
        objects, found = check_render(chart, "auth disabled", {"router": {"auth": {"disabled": True}}})
        F.check(found["router"][0][1].get("auth") == {"disabled": True}, "auth disabled: the router config must say so")
        (router_deploy,) = [o for o in by_kind(objects, "Deployment") if component_of(o) == "router"]
        F.check(not [v for v in router_deploy["spec"]["template"]["spec"]["volumes"] if "secret" in v],
                "auth disabled: no keys Secret mounted")
        kind_auth = rendered["cpu-sim + deploy/kind/values.yaml"][1]["router"][0][1].get("auth")
        F.check(kind_auth == {"disabled": True}, f"kind: up.sh sends requests without a key, auth must be off: {kind_auth}")

        # One controller: no PDB (it would block node drains), and the shape checks still hold.
        single = {"controller": {"replicas": 1}, "router": {"autoscaling": {"enabled": False}, "replicas": 1}}
        objects, _ = check_render(chart, "one controller, one router", single)
        F.check(not [p for p in by_kind(objects, "PodDisruptionBudget") if component_of(p) in ("controller", "router")],
                "one controller, one router: PDBs rendered over single replicas")

        # Tiers of equal cost keep the order they are listed in.
        ties = {"tiers": [{"name": n, "model": n, "engine": {"kind": "sim"}} for n in ("c", "a", "b")]}
        router_cm = [o for o in render(chart, ties) if o["kind"] == "ConfigMap" and component_of(o) == "router"]
        F.check(yaml.safe_load(router_cm[0]["data"]["router.yaml"])["tiers"] == ["c", "a", "b"],
                "tiers of equal cost must keep their order")

        # values.schema.json and the templates refuse what would break the binaries or the cluster.
        base = chart.values
        refused = [
            (with_tier(base, engine={"kind": "foo"}), "engine", "a tier with engine kind foo"),
            (with_tier(base, replicas=-1), "replicas", "a tier with replicas -1"),
            (with_tier(base, name="Small_Tier"), "name", "a tier name that is not a DNS label"),
            (with_tier(base, engine={"kind": "sim", "decodeMs": 3}), "decodeMs", "an unknown sim engine key"),
            (with_tier(base, engine={"kind": "mistralrs"}), "modelPath", "mistralrs without modelPath"),
            (with_tier(base, engine={"kind": "mistralrs", "modelPath": "m.gguf", "device": "tpu"}), "device", "device tpu"),
            (with_tier(base, engine={"kind": "mistralrs", "modelPath": "m.gguf"}), "modelSource", "mistralrs with no model source"),
            (with_tier(base, engine={"kind": "mistralrs", "modelPath": "m.gguf"}, modelSource={"volume": {"hostPath": {"path": "/models"}}}),
             "hostPath", "a hostPath model volume"),
            (with_tier(base, maxConcurrency=0), "maxConcurrency", "max_concurrency 0"),
            (with_tier(base, cost={"inputPerMtok": -1}), "inputPerMtok", "a negative cost"),
            (with_tier(base, extraConfig={"max_concurency": 3}), "max_concurency", "an unknown worker config key"),
            ({"tiers": [base["tiers"][0], base["tiers"][0]]}, "listed twice", "two tiers of one name"),
            ({"tiers": []}, "tiers", "no tiers"),
            ({"router": {"defaultTier": "huge"}}, "huge", "a default tier that is not a tier"),
            ({"router": {"extraConfig": {"max_atempts": 2}}}, "max_atempts", "an unknown router config key"),
            ({"router": {"extraConfig": {"max_attempts": 11}}}, "max_attempts", "max_attempts 11"),
            ({"router": {"difficulty": {"predictor": "p.json"}}}, "volume", "a predictor without a volume"),
            ({"router": {"auth": {"disabled": "yes"}}}, "disabled", "auth.disabled that is not a boolean"),
            ({"router": {"auth": {"secretKey": ""}}}, "secretKey", "an empty keys Secret key"),
            ({"router": {"auth": {"keysFile": "/k"}}}, "keysFile", "an unknown router auth key"),
            ({"router": {"extraConfig": {"auth": {"disabled": True}}}}, "auth", "auth set through extraConfig"),
            ({"router": {"extraConfig": {"max_stop_sequences": 17}}}, "max_stop_sequences", "max_stop_sequences 17"),
            ({"etcd": {"replicas": 2}}, "replicas", "an even etcd member count"),
            ({"etcd": {"replicas": 3}}, "enabled", "3 etcd members without persistence"),
            ({"etcd": {"leaseTtlSeconds": 1}}, "leaseTtlSeconds", "a lease TTL under 2 s"),
            ({"etcd": {"external": {"endpoints": ["etcd:port"]}}}, "endpoints", "a malformed etcd endpoint"),
            ({"etcd": {"prefix": "switchback"}}, "prefix", "an etcd prefix without slashes"),
            ({"controller": {"staleAfterMs": 10}}, "staleAfterMs", "stale_after_ms 10"),
            ({"otel": {"endpoint": "collector:4317"}}, "endpoint", "an OTLP endpoint without a scheme"),
            ({"replicaCount": 3}, "replicaCount", "an unknown top-level key"),
            ({"tls": {"enabled": True}}, "issuer", "TLS without an issuer"),
            ({"tls": {"enabled": True, "secretName": "shared"}}, "secretName", "one shared certificate (roles need one per pod)"),
            ({"etcd": {"tls": {"secretName": "x"}}}, "external", "etcd TLS on the bundled (plaintext) etcd"),
            ({"etcd": {"auth": {"username": "u"}}}, "passwordSecretName", "an etcd user without a password Secret"),
            ({"router": {"httpTls": {"secretName": "Not_A_Name"}}}, "secretName", "a Secret name that is not a DNS name"),
        ]
        for values, needle, why in refused:
            expect_refused(chart, values, needle, why)
        log(f"values.schema.json and the templates refused {len(refused)} bad values files")

    log(f"{F.checks} checks in {time.monotonic() - start:.1f} s")
    if F.items:
        for item in F.items:
            print(f"FAIL: {item}", file=sys.stderr)
        print(f"check_chart: {len(F.items)} of {F.checks} checks failed", file=sys.stderr)
        return 1
    print(f"{F.checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
