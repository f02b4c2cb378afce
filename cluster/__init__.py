"""KubeRay manifests for the three deployment phases, rendered from serve_config.yaml.

- :mod:`cluster.render` - the renderer (`aipp cluster render`), a package split along
  its seams (values, serve_config, pods, raycluster, rayservice, rayjob, validate,
  output); the Serve config merge (:func:`cluster.render.load_serve_config`) and the
  CRD validator are re-exported there.
- :mod:`cluster.cli` - the ``aipp cluster`` sub-commands.
- :mod:`cluster.local` - the same worker groups as node types of Ray's fake multi-node
  autoscaler, for a local autoscaling cluster (bench/autoscaling.py).
- ``cluster/values.yaml`` - default values; ``cluster/crds/`` - KubeRay v1.7.0 CRDs;
  ``cluster/rendered/`` - the default rendering, checked for drift by the tests.
"""
