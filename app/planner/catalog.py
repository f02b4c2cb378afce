"""The planner's data: GPU prices, throughput profiles, managed prices, fixed costs.

The numbers live in ``catalog.yaml`` next to this file. Each one names a source (an
id under ``sources:``) and each source carries its date, so a plan can show where
every figure came from. :func:`load_catalog` reads the packaged file, deep-merges an
optional user file over it and validates the result; a malformed file raises
:class:`CatalogError` with a message that names the file and the key.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
CATALOG_ENV = "AIPP_PLANNER_CATALOG"

Basis = Literal["published", "estimate", "measured"]


class CatalogError(Exception):
    """A catalog file that cannot be read or does not describe a valid catalog."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _iso_date(value: str | None) -> str | None:
    if value is not None:
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"'{value}' is not a date (YYYY-MM-DD)") from None
    return value


class Source(_Strict):
    title: str = Field(min_length=1)
    url: str | None = None
    as_of: str = Field(min_length=10, description="Date the figure was last checked (YYYY-MM-DD).")
    note: str = ""

    @field_validator("as_of")
    @classmethod
    def _date(cls, value: str) -> str:
        return _iso_date(value) or value

    def age_days(self, today: dt.date) -> int:
        return (today - dt.date.fromisoformat(self.as_of)).days


LifecycleStatus = Literal["active", "legacy", "retired"]


class Lifecycle(_Strict):
    """A managed model's state on its provider (Bedrock: Active, Legacy, End-of-Life)."""

    status: LifecycleStatus = "active"
    legacy_since: str | None = None
    end_of_life: str | None = Field(None, description="EOL date when announced (YYYY-MM-DD).")
    note: str = ""
    source: str | None = None

    @field_validator("legacy_since", "end_of_life")
    @classmethod
    def _dates(cls, value: str | None) -> str | None:
        return _iso_date(value)

    def state(self, today: dt.date, soon_days: int = 183) -> tuple[str, str]:
        """(``active`` | ``legacy`` | ``soon`` | ``retired``, a sentence for a warning)."""
        eol = dt.date.fromisoformat(self.end_of_life) if self.end_of_life else None
        if self.status == "retired" or (eol is not None and eol <= today):
            when = f" on {self.end_of_life}" if self.end_of_life else ""
            return "retired", f"reached end of life{when}"
        if eol is not None and (eol - today).days <= soon_days:
            return "soon", f"reaches end of life on {self.end_of_life}"
        if self.status == "legacy":
            return "legacy", "is marked legacy" + (
                f" (end of life {self.end_of_life})" if self.end_of_life else ""
            )
        return "active", ""


# Physically meaningful ranges for throughput figures: slower than 1/100 of real time
# or faster than 100,000x is a typo, and such a number would make the queueing maths
# divide by (nearly) nothing.
_SPEED = {"ge": 0.01, "le": 100_000}
_TOKENS = {"ge": 0.01, "le": 10_000_000}


class GpuType(_Strict):
    instance_type: str = Field(min_length=1)
    gpus_per_instance: int = Field(ge=1, le=64)
    vram_gb: float = Field(gt=0, le=10_000)
    on_demand_usd_per_hour: float = Field(ge=0, le=10_000)
    spot_usd_per_hour: float = Field(ge=0, le=10_000)
    source: str
    spot_source: str
    spot_basis: Basis = Field(
        "estimate", description="Spot moves by zone and hour: a typical value is an estimate."
    )
    spot_range_usd_per_hour: tuple[float, float] | None = Field(
        None, description="Low and high spot prices seen (with spot_basis: estimate)."
    )


class SttProfile(_Strict):
    audio_s_per_gpu_s: float = Field(description="Inverse real-time factor.", **_SPEED)
    vram_gb: float = Field(ge=0, le=10_000)
    basis: Basis = "estimate"
    source: str


class LlmProfile(_Strict):
    prefill_tokens_per_s: float = Field(**_TOKENS)
    decode_tokens_per_s: float = Field(**_TOKENS)
    batch_size: int = Field(ge=1, le=4096)
    vram_gb: float = Field(ge=0, le=10_000)
    basis: Basis = "estimate"
    source: str


class SttModel(_Strict):
    description: str = ""
    profiles: dict[str, SttProfile]


class LlmModel(_Strict):
    description: str = ""
    profiles: dict[str, LlmProfile]


class TranscribeTier(_Strict):
    up_to_minutes: float | None = Field(None, gt=0)
    usd_per_minute: float = Field(ge=0)


class TranscribePricing(_Strict):
    tiers: list[TranscribeTier] = Field(min_length=1)
    minimum_billed_seconds: float = Field(ge=0)
    billing_increment_seconds: float = Field(1, gt=0)
    source: str

    @model_validator(mode="after")
    def _tiers_ascend(self) -> TranscribePricing:
        bounds = [t.up_to_minutes for t in self.tiers]
        if bounds[-1] is not None:
            raise ValueError("the last Transcribe tier must have up_to_minutes: null")
        if any(b is None for b in bounds[:-1]):
            raise ValueError("only the last Transcribe tier may have up_to_minutes: null")
        finite = [b for b in bounds[:-1] if b is not None]
        if any(b2 <= b1 for b1, b2 in zip(finite, finite[1:], strict=False)):
            raise ValueError("Transcribe tier bounds must increase")
        rates = [t.usd_per_minute for t in self.tiers]
        if any(r2 > r1 for r1, r2 in zip(rates, rates[1:], strict=False)):
            # The crossover search relies on volume discounts (a concave managed cost).
            raise ValueError("Transcribe tier rates must not increase with volume")
        return self


