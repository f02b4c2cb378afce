"""Lowest layer: settings, logging, metrics, domain models, model assets. Imports nothing else from app."""
