"""GPU only: the summary stage as a ``ray.data.llm`` vLLM processor (Ray 2.60 API).

Used when the cluster has GPUs and ``AIPP_LLM_ENGINE=vllm`` (``--summarizer
vllm``). vLLM batches the requests of many files into one engine, which an
actor per file cannot do. Everything else matches the service's summarizer:
the same system prompt, the same JSON schema (as vLLM structured output), the
same sampling settings and the same parser (:func:`parse_summary`).

One difference: the service map-reduces a transcript longer than the context
window; a processor makes exactly one call per row, so such a transcript is
thinned to evenly spaced sentences that fit (the summary still covers the
whole recording). Use ``--summarizer actor`` for the exact map-reduce.

This module cannot run without a GPU and vLLM; it is kept small and separate so
the CPU path never imports it.
"""

from __future__ import annotations

import json
import re

from app.core.schemas import summary_json_schema
from app.llm.summarize import DEFAULT_SYSTEM_PROMPT, NO_SPEECH, parse_summary

# Conservative: English runs ~4 characters a token for Qwen/Llama tokenizers.
CHARS_PER_TOKEN = 3.5
PROMPT_OVERHEAD_TOKENS = 160  # system prompt + chat template + "Transcript:" framing
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Rows that need no summary still pass through the processor (one dataset, one pass):
# one token, and the same keys as the real sampling params so Arrow sees one struct type.
_PASS_THROUGH = {"max_tokens": 1, "temperature": 0.0, "structured_outputs": None}


def fit_to_budget(text: str, budget_tokens: int) -> str:
    """``text`` if it fits, else evenly spaced sentences that do (keeps their order)."""
    limit = int(budget_tokens * CHARS_PER_TOKEN)
    if len(text) <= limit:
        return text
    sentences = [s for s in _SENTENCE_END.split(text) if s]
    keep = max(1, int(len(sentences) * limit / len(text)))
    step = len(sentences) / keep
    picked = [sentences[int(i * step)] for i in range(keep)]
    return " ".join(picked)[:limit]


def sampling_params(settings) -> dict:
    return {
        "max_tokens": settings.llm_max_output_tokens,
        "temperature": settings.llm_temperature,
        # A JSON string, not a dict: Arrow would turn a nested dict into a struct.
        "structured_outputs": {"json": json.dumps(summary_json_schema())},
    }


def processor_config(
    settings, model_source: str, *, engines: int, gpu_fraction: float, batch_size: int
):
    """The ``vLLMEngineProcessorConfig`` (validated by pydantic; needs no GPU to build)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=model_source,
        engine_kwargs={
            "max_model_len": settings.llm_context_tokens,
            "gpu_memory_utilization": settings.llm_gpu_memory_utilization,
            "enforce_eager": settings.llm_enforce_eager,  # docs/gpu.md
        },
        # Share each GPU with a Whisper actor: a fractional GPU per engine ("uni" executor).
        placement_group_config={"bundle_per_worker": {"CPU": 1, "GPU": gpu_fraction}},
        concurrency=engines,
        batch_size=batch_size,
        should_continue_on_error=True,  # one bad prompt -> one failed row, not a failed job
    )


def make_preprocess(settings, instruction: str | None = None):
    """Row -> row + ``messages`` + ``sampling_params`` (what the processor's stages read)."""
    budget = settings.llm_context_tokens - settings.llm_max_output_tokens - PROMPT_OVERHEAD_TOKENS
    sampling = sampling_params(settings)

    def preprocess(row: dict) -> dict:
        from pipelines.stages import passes_through

        text = (row.get("transcript_text") or "").strip()
        skip = passes_through(row) or not text
        user = (f"{instruction}\n\n" if instruction else "") + "Transcript:\n"
        user += fit_to_budget(text, budget) if not skip else "-"
        return {
            **row,
            "messages": [
                {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
            "sampling_params": _PASS_THROUGH if skip else sampling,
        }

    return preprocess


def make_postprocess(model_name: str):
    """Processor output row -> our columns, with the parsed summary (or an error)."""

    def postprocess(row: dict) -> dict:
        from pipelines.results import RESULT_COLUMNS
        from pipelines.stages import passes_through

        out = {k: row.get(k) for k in RESULT_COLUMNS}
        if passes_through(out):
            return out
        models = dict(out.get("models") or {})
        models["llm"] = model_name
        out["models"] = models
        timings = dict(out.get("timings") or {})
        timings["summarize_s"] = max(0.0, float(row.get("time_taken_llm") or 0.0))
        out["timings"] = timings
        if row.get("__inference_error__"):
            out["error_code"] = "summarize_failed"
            out["error_message"] = str(row["__inference_error__"])[:2000]
            return out
        if not (out.get("transcript_text") or "").strip():
            summary = NO_SPEECH  # as the service: no model call for silence
        else:
            summary = parse_summary(row.get("generated_text") or "")
        out.update(
            summary=summary.summary,
            key_points=summary.key_points,
            action_items=summary.action_items,
        )
        return out

    return postprocess


INFERENCE_ERROR = "__inference_error__"


def make_finalize(model_name: str):
    """Row after the processor -> our result row; failed inferences become failed rows.

    Ray 2.60's ``wrap_postprocess`` hands a row whose ``__inference_error__`` is set
    straight through, *without* calling our postprocess: it arrives as the processor's
    whole internal row (prompt, sampling params, ...) with no summary and no error
    code, and would be written as a success with an empty summary. So the error
    mapping runs here, after the processor, on every row.
    """
    postprocess = make_postprocess(model_name)

    def finalize(row: dict) -> dict:
        error = row.get(INFERENCE_ERROR) or ""
        if not error:
            row.pop(INFERENCE_ERROR, None)
            return row
        return postprocess(row)  # sees __inference_error__: error_code summarize_failed

    return finalize


def run_processor(processor, ds, model_name: str):
    """``processor(ds)`` then :func:`make_finalize`: the only way this module applies it."""
    return processor(ds).map(make_finalize(model_name))


def build_vllm_summarizer(
    settings, *, engines: int, gpu_fraction: float, batch_size: int, instruction: str | None = None
):
    """``(summarize, model name)``; ``summarize(ds)`` adds the summary columns to each row.

    Building it loads the model's tokenizer config (transformers, from ``aipp[gpu]``).
    """
    from ray.data.llm import build_processor

    from app.core.model_assets import resolve_llm_model

    model = resolve_llm_model("vllm", settings.llm_model, settings.cache_dir)
    config = processor_config(
        settings, model.path, engines=engines, gpu_fraction=gpu_fraction, batch_size=batch_size
    )
    processor = build_processor(
        config,
        preprocess=make_preprocess(settings, instruction),
        postprocess=make_postprocess(model.name),
    )
    return (lambda ds: run_processor(processor, ds, model.name)), model.name