class BedrockModel(_Strict):
    model_id: str
    input_usd_per_1k_tokens: float = Field(ge=0)
    output_usd_per_1k_tokens: float = Field(ge=0)
    batch_discount: float = Field(
        0.5, ge=0, lt=1, description="Share off the on-demand price for batch inference."
    )
    regional_premium: float = Field(
        0, ge=0, le=1, description="Extra share on in-region endpoints (vs global routing)."
    )
    retired: bool = Field(False, description="End of life on Bedrock: plans warn.")
    lifecycle_note: str = ""
    lifecycle: Lifecycle | None = None
    basis: Basis = "published"
    source: str

    def life(self) -> Lifecycle:
        if self.lifecycle is not None:
            return self.lifecycle
        return Lifecycle(status="retired" if self.retired else "active", note=self.lifecycle_note)


class SttApi(_Strict):
    """A per-minute managed speech-to-text API (one flat rate)."""

    name: str = Field(min_length=1)
    usd_per_minute: float = Field(ge=0)
    minimum_billed_seconds: float = Field(0, ge=0)
    billing_increment_seconds: float = Field(1, gt=0)
    diarization_usd_per_minute: float | None = Field(
        0, ge=0, description="Speaker-label add-on; null when the API has no diarization."
    )
    outside_aws: bool = Field(
        False, description="Hosted outside AWS: sending it the audio is internet egress."
    )
    lifecycle: Lifecycle | None = None
    basis: Basis = "published"
    source: str


class TieredRate(_Strict):
    up_to: float | None = Field(None, gt=0, description="Cumulative bound; null: no bound.")
    rate: float = Field(ge=0)


def _tiers_ok(tiers: list[TieredRate], what: str) -> None:
    bounds = [t.up_to for t in tiers]
    if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
        raise ValueError(f"only the last {what} tier has up_to: null, and it must")
    finite = [b for b in bounds[:-1] if b is not None]
    if any(b2 <= b1 for b1, b2 in zip(finite, finite[1:], strict=False)):
        raise ValueError(f"{what} tier bounds must increase")


class Egress(_Strict):
    """Internet data transfer out of AWS, for audio sent to a speech API outside it."""

    tiers: list[TieredRate] = Field(min_length=1, description="USD per GB, cumulative GB.")
    audio_mb_per_minute: float = Field(0.5, gt=0, le=100)
    source: str

    @model_validator(mode="after")
    def _check(self) -> Egress:
        _tiers_ok(self.tiers, "egress")
        return self


class SupportPlan(_Strict):
    """An AWS support plan: the greater of a minimum and shares of monthly AWS usage."""

    name: str
    minimum_usd: float = Field(ge=0)
    tiers: list[TieredRate] = Field(min_length=1, description="Share of usage, cumulative USD.")
    source: str

    @model_validator(mode="after")
    def _check(self) -> SupportPlan:
        _tiers_ok(self.tiers, "support")
        return self


class Managed(_Strict):
    transcribe: TranscribePricing
    transcribe_diarization_usd_per_minute: float = Field(0, ge=0)
    stt_apis: dict[str, SttApi] = Field(default_factory=dict)
    bedrock: dict[str, BedrockModel] = Field(min_length=1)
    bedrock_batch_turnaround_hours: float = Field(
        24, gt=0, le=720, description="Bedrock batch jobs may take this long."
    )
    bedrock_batch_source: str | None = None
    egress: Egress | None = None


class DiarizerProfile(_Strict):
    """Speaker diarization throughput on one device ("cpu" or a GPU type)."""

    audio_s_per_s: float = Field(description="Audio seconds per second (1 / RTF).", **_SPEED)
    instance_type: str | None = None
    usd_per_hour: float | None = Field(None, ge=0, description="CPU node price (cpu only).")
    vram_gb: float = Field(0, ge=0)
    basis: Basis = "estimate"
    source: str


class Diarizer(_Strict):
    description: str = ""
    profiles: dict[str, DiarizerProfile] = Field(default_factory=dict)


class Commitment(_Strict):
    discount: float = Field(ge=0, lt=1, description="Share off on-demand for committed hours.")
    source: str


