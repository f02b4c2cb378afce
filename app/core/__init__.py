"""Lowest layer: settings, logging, metrics, domain models, model assets, Ray auth.

Imports nothing else from ``app``."""
