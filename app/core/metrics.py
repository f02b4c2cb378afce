"""Application metrics on Ray's metrics export (Prometheus text) and dashboard.

Metric objects are ``ray.serve.metrics`` Counter/Histogram/Gauge, created lazily
the first time a process records something: inside a Serve replica they carry the
``deployment``, ``replica`` and ``application`` tags automatically; in a plain Ray
worker or driver they are ordinary ``ray.util.metrics`` series. In a process that
is not connected to Ray (unit tests, ``aipp`` CLI helpers) every recorder is a
no-op, and no recorder ever raises: metrics must not fail a request.

Ray prefixes every name with ``ray_`` on export, and counters gain ``_total``;
``METRIC_NAMES`` lists the exported names (see docs/observability.md).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "METRIC_NAMES",
    "record_transcription",
    "record_summary",
    "record_chat",
    "record_task_final",
    "set_queued_tasks",
    "record_cache",
    "record_rate_limited",
    "record_webhook_failure",
    "record_degraded",
    "record_openai_request",
]

LATENCY_BUCKETS_S = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600]
RTF_BUCKETS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5]
TOKENS_PER_S_BUCKETS = [1, 2, 5, 10, 20, 30, 50, 75, 100, 200, 500, 1000, 5000]

# name -> (kind, description, tag keys, boundaries)
_SPECS: dict[str, tuple[str, str, tuple[str, ...], list[float] | None]] = {
    "aipp_tasks": ("counter", "Tasks that reached a final status.", ("status",), None),
    "aipp_stage_seconds": (
        "histogram",
        "Latency of one pipeline stage (decode, transcribe, summarize, chat), in seconds.",
        ("stage",),
        LATENCY_BUCKETS_S,
    ),
    "aipp_audio_seconds": ("counter", "Seconds of audio transcribed.", (), None),
    "aipp_transcriptions": ("counter", "Audio clips transcribed.", (), None),
    "aipp_real_time_factor": (
        "histogram",
        "Processing time (decode + transcribe) over audio duration; below 1 is faster "
        "than real time.",
        (),
        RTF_BUCKETS,
    ),
    "aipp_llm_tokens": (
        "counter",
        "LLM tokens, by direction (in = prompt, out = completion) and kind (summary, chat).",
        ("direction", "kind"),
        None,
    ),
    "aipp_llm_tokens_per_second": (
        "histogram",
        "LLM generation speed per call: completion tokens over the call's seconds.",
        ("kind",),
        TOKENS_PER_S_BUCKETS,
    ),
    "aipp_queued_tasks": ("gauge", "Tasks waiting in the database to be started.", (), None),
    "aipp_cache_requests": (
        "counter",
        "Result-cache lookups, by result (hit, miss).",
        ("result",),
        None,
    ),
    "aipp_rate_limited": ("counter", "Requests rejected by the rate limiter (429).", (), None),
    "aipp_webhook_failures": ("counter", "Webhook deliveries that failed.", (), None),
    "aipp_degraded": (
        "counter",
        "Times a component ran degraded (a fallback was used), by component.",
        ("component",),
        None,
    ),
    "aipp_openai_requests": (
        "counter",
        "Requests to the OpenAI-compatible endpoints, by endpoint and HTTP status.",
        ("endpoint", "status"),
        None,
    ),
    "aipp_openai_request_seconds": (
        "histogram",
        "Latency of the OpenAI-compatible endpoints (until the response starts), in seconds.",
        ("endpoint",),
        LATENCY_BUCKETS_S,
    ),
}


def _exported(name: str, kind: str) -> list[str]:
    if kind == "counter":
        return [f"ray_{name}_total"]
    if kind == "histogram":
        return [f"ray_{name}_bucket", f"ray_{name}_sum", f"ray_{name}_count"]
    return [f"ray_{name}"]


METRIC_NAMES: dict[str, list[str]] = {n: _exported(n, s[0]) for n, s in _SPECS.items()}

_lock = threading.Lock()
_metrics: dict[str, Any] = {}


def _ray_ready() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except Exception:
        return False


def _metric(name: str) -> Any | None:
    """The process's metric object for ``name``, created on first use; None without Ray."""
    obj = _metrics.get(name)
    if obj is not None:
        return obj
    if not _ray_ready():
        return None
    with _lock:
        obj = _metrics.get(name)
        if obj is None:
            from ray.serve import metrics as serve_metrics

            kind, description, tags, boundaries = _SPECS[name]
            if kind == "counter":
                obj = serve_metrics.Counter(name, description=description, tag_keys=tags or None)
            elif kind == "gauge":
                obj = serve_metrics.Gauge(name, description=description, tag_keys=tags or None)
            else:
                obj = serve_metrics.Histogram(
                    name, description=description, boundaries=boundaries, tag_keys=tags or None
                )
            _metrics[name] = obj
    return obj


