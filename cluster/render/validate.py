"""CRD validation (the API server's schema check, done offline) and operator checks."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from cluster.render.common import (
    _DNS1035_LABEL,
    _DNS1123_LABEL,
    _DNS1123_SUBDOMAIN,
    API_VERSION,
    CRD_DIR,
    UPGRADE_TYPES,
    RenderError,
)
from cluster.render.values import _json_path

KIND_CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayService": "ray.io_rayservices.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
}

# Root metadata is opaque in a CRD's schema (the API server checks ObjectMeta itself);
# this is the part of ObjectMeta a rendered manifest may set.
_OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": _DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": _DNS1123_LABEL},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}

# Every CEL rule in the v1.7.0 CRDs, as Python. An unknown rule is reported, never
# skipped, so a new CRD cannot weaken the check unnoticed.
_CEL_RULES: dict[str, Any] = {
    # Transition rules compare with the stored object: they pass on create.
    "self == oldSelf": lambda self: True,
    "self in ['ray.io/kuberay-operator', 'kueue.x-k8s.io/multikueue']": lambda self: (
        self in ("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")
    ),
    "!((has(self.onSuccess) || has(self.onFailure)) && has(self.deletionRules))": lambda s: (
        not (("onSuccess" in s or "onFailure" in s) and "deletionRules" in s)
    ),
    "((has(self.onSuccess) && has(self.onFailure)) || has(self.deletionRules))": lambda s: (
        ("onSuccess" in s and "onFailure" in s) or "deletionRules" in s
    ),
    "!(has(self.jobStatus) && has(self.jobDeploymentStatus))": lambda s: (
        not ("jobStatus" in s and "jobDeploymentStatus" in s)
    ),
    "has(self.jobStatus) || has(self.jobDeploymentStatus)": lambda s: (
        "jobStatus" in s or "jobDeploymentStatus" in s
    ),
}


def _to_json_schema(node: Mapping) -> dict:
    """A Kubernetes structural schema as a sound JSON Schema (draft 4 semantics).

    - ``x-kubernetes-int-or-string``: integer or string (a pattern beside it, as on
      resource quantities, applies to the string form only), never a float or bool;
    - ``nullable``: null allowed; otherwise null is rejected;
    - objects with ``properties`` reject unknown fields unless
      ``x-kubernetes-preserve-unknown-fields`` (the API server prunes them, and
      ``kubectl apply`` with strict field validation refuses them);
    - objects with neither properties nor additionalProperties accept no fields;
    - list types, list-map keys and CEL rules are checked by custom keywords.
    """
    s = dict(node)
    if "properties" in s:
        s["properties"] = {k: _to_json_schema(v) for k, v in s["properties"].items()}
    if isinstance(s.get("items"), Mapping):
        s["items"] = _to_json_schema(s["items"])
    if isinstance(s.get("additionalProperties"), Mapping):
        s["additionalProperties"] = _to_json_schema(s["additionalProperties"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in s:
            s[key] = [_to_json_schema(x) for x in s[key]]
    if "not" in s:
        s["not"] = _to_json_schema(s["not"])
    if s.get("x-kubernetes-int-or-string"):
        s.pop("type", None)
        s["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if s.get("nullable") and "type" in s:
        s["type"] = [s["type"], "null"]
        if "enum" in s:
            s["enum"] = [*s["enum"], None]
    preserve = s.get("x-kubernetes-preserve-unknown-fields")
    if s.get("type") == "object" and not preserve and "additionalProperties" not in s:
        s["additionalProperties"] = False
    return s


def _list_type(validator: Any, list_type: str, instance: Any, schema: Mapping) -> Iterator:
    from jsonschema import ValidationError

    if not isinstance(instance, list):
        return
    if list_type == "set":
        seen = []
        for item in instance:
            if item in seen:
                yield ValidationError(f"duplicate entry {item!r} in a list of type set")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        props = (schema.get("items") or {}).get("properties") or {}
        seen_keys = set()
        for item in instance:
            if not isinstance(item, Mapping):
                continue
            ident = tuple(item.get(k, props.get(k, {}).get("default")) for k in keys)
            if ident in seen_keys:
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, ident, strict=True))
                yield ValidationError(f"duplicate entry with {shown} in a list of type map")
            seen_keys.add(ident)


def _cel(validator: Any, rules: list, instance: Any, schema: Mapping) -> Iterator:
    from jsonschema import ValidationError

    for rule in rules:
        check = _CEL_RULES.get(rule["rule"])
        if check is None:
            yield ValidationError(f"unsupported x-kubernetes-validations rule {rule['rule']!r}")
        elif not check(instance):
            yield ValidationError(rule.get("message") or f"failed rule {rule['rule']!r}")


def _format_checker() -> Any:
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())

    @checker.checks("int32")
    def _int32(value: Any) -> bool:
        return not isinstance(value, int) or -(2**31) <= value < 2**31

    @checker.checks("int64")
    def _int64(value: Any) -> bool:
        return not isinstance(value, int) or -(2**63) <= value < 2**63

    @checker.checks("date-time")
    def _date_time(value: Any) -> bool:
        pattern = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
        return not isinstance(value, str) or re.match(pattern, value) is not None

    return checker


@functools.cache
def crd_validator(kind: str) -> Any:
    """A jsonschema validator for the ``v1`` schema of a KubeRay kind."""
    import jsonschema

    if kind not in KIND_CRD_FILES:
        raise RenderError(f"no KubeRay CRD for kind {kind!r}")
    crd = yaml.load(
        (CRD_DIR / KIND_CRD_FILES[kind]).read_text(encoding="utf-8"),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    if crd["spec"]["names"]["kind"] != kind:
        raise RenderError(f"{KIND_CRD_FILES[kind]} does not define {kind}")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    if not (version.get("served") and version.get("storage")):
        raise RenderError(f"{kind} v1 is not the served storage version")
    schema = _to_json_schema(version["schema"]["openAPIV3Schema"])
    props = schema["properties"]
    props["metadata"] = _OBJECT_META
    props["apiVersion"] = {"enum": [API_VERSION]}
    props["kind"] = {"enum": [kind]}
    props.pop("status", None)  # a manifest never carries status
    schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
    cls = jsonschema.validators.extend(
        jsonschema.Draft4Validator,
        {"x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel},
    )
    return cls(schema, format_checker=_format_checker())


_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUBDOMAIN = re.compile(_DNS1123_SUBDOMAIN)


def _label_problem(key: str, value: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return f"label key {key!r}: bad prefix"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return f"label key {key!r}: bad name"
    if value and (len(value) > 63 or not _LABEL_NAME.match(value)):
        return f"label {key}={value!r}: bad value"
    return None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _cluster_specs(doc: Mapping) -> list[tuple[str, Mapping]]:
    spec = doc.get("spec") or {}
    kind = doc.get("kind")
    if kind == "RayCluster":
        return [("spec", spec)]
    if kind == "RayService":
        return [("spec.rayClusterConfig", spec.get("rayClusterConfig") or {})]
    if kind == "RayJob" and spec.get("rayClusterSpec"):
        return [("spec.rayClusterSpec", spec["rayClusterSpec"])]
    return []


def _env_names(container: Mapping) -> set[str]:
    return {e.get("name") for e in container.get("env") or []}


def operator_checks(doc: Mapping) -> list[str]:
    """Checks the KubeRay v1.7.0 operator makes before it reconciles a resource.

    A subset of ray-operator/controllers/ray/utils/validation.go: what a schema-valid
    manifest can still get wrong (names, replica bounds, conflicting resources,
    autoscaler v2 features, GCS fault tolerance, upgrade options, RayJob settings).
    """
    problems = []
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    name = meta.get("name") or ""
    limit = 53 if kind == "RayCluster" else 47
    if len(name) > limit or not re.match(_DNS1035_LABEL, name):
        problems.append(f"metadata.name {name!r}: a DNS-1035 label of at most {limit} chars")
    for key, value in (meta.get("labels") or {}).items():
        reason = _label_problem(key, value)
        if reason:
            problems.append(f"metadata.labels: {reason}")

    for where, spec in _cluster_specs(doc):
        autoscaling = bool(spec.get("enableInTreeAutoscaling"))
        v2 = (spec.get("autoscalerOptions") or {}).get("version") == "v2"
        head = spec.get("headGroupSpec") or {}
        head_containers = ((head.get("template") or {}).get("spec") or {}).get("containers")
        if not head_containers:
            problems.append(f"{where}.headGroupSpec: no container")
            continue
        groups = [("Head", head)] + [
            (g.get("groupName", "?"), g) for g in spec.get("workerGroupSpecs") or []
        ]
        for group_name, group in groups:
            params = group.get("rayStartParams") or {}
            conflict = any(params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources"))
            if conflict and group.get("resources"):
                problems.append(
                    f"{where} {group_name}: resources set in both rayStartParams and resources"
                )
            if "labels" in params:
                problems.append(f"{where} {group_name}: rayStartParams['labels'] is not supported")
            for key, value in (group.get("labels") or {}).items():
                reason = _label_problem(key, value)
                if reason:
                    problems.append(f"{where} {group_name}: {reason}")
            containers = ((group.get("template") or {}).get("spec") or {}).get("containers")
            if group_name != "Head" and not containers:
                problems.append(f"{where} {group_name}: no container")
        for group in spec.get("workerGroupSpecs") or []:
            gname = group.get("groupName", "?")
            lo, hi = group.get("minReplicas"), group.get("maxReplicas")
            if not autoscaling and (lo is None or hi is None):
                problems.append(f"{where} {gname}: minReplicas and maxReplicas are required")
            if lo is not None and hi is not None and lo > hi:
                problems.append(f"{where} {gname}: minReplicas {lo} > maxReplicas {hi}")
            if group.get("idleTimeoutSeconds") is not None and not v2:
                problems.append(f"{where} {gname}: idleTimeoutSeconds needs autoscaler v2")
            if group.get("priority"):
                if not v2:
                    problems.append(f"{where} {gname}: priority needs autoscaler v2")
                if _version_tuple(spec.get("rayVersion") or "0") < (2, 56, 0):
                    problems.append(f"{where} {gname}: priority needs rayVersion >= 2.56.0")
        auth = spec.get("authOptions") or {}
        if auth.get("mode") == "token" and _version_tuple(spec.get("rayVersion") or "0") < (
            2,
            52,
            0,
        ):
            problems.append(f"{where}: token authOptions need rayVersion >= 2.52.0")
        if auth.get("enableK8sTokenAuth") and kind != "RayCluster":
            problems.append(f"{where}: enableK8sTokenAuth is for standalone RayClusters only")
        head_env = _env_names(head_containers[0])
        if spec.get("gcsFaultToleranceOptions") is not None:
            if (head.get("rayStartParams") or {}).get("redis-password"):
                problems.append(f"{where}: redis-password in rayStartParams with GCS FT options")
            for env in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "RAY_external_storage_namespace"):
                if env in head_env:
                    problems.append(f"{where}: {env} env var with GcsFaultToleranceOptions")
        elif "RAY_REDIS_ADDRESS" in head_env:
            problems.append(f"{where}: RAY_REDIS_ADDRESS without GcsFaultToleranceOptions")
        if not autoscaling and "RAY_enable_autoscaler_v2" in head_env:
            problems.append(f"{where}: RAY_enable_autoscaler_v2 without in-tree autoscaling")

    spec = doc.get("spec") or {}
    if kind == "RayService":
        strategy = spec.get("upgradeStrategy") or {}
        utype = strategy.get("type")
        if utype is not None and utype not in UPGRADE_TYPES:
            problems.append(f"spec.upgradeStrategy.type {utype!r} not in {UPGRADE_TYPES}")
        if utype == "NewClusterWithIncrementalUpgrade":
            if not (spec.get("rayClusterConfig") or {}).get("enableInTreeAutoscaling"):
                problems.append("NewClusterWithIncrementalUpgrade needs enableInTreeAutoscaling")
            opts = strategy.get("clusterUpgradeOptions")
            if not opts:
                problems.append("NewClusterWithIncrementalUpgrade needs clusterUpgradeOptions")
            else:
                surge = opts.get("maxSurgePercent", 100)
                step = opts.get("stepSizePercent")
                if not 0 <= surge <= 100:
                    problems.append("maxSurgePercent must be between 0 and 100")
                if step is None or not 0 <= step <= 100:
                    problems.append("stepSizePercent must be between 0 and 100")
                elif step > surge:
                    problems.append("stepSizePercent must be <= maxSurgePercent")
                if (opts.get("intervalSeconds") or 0) <= 0:
                    problems.append("intervalSeconds must be > 0")
                if not opts.get("gatewayClassName"):
                    problems.append("gatewayClassName is required")
        elif strategy.get("clusterUpgradeOptions"):
            problems.append("clusterUpgradeOptions only apply to NewClusterWithIncrementalUpgrade")
        if (spec.get("rayClusterDeletionDelaySeconds") or 0) < 0:
            problems.append("rayClusterDeletionDelaySeconds must be >= 0")
        head_svc = ((spec.get("rayClusterConfig") or {}).get("headGroupSpec") or {}).get(
            "headService"
        ) or {}
        if (head_svc.get("metadata") or {}).get("name"):
            problems.append("headGroupSpec.headService.metadata.name must not be set")
    if kind == "RayJob":
        if not spec.get("rayClusterSpec") and not spec.get("clusterSelector"):
            problems.append("RayJob needs rayClusterSpec or clusterSelector")
        if not spec.get("shutdownAfterJobFinishes") and spec.get("ttlSecondsAfterFinished"):
            problems.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes")
        if spec.get("suspend") and not spec.get("shutdownAfterJobFinishes"):
            problems.append("suspend needs shutdownAfterJobFinishes")
        for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
            if key in spec and spec[key] <= 0:
                problems.append(f"spec.{key} must be > 0")
        if (spec.get("backoffLimit") or 0) < 0:
            problems.append("spec.backoffLimit must be >= 0")
        if spec.get("runtimeEnvYAML"):
            try:
                parsed = yaml.safe_load(spec["runtimeEnvYAML"])
            except yaml.YAMLError:
                parsed = None
            if not isinstance(parsed, Mapping):
                problems.append("spec.runtimeEnvYAML must be a YAML mapping")
        if not spec.get("entrypoint"):
            problems.append("spec.entrypoint is empty")
    return problems


def validate_manifest(doc: Any) -> list[str]:
    """Every problem with one manifest: CRD schema (as the API server) + operator checks."""
    if not isinstance(doc, Mapping):
        return ["a manifest must be a mapping"]
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion {doc.get('apiVersion')!r} is not {API_VERSION!r}")
    kind = doc.get("kind")
    if kind not in KIND_CRD_FILES:
        return [*problems, f"kind {kind!r} is not one of {', '.join(KIND_CRD_FILES)}"]
    validator = crd_validator(kind)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path))):
        problems.append(f"{kind} {_json_path(err.absolute_path)}: {err.message}")
    if not problems:
        problems.extend(f"{kind}: {p}" for p in operator_checks(doc))
    return problems
