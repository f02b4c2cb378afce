"""Render KubeRay manifests for the three deployment phases from one source.

The Serve application is defined once, in ``serve_config.yaml``. Everything the
cluster needs is derived from it:

- phase 1: a RayCluster, head only, CPU engines (or ``openai``), SQLite or PostgreSQL;
  the Serve config is rendered next to it for ``serve deploy``;
- phase 2: a RayCluster, head plus one on-demand GPU group; the Serve config is
  ``serve_config.yaml`` merged with ``serve_config.gpu.yaml`` (0.5 + 0.5 GPU);
- phase 3: a RayService (head with ``num-cpus: "0"``, a CPU group for the Ingress,
  on-demand and spot GPU groups, autoscaling, GCS fault tolerance, upgrade strategy)
  and a RayJob for the batch pipeline.

Values (image, GPU type, replica bounds, Secret references) come from
``cluster/values.yaml`` merged with an optional file, which may be the planner's
``aipp plan --emit serve-overrides`` output.

Everything here is a pure function of (phase, values, the two serve configs) except
:func:`render`, :func:`render_all` and :func:`check_rendered`, which touch files.
Every rendered ray.io manifest is validated against the KubeRay v1.7.0 CRD schemas in
``cluster/crds/`` (:func:`validate_manifest`) and every Serve config against Ray
Serve's own schema before anything is written.

The package splits along the seams of that pipeline:

- :mod:`.common` - constants, :class:`RenderError`, YAML in/out, name patterns;
- :mod:`.serve_config` - the Serve config merge, overlays and Serve schema checks;
- :mod:`.values` - values schema, merge and checks;
- :mod:`.pods` - labels, containers, head/CPU/GPU groups, Ray token auth, driver floor;
- :mod:`.raycluster`, :mod:`.rayservice`, :mod:`.rayjob` - one module per kind;
- :mod:`.validate` - KubeRay CRD schemas and operator checks, offline;
- :mod:`.output` - rendering a phase, writing files, drift checks (the CLI glue).

Everything a caller needs is re-exported here, so ``from cluster import render as r``
keeps working.
"""

from cluster.render.common import (
    API_VERSION,
    APP_NAME,
    BATCH_ENTRYPOINT,
    CLUSTER_DIR,
    CPU_GROUP,
    CRD_DIR,
    DATA_DIR_IN_POD,
    DEFAULT_VALUES_PATH,
    GENERATED_MARK,
    GPU_ONDEMAND,
    GPU_SPOT,
    MARKET_LABEL,
    PHASES,
    RENDERED_DIR,
    REPO_ROOT,
    SERVE_CONFIG_GPU_NAME,
    SERVE_CONFIG_NAME,
    UPGRADE_TYPES,
    RenderError,
    dump_yaml,
)
from cluster.render.output import (
    check_rendered,
    iter_manifests,
    render,
    render_all,
    render_manifests,
)
from cluster.render.pods import (
    OFFLINE_ENV,
    RAY_AUTH_MODE,
    auth_options,
    compile_cache,
    gpu_driver_affinity,
    gpu_node_selector,
)
from cluster.render.raycluster import raycluster_phase1, raycluster_phase2
from cluster.render.rayjob import rayjob_batch
from cluster.render.rayservice import rayservice_phase3
from cluster.render.serve_config import (
    build_serve_config,
    check_gpu_fit,
    check_serve_config,
    gpu_fraction_per_node,
    load_serve_config,
    loopback_only,
    merge_serve_config,
    offline_model_env,
    serve_deployments,
)
from cluster.render.validate import (
    _CEL_RULES,
    KIND_CRD_FILES,
    crd_validator,
    operator_checks,
    validate_manifest,
)
from cluster.render.values import (
    VALUES_SCHEMA,
    check_values,
    default_values,
    load_values,
    merge_values,
    read_values_file,
    resolve_values,
)

__all__ = [
    "API_VERSION",
    "APP_NAME",
    "BATCH_ENTRYPOINT",
    "CLUSTER_DIR",
    "CPU_GROUP",
    "CRD_DIR",
    "DATA_DIR_IN_POD",
    "DEFAULT_VALUES_PATH",
    "GENERATED_MARK",
    "GPU_ONDEMAND",
    "GPU_SPOT",
    "KIND_CRD_FILES",
    "MARKET_LABEL",
    "OFFLINE_ENV",
    "PHASES",
    "RAY_AUTH_MODE",
    "RENDERED_DIR",
    "REPO_ROOT",
    "SERVE_CONFIG_GPU_NAME",
    "SERVE_CONFIG_NAME",
    "UPGRADE_TYPES",
    "VALUES_SCHEMA",
    "_CEL_RULES",
    "RenderError",
    "auth_options",
    "build_serve_config",
    "check_gpu_fit",
    "check_rendered",
    "check_serve_config",
    "check_values",
    "compile_cache",
    "crd_validator",
    "default_values",
    "dump_yaml",
    "gpu_driver_affinity",
    "gpu_fraction_per_node",
    "gpu_node_selector",
    "iter_manifests",
    "load_serve_config",
    "load_values",
    "loopback_only",
    "merge_serve_config",
    "merge_values",
    "offline_model_env",
    "operator_checks",
    "raycluster_phase1",
    "raycluster_phase2",
    "rayjob_batch",
    "rayservice_phase3",
    "read_values_file",
    "render",
    "render_all",
    "render_manifests",
    "resolve_values",
    "serve_deployments",
    "validate_manifest",
]