def _record(name: str, method: str, value: float, tags: dict[str, str] | None = None) -> None:
    try:
        obj = _metric(name)
        if obj is not None:
            getattr(obj, method)(value, tags=tags)
    except Exception:  # never let metrics break the work being measured
        logger.debug("metric %s not recorded", name, exc_info=True)


# --- Recorders ---------------------------------------------------------------------


def record_transcription(decode_s: float, transcribe_s: float, audio_s: float) -> None:
    """One clip through the Transcriber: stage latencies, audio seconds and real-time factor."""
    _record("aipp_stage_seconds", "observe", max(decode_s, 0.0), {"stage": "decode"})
    _record("aipp_stage_seconds", "observe", max(transcribe_s, 0.0), {"stage": "transcribe"})
    _record("aipp_transcriptions", "inc", 1)
    if audio_s and audio_s > 0:
        _record("aipp_audio_seconds", "inc", audio_s)
        _record("aipp_real_time_factor", "observe", (decode_s + transcribe_s) / audio_s)


def _record_llm(kind: str, seconds: float, tokens_in: int, tokens_out: int) -> None:
    if tokens_in > 0:
        _record("aipp_llm_tokens", "inc", tokens_in, {"direction": "in", "kind": kind})
    if tokens_out > 0:
        _record("aipp_llm_tokens", "inc", tokens_out, {"direction": "out", "kind": kind})
        if seconds > 0:
            _record("aipp_llm_tokens_per_second", "observe", tokens_out / seconds, {"kind": kind})


def record_summary(summarize_s: float, tokens_in: int, tokens_out: int) -> None:
    """One summary (all its chunks): the summarize stage latency and LLM tokens."""
    _record("aipp_stage_seconds", "observe", max(summarize_s, 0.0), {"stage": "summarize"})
    _record_llm("summary", summarize_s, tokens_in, tokens_out)


def record_chat(chat_s: float, tokens_in: int, tokens_out: int) -> None:
    """One chat completion (``/v1/chat/completions``), streamed or not."""
    _record("aipp_stage_seconds", "observe", max(chat_s, 0.0), {"stage": "chat"})
    _record_llm("chat", chat_s, tokens_in, tokens_out)


def record_task_final(status: str) -> None:
    """A task reached a final status (e.g. succeeded, failed, cancelled)."""
    _record("aipp_tasks", "inc", 1, {"status": str(status)})


def set_queued_tasks(n: int) -> None:
    """How many tasks wait in the database right now."""
    _record("aipp_queued_tasks", "set", max(int(n), 0))


def record_cache(hit: bool) -> None:
    _record("aipp_cache_requests", "inc", 1, {"result": "hit" if hit else "miss"})


def record_rate_limited() -> None:
    _record("aipp_rate_limited", "inc", 1)


def record_webhook_failure() -> None:
    _record("aipp_webhook_failures", "inc", 1)


def record_degraded(component: str) -> None:
    _record("aipp_degraded", "inc", 1, {"component": str(component)})


def record_openai_request(endpoint: str, status: int, seconds: float | None = None) -> None:
    """One request to an OpenAI-compatible endpoint (``transcriptions``, ``chat``, ``models``)."""
    _record("aipp_openai_requests", "inc", 1, {"endpoint": endpoint, "status": str(status)})
    if seconds is not None:
        _record("aipp_openai_request_seconds", "observe", max(seconds, 0.0), {"endpoint": endpoint})
