"""The managed baselines: a speech API plus Bedrock, as monthly cost functions of volume.

Each :class:`Pipeline` prices the speech API (Transcribe's tiers, or a flat per-minute
rate), its speaker-label add-on, the internet egress that audio sent outside AWS pays,
Bedrock tokens (on-demand or batch, global or in-region), the platform costs both sides
pay and the AWS support plan's share of the AWS part. Every part is continuous and
increasing in volume, which the crossover search relies on.

Why "like-for-like": Bedrock batch halves the summary's price but a job may take a
day, while the self-hosted fleet is sized to a p95 of minutes. A batch baseline is
compared (cheapest option, crossover headline, verdict) only when the plan's target
allows that long; otherwise it is listed apart, "if you can wait 24 h".
"""

from __future__ import annotations

from dataclasses import dataclass

from app.planner.catalog import Catalog
from app.planner.costs import (
    Baseline,
    SupportFee,
    Tiers,
    billed_seconds_per_request,
    tiered_usd,
    transcribe_tier_items,
)
from app.planner.schemas import LineItem, PlanInput

FixedRow = tuple[str, float, str, float, float, str, bool]


@dataclass(frozen=True)
class Pipeline:
    """One baseline's prices, held fixed while the volume varies."""

    id: str
    name: str
    stt_api: str
    mode: str  # on-demand | batch
    api_name: str
    api_source: str
    transcribe: bool
    billed_min: float  # billed minutes per task
    stt_tiers: Tiers
    diar_rate: float  # USD per billed minute, 0 when none or not asked
    egress_gb: float  # GB sent out of AWS per task (0: the API is in AWS)
    egress_tiers: Tiers
    egress_source: str | None
    tin: float
    tout: float
    in_rate: float  # USD per input token
    out_rate: float
    llm_label: str
    llm_source: str
    shared_rows: tuple[FixedRow, ...]
    support: SupportFee | None

    def _parts(self, v: int) -> tuple[float, float, float, float, float, float]:
        minutes = v * self.billed_min
        stt = tiered_usd(minutes, self.stt_tiers)
        diar = minutes * self.diar_rate
        egress = tiered_usd(v * self.egress_gb, self.egress_tiers) if self.egress_gb else 0.0
        llm = v * (self.tin * self.in_rate + self.tout * self.out_rate)
        shared = sum(r[4] for r in self.shared_rows)
        aws = (stt + diar if self.transcribe else 0.0) + egress + llm + shared
        support = self.support.usd(aws) if self.support is not None else 0.0
        return stt, diar, egress, llm, shared, support

    def cost(self, v: int) -> float:
        return sum(self._parts(v))

    def items(self, v: int) -> list[LineItem]:
        stt, diar, egress, _llm, _shared, support = self._parts(v)
        minutes = v * self.billed_min
        if self.transcribe:
            items = transcribe_tier_items(minutes, self.stt_tiers, self.api_source)
        else:
            rate = self.stt_tiers[0][1]
            items = [
                LineItem(
                    name=self.api_name,
                    quantity=minutes,
                    unit="minute",
                    unit_usd=rate,
                    monthly_usd=stt,
                    source=self.api_source,
                )
            ]
        if self.diar_rate:
            label = "speaker identification" if self.transcribe else "speaker labels"
            items.append(
                LineItem(
                    name=f"{self.api_name.split(' (')[0]} {label}",
                    quantity=minutes,
                    unit="minute",
                    unit_usd=self.diar_rate,
                    monthly_usd=diar,
                    source=self.api_source,
                )
            )
        if self.egress_gb:
            gb = v * self.egress_gb
            items.append(
                LineItem(
                    name="Internet egress: audio sent to the speech API",
                    quantity=gb,
                    unit="GB",
                    unit_usd=egress / gb if gb else 0.0,
                    monthly_usd=egress,
                    source=self.egress_source,
                )
            )
        for kind, per_task, rate in (
            ("input", self.tin, self.in_rate),
            ("output", self.tout, self.out_rate),
        ):
            q = v * per_task / 1000.0
            items.append(
                LineItem(
                    name=f"{self.llm_label} {kind} tokens",
                    quantity=q,
                    unit="1K tokens",
                    unit_usd=rate * 1000.0,
                    monthly_usd=q * rate * 1000.0,
                    source=self.llm_source,
                )
            )
        items += [
            LineItem(name=n, quantity=q, unit=u, unit_usd=uu, monthly_usd=m, source=s)
            for n, q, u, uu, m, s, _ in self.shared_rows
        ]
        if self.support is not None:
            items.append(
                LineItem(
                    name=f"{self.support.name} (share of this side's AWS usage)",
                    quantity=1,
                    unit="month",
                    unit_usd=support,
                    monthly_usd=support,
                    source=self.support.source,
                )
            )
        return items


