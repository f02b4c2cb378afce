"""Capacity planner: GPU counts, self-hosted vs managed monthly cost, the cost crossover,
and Serve/KubeRay replica advice. The core (catalog, queueing, sizing, costs, crossover,
advice) does no I/O beyond reading the catalog file; the CLI, API and page sit on top of
:func:`plan`.
"""

from app.planner.catalog import Catalog, CatalogError, load_catalog
from app.planner.plan import plan
from app.planner.presets import PRESETS
from app.planner.schemas import PlanInput, PlannerInputError, PlanResult

__all__ = [
    "PRESETS",
    "Catalog",
    "CatalogError",
    "PlanInput",
    "PlanResult",
    "PlannerInputError",
    "load_catalog",
    "plan",
]
