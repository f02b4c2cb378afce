"""AI Processing Platform: the FastAPI ingress app, domain models, settings, state and planner."""

__version__ = "0.1.0"