def support_fee(catalog: Catalog, inp: PlanInput) -> SupportFee | None:
    if inp.support_plan == "none":
        return None
    plan = catalog.support_plans.get(inp.support_plan)
    if plan is None:
        from app.planner.schemas import PlannerInputError

        raise PlannerInputError(
            "support_plan", f"the catalog has no '{inp.support_plan}' support plan"
        )
    return SupportFee(
        name=plan.name,
        minimum_usd=plan.minimum_usd,
        tiers=tuple((t.up_to, t.rate) for t in plan.tiers),
        source=plan.source,
    )


def baselines(
    catalog: Catalog,
    inp: PlanInput,
    tin: int,
    tout: int,
    shared_rows: list[FixedRow],
    managed_price: float = 1.0,
) -> list[Baseline]:
    """Every speech API x {Bedrock on-demand, Bedrock batch}, priced for ``inp``."""
    m = catalog.managed
    bm = m.bedrock[inp.bedrock_model]
    audio_s = inp.avg_minutes * 60.0
    premium = 1.0 + (bm.regional_premium if inp.bedrock_in_region else 0.0)
    support = support_fee(catalog, inp)
    egress = m.egress
    egress_tiers = [(t.up_to, t.rate) for t in egress.tiers] if egress else []
    gb_per_task = inp.avg_minutes * egress.audio_mb_per_minute / 1024.0 if egress else 0.0
    batch_h = m.bedrock_batch_turnaround_hours
    tr = m.transcribe

    apis: list[tuple[str, str, str, bool, float, Tiers, float | None, bool, tuple[str, ...]]] = []
    tr_min = billed_seconds_per_request(
        audio_s, tr.minimum_billed_seconds, tr.billing_increment_seconds
    )
    apis.append(
        (
            "aws-transcribe",
            "Amazon Transcribe",
            tr.source,
            True,
            tr_min / 60.0,
            [(t.up_to_minutes, t.usd_per_minute * managed_price) for t in tr.tiers],
            m.transcribe_diarization_usd_per_minute,
            False,
            (),
        )
    )
    for api_id, api in m.stt_apis.items():
        billed = billed_seconds_per_request(
            audio_s, api.minimum_billed_seconds, api.billing_increment_seconds
        )
        notes: tuple[str, ...] = ()
        if inp.diarize and api.diarization_usd_per_minute is None:
            notes = (f"{api.name} has no speaker labels; priced without diarization.",)
        apis.append(
            (
                api_id,
                f"{api.name} ({api.basis})",
                api.source,
                False,
                billed / 60.0,
                [(None, api.usd_per_minute * managed_price)],
                api.diarization_usd_per_minute,
                api.outside_aws,
                notes,
            )
        )

    out: list[Baseline] = []
    for mode in ("on-demand", "batch"):
        factor = 1.0 if mode == "on-demand" else 1.0 - bm.batch_discount
        rate = factor * premium * managed_price / 1000.0
        region = " in-region" if inp.bedrock_in_region and bm.regional_premium else ""
        llm_label = (
            f"{'Bedrock batch' if mode == 'batch' else 'Bedrock'}{region} {inp.bedrock_model}"
        )
        turnaround = batch_h if mode == "batch" else None
        comparable = turnaround is None or turnaround * 60.0 <= inp.p95_minutes
        for api_id, api_name, src, is_tr, billed, tiers, diar, outside, notes in apis:
            diar_rate = (diar or 0.0) * managed_price if inp.diarize else 0.0
            p = Pipeline(
                id=f"{api_id}+{mode}",
                name=f"{api_name.split(' (')[0]} + {llm_label}",
                stt_api=api_id,
                mode=mode,
                api_name=api_name,
                api_source=src,
                transcribe=is_tr,
                billed_min=billed,
                stt_tiers=tiers,
                diar_rate=diar_rate,
                egress_gb=gb_per_task if outside else 0.0,
                egress_tiers=egress_tiers,
                egress_source=egress.source if egress else None,
                tin=tin,
                tout=tout,
                in_rate=bm.input_usd_per_1k_tokens * rate,
                out_rate=bm.output_usd_per_1k_tokens * rate,
                llm_label=llm_label,
                llm_source=bm.source,
                shared_rows=tuple(shared_rows),
                support=support,
            )
            if not comparable:
                notes = (
                    *notes,
                    f"Bedrock batch may take up to {batch_h:g} h: not like-for-like with a "
                    f"{inp.p95_minutes:g}-minute p95 (shown as 'if you can wait').",
                )
            out.append(
                Baseline(
                    id=p.id,
                    name=p.name,
                    stt_api=api_id,
                    bedrock_mode=mode,
                    cost=p.cost,
                    items=p.items,
                    notes=notes,
                    turnaround_h=turnaround,
                    comparable=comparable,
                )
            )
    return out
