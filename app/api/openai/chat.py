"""``POST /v1/chat/completions``: the router and its serving code (plain and streamed)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse

from app.api.deps import DoorDep, PipelineDep
from app.api.openai.audio_routes import rate_limited
from app.api.openai.errors import (
    OpenAIError,
    OpenAIRoute,
    not_found,
    openai_error_body,
    to_openai_error,
)
from app.api.openai.models import ServedModels
from app.api.openai.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Usage,
)
from app.core.logs import get_logger
from app.tasks.pipeline import Pipeline

log = get_logger()

router = APIRouter(route_class=OpenAIRoute, tags=["openai"])


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


def output_budget(
    body: ChatCompletionRequest, context: int, output_limit: int, prompt_tokens: int
) -> int:
    """Tokens to generate: what was asked, within ``AIPP_LLM_MAX_OUTPUT_TOKENS`` and the room
    the prompt leaves in the context. Asking beyond the configured limit is a 400."""
    param, requested = body.requested_tokens
    if requested is not None and requested > output_limit:
        raise OpenAIError(
            400,
            f"'{param}' is too large: {requested}. This server generates at most "
            f"{output_limit} tokens per completion.",
            param=param,
            code="invalid_value",
        )
    room = context - prompt_tokens if context else output_limit
    return max(1, min(requested or output_limit, room, output_limit))


@router.post(
    "/v1/chat/completions",
    dependencies=[Depends(rate_limited)],
    summary="Chat completion (OpenAI-compatible)",
    openapi_extra={"x-aipp-endpoint": "chat"},
)
async def create_chat_completion(
    body: ChatCompletionRequest,
    models: ServedModels,
    door: DoorDep,
    pipeline: PipelineDep,
) -> Response:
    llm = models["llm"]
    if body.model != llm["model"]:
        raise not_found(body.model)
    messages = [m.engine_message() for m in body.messages]
    schema = body.response_format.schema_for_engine() if body.response_format else None
    context = int(llm.get("context_tokens") or 0)
    # The chat template adds a few tokens per message on top of the text itself.
    text = "\n".join(m["content"] for m in messages)
    prompt_tokens = await pipeline.count_tokens(text) + 4 * len(messages) + 3
    if context and prompt_tokens >= context:
        raise OpenAIError(
            400,
            f"This model's maximum context length is {context} tokens. However, your "
            f"messages resulted in about {prompt_tokens} tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    max_tokens = output_budget(body, context, door.settings.llm_max_output_tokens, prompt_tokens)
    temperature = 1.0 if body.temperature is None else body.temperature

    cid, created, model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), llm["model"]
    if not body.stream:
        comp = await pipeline.chat(messages, max_tokens, temperature, json_schema=schema)
        finish = "length" if comp.finish_reason == "length" else "stop"
        return JSONResponse(
            ChatCompletion(
                id=cid,
                created=created,
                model=model,
                choices=[Choice(message=AssistantMessage(content=comp.text), finish_reason=finish)],
                usage=Usage.of(comp.prompt_tokens, comp.completion_tokens),
            ).model_dump()
        )
    return await _stream(
        body, pipeline, messages, max_tokens, temperature, schema, prompt_tokens, cid, created
    )


async def _stream(
    body: ChatCompletionRequest,
    pipeline: Pipeline,
    messages: list[dict[str, str]],
    max_tokens: int,
    temperature: float,
    schema: dict | None,
    prompt_tokens: int,
    cid: str,
    created: int,
) -> StreamingResponse:
    model = body.model
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(delta: dict, finish: str | None) -> dict[str, Any]:
        out = ChatCompletionChunk(
            id=cid,
            created=created,
            model=model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],
        ).model_dump()
        if not include_usage:
            out.pop("usage")
        return out

    if schema is not None:
        # Constrained decoding has no token stream here: one content chunk, then the end.
        comp = await pipeline.chat(messages, max_tokens, temperature, json_schema=schema)
        first, rest = comp.text, None
        usage_now = Usage.of(comp.prompt_tokens, comp.completion_tokens)
        finish = "length" if comp.finish_reason == "length" else "stop"
    else:
        rest = pipeline.chat_stream(messages, max_tokens, temperature)
        # Take the first piece before answering 200, so a failure is still a clean error.
        try:
            first = await rest.__anext__()
        except StopAsyncIteration:
            first = ""
            rest = None
        usage_now, finish = None, None

    async def events() -> AsyncIterator[str]:
        parts = [first] if first else []
        yield _sse(chunk({"role": "assistant", "content": ""}, None))
        if first:
            yield _sse(chunk({"content": first}, None))
        usage, reason = usage_now, finish
        try:
            if rest is not None:
                try:
                    async for delta in rest:
                        parts.append(delta)
                        yield _sse(chunk({"content": delta}, None))
                except (asyncio.CancelledError, GeneratorExit):
                    # The client went away: stop the replica generating for nobody.
                    rest.cancel()
                    raise
            if usage is None:
                done = await pipeline.count_tokens("".join(parts)) if parts else 0
                usage = Usage.of(prompt_tokens, done)
                reason = "length" if done >= max_tokens else "stop"
        except Exception as exc:  # the stream already started: report in-band, then stop
            err = to_openai_error(exc) or OpenAIError(
                500, f"Generation failed: {type(exc).__name__}."
            )
            log.warning("chat stream failed: %s", exc)
            yield _sse(openai_error_body(err.message, err.type, err.param, err.code))
            return
        yield _sse(chunk({}, reason))
        if include_usage:
            final = ChatCompletionChunk(
                id=cid, created=created, model=model, choices=[], usage=usage
            ).model_dump()
            yield _sse(final)
        yield _sse("[DONE]")

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
