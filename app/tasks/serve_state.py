"""What Serve's controller says about the app's deployments, without calling them.

A readiness probe that called the model deployments would count as traffic: Serve's
autoscaler would never see a deployment idle, so one configured to scale to zero
(``serve_config.yaml``) would never get there. The controller knows whether each
deployment is healthy and when the app was last deployed, which is all a probe needs
between real answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

#: Deployment statuses that still serve requests (UPDATING: a rollout, the old replicas
#: answer until the new ones run).
SERVING = frozenset({"HEALTHY", "UPSCALING", "DOWNSCALING", "UPDATING"})


@dataclass(frozen=True)
class AppState:
    deployed_at: float
    #: deployment name -> "STATUS: message", for those not serving.
    not_serving: dict[str, str] = field(default_factory=dict)


def app_state(app_name: str) -> AppState | None:
    """The app's state per Serve's controller; None outside Serve or when unknown."""
    try:
        from ray import serve

        app = serve.status().applications.get(app_name)
    except Exception as exc:  # no controller (a handle-less test), or it is restarting
        logger.debug("serve status unavailable: %s: %s", type(exc).__name__, exc)
        return None
    if app is None:
        return None
    not_serving = {}
    for name, dep in app.deployments.items():
        status = str(getattr(dep.status, "value", dep.status))
        if status not in SERVING:
            not_serving[name] = f"{status}: {dep.message}".strip()
    return AppState(float(app.last_deployed_time_s), not_serving)


__all__ = ["AppState", "SERVING", "app_state"]
