"""Whisper's languages for the OpenAI routes (the table lives in ``app/core/languages.py``)."""

from __future__ import annotations

from app.core.languages import LANGUAGE_NAMES, language_code, language_name

__all__ = ["LANGUAGE_NAMES", "language_code", "language_name"]