class FixedCost(_Strict):
    name: str = Field(min_length=1)
    usd_per_hour: float | None = Field(None, ge=0)
    usd_per_month: float | None = Field(None, ge=0)
    quantity: float = Field(1, ge=0)
    side: Literal["self_hosted", "both"] = Field(
        "self_hosted", description="`both`: a managed pipeline pays it too (storage, DB...)."
    )
    per_gpu_node: bool = Field(False, description="Multiply by the GPU node count (EBS).")
    ha_quantity: float | None = Field(
        None, ge=0, description="Quantity with high availability on (e.g. one NAT per AZ)."
    )
    source: str

    @model_validator(mode="after")
    def _one_price(self) -> FixedCost:
        if (self.usd_per_hour is None) == (self.usd_per_month is None):
            raise ValueError(
                f"fixed cost '{self.name}' needs exactly one of usd_per_hour, usd_per_month"
            )
        return self

    def monthly_usd(self, hours_per_month: float, quantity: float | None = None) -> float:
        q = self.quantity if quantity is None else quantity
        if self.usd_per_hour is not None:
            return self.usd_per_hour * hours_per_month * q
        assert self.usd_per_month is not None
        return self.usd_per_month * q


class Catalog(_Strict):
    version: int = 1
    as_of: str = Field(
        "1970-01-01", description="Date the catalog as a whole was last reviewed (YYYY-MM-DD)."
    )
    region: str = "us-east-1"
    currency: str = "USD"
    hours_per_month: float = Field(730, gt=0, le=744)
    sources: dict[str, Source]
    gpus: dict[str, GpuType] = Field(min_length=1)
    stt_models: dict[str, SttModel] = Field(min_length=1)
    llm_models: dict[str, LlmModel] = Field(min_length=1)
    managed: Managed
    diarizer: Diarizer = Field(default_factory=Diarizer)
    commitments: dict[str, Commitment] = Field(default_factory=dict)
    support_plans: dict[str, SupportPlan] = Field(default_factory=dict)
    fixed_costs: list[FixedCost] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        problems: list[str] = []

        def need(src: str, where: str) -> None:
            if src not in self.sources:
                problems.append(f"{where}: unknown source '{src}'")

        for name, gpu in self.gpus.items():
            need(gpu.source, f"gpus.{name}.source")
            need(gpu.spot_source, f"gpus.{name}.spot_source")
        for kind, models in (("stt_models", self.stt_models), ("llm_models", self.llm_models)):
            for mname, model in models.items():
                for gname, prof in model.profiles.items():
                    where = f"{kind}.{mname}.profiles.{gname}"
                    if gname not in self.gpus:
                        problems.append(f"{where}: unknown GPU type '{gname}'")
                    need(prof.source, f"{where}.source")
        need(self.managed.transcribe.source, "managed.transcribe.source")
        for bname, bm in self.managed.bedrock.items():
            need(bm.source, f"managed.bedrock.{bname}.source")
            if bm.lifecycle is not None and bm.lifecycle.source is not None:
                need(bm.lifecycle.source, f"managed.bedrock.{bname}.lifecycle.source")
        for aname, api in self.managed.stt_apis.items():
            need(api.source, f"managed.stt_apis.{aname}.source")
            if api.lifecycle is not None and api.lifecycle.source is not None:
                need(api.lifecycle.source, f"managed.stt_apis.{aname}.lifecycle.source")
        if self.managed.egress is not None:
            need(self.managed.egress.source, "managed.egress.source")
        if self.managed.bedrock_batch_source is not None:
            need(self.managed.bedrock_batch_source, "managed.bedrock_batch_source")
        for pname, sp in self.support_plans.items():
            need(sp.source, f"support_plans.{pname}.source")
        for dname, dprof in self.diarizer.profiles.items():
            where = f"diarizer.profiles.{dname}"
            need(dprof.source, f"{where}.source")
            if dname != "cpu" and dname not in self.gpus:
                problems.append(f"{where}: unknown GPU type '{dname}'")
            if dname == "cpu" and dprof.usd_per_hour is None:
                problems.append(f"{where}: a CPU profile needs usd_per_hour")
        for cname, com in self.commitments.items():
            need(com.source, f"commitments.{cname}.source")
        for i, fc in enumerate(self.fixed_costs):
            need(fc.source, f"fixed_costs[{i}].source")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def source(self, source_id: str) -> Source:
        return self.sources[source_id]


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog file {path} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CatalogError(f"catalog file {path} must hold a mapping at the top level")
    return data


def _format_validation(exc: ValidationError, path: Path | str) -> str:
    parts = []
    for err in exc.errors()[:6]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "(top level)"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return f"catalog {path} is invalid: " + "; ".join(parts)


def catalog_from_dict(data: dict[str, Any], origin: str = "<dict>") -> Catalog:
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        raise CatalogError(_format_validation(exc, origin)) from None


def load_catalog(path: str | Path | None = None, *, use_env: bool = True) -> Catalog:
    """The packaged catalog, with ``path`` (or ``$AIPP_PLANNER_CATALOG``) merged over it."""
    base = _read_yaml(DEFAULT_CATALOG_PATH)
    if path is None and use_env:
        path = os.environ.get(CATALOG_ENV) or None
    origin = str(DEFAULT_CATALOG_PATH)
    if path is not None:
        user_path = Path(path).expanduser()
        user = _read_yaml(user_path)
        replace = bool(user.pop("replace", False))
        base = user if replace else _deep_merge(base, user)
        origin = str(user_path)
    return catalog_from_dict(base, origin)
