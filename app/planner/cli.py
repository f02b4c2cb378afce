"""``aipp plan``: the capacity planner on the command line.

Bad input (a non-positive or absurd volume, NaN, an unknown GPU or model, a malformed
catalog file, a chart path that is not .svg/.png) prints one line naming the option
and exits with status 2, the same status the argument parser uses.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

# PlanInput field -> the option that sets it, for error messages.
FLAGS: dict[str, str] = {
    "tasks_per_month": "--tasks-per-month",
    "avg_minutes": "--avg-minutes",
    "active_hours_per_day": "--active-hours",
    "active_days_per_month": "--active-days",
    "peak_factor": "--peak-factor",
    "target_utilization": "--utilization",
    "words_per_minute": "--words-per-minute",
    "tokens_per_word": "--tokens-per-word",
    "prompt_overhead_tokens": "--prompt-overhead",
    "summary_tokens_in": "--tokens-in",
    "summary_tokens_out": "--tokens-out",
    "gpu": "--gpu",
    "stt_model": "--stt-model",
    "llm_model": "--llm-model",
    "bedrock_model": "--bedrock-model",
    "packing": "--packing",
    "packing_efficiency": "--packing-efficiency",
    "spot_share": "--spot-share",
    "spot_interruption_overhead": "--spot-overhead",
    "always_on": "--always-on/--active-hours-only",
    "include_fixed_costs": "--fixed-costs/--no-fixed-costs",
    "curve_points": "--curve-points",
    "sizing": "--sizing",
    "p95_minutes": "--p95-minutes",
    "max_utilization": "--max-utilization",
    "duration_cv": "--duration-cv",
    "managed_stt": "--managed-stt",
    "bedrock_batch": "--bedrock-batch/--bedrock-on-demand",
    "diarize": "--diarize/--no-diarize",
    "diarizer_device": "--diarizer-device",
    "diarizer_audio_s_per_s": "--diarizer-speed",
    "commitment": "--commitment",
    "ha": "--ha/--no-ha",
    "ops_hours_per_month": "--ops-hours",
    "ops_usd_per_hour": "--ops-usd-per-hour",
    "scale_up_delay_minutes": "--scale-up-delay",
    "support_plan": "--support-plan",
    "bedrock_in_region": "--bedrock-in-region/--bedrock-global",
}


class Emit(StrEnum):
    serve_overrides = "serve-overrides"


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(code)


def validation_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        field = loc[0] if loc else ""
        flag = FLAGS.get(field, field or "input")
        msg = err.get("msg", "invalid")
        if err.get("type") == "missing":
            msg = "is required (or use --preset seed-example)"
        lines.append(f"{flag}: {msg}")
    return lines


def _calibration_overlay(
    catalog: Any, profile: Any, gpu: str, stt_model: str, llm_model: str
) -> dict:
    """The measured profiles (memory kept from the catalog) as a file for --catalog."""
    from app.planner.calibrate import MEASURED_SOURCE_ID

    stt = catalog.stt_models[stt_model].profiles[gpu].model_dump()
    llm = catalog.llm_models[llm_model].profiles[gpu].model_dump()
    return {
        "sources": {MEASURED_SOURCE_ID: profile.source.model_dump()},
        "stt_models": {stt_model: {"profiles": {gpu: stt}}},
        "llm_models": {llm_model: {"profiles": {gpu: llm}}},
    }


def run_plan(
    given: dict[str, Any],
    *,
    preset: str | None,
    catalog_path: Path | None,
    as_json: bool,
    chart: Path | None,
    emit: Emit | None,
    calibrate: bool,
    calibration_out: Path | None,
    calibration_audio: Path | None,
    calibration_batch: int | None = None,
) -> None:
    from app.planner.catalog import CatalogError, load_catalog
    from app.planner.plan import plan
    from app.planner.presets import PRESETS, preset_inputs
    from app.planner.schemas import PlanInput, PlannerInputError

    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise _fail(f"--preset: unknown preset '{preset}'; known: {', '.join(PRESETS)}")
        values = preset_inputs(preset)
    values.update({k: v for k, v in given.items() if v is not None})
    try:
        inp = PlanInput.model_validate(values)
    except ValidationError as exc:
        raise _fail("; ".join(validation_lines(exc))) from None

    if chart is not None:
        from app.planner.chart import ChartError, chart_format

        try:
            chart_format(chart)
        except ChartError as exc:
            raise _fail(f"--chart: {exc}") from None
    try:
        catalog = load_catalog(catalog_path)
    except CatalogError as exc:
        raise _fail(f"--catalog: {exc}") from None

    if calibrate:
        from app.planner.calibrate import calibrate as run_calibration

        typer.echo("Calibrating: timing Whisper and the LLM on this machine...", err=True)
        try:
            extra = {"batch": calibration_batch} if calibration_batch else {}
            catalog, profile = run_calibration(
                catalog,
                inp.gpu,
                inp.stt_model,
                inp.llm_model,
                audio_path=calibration_audio,
                **extra,
            )
        except Exception as exc:  # model stack missing, model files absent, engine errors
            raise _fail(f"calibration failed: {type(exc).__name__}: {exc}", EXIT_FAILED) from None
        typer.echo(f"Measured here: {profile.source.title}", err=True)
        from app.planner.calibrate import busy_warning

        warning = busy_warning(profile.hardware)
        if warning:
            typer.echo(f"Warning: {warning}", err=True)
        if calibration_out is not None:
            import yaml

            overlay = _calibration_overlay(catalog, profile, inp.gpu, inp.stt_model, inp.llm_model)
            try:
                calibration_out.write_text(
                    "# aipp plan --calibrate: use with --catalog to plan with these numbers\n"
                    + yaml.safe_dump(overlay, sort_keys=False),
                    encoding="utf-8",
                )
            except OSError as exc:
                raise _fail(f"--calibration-out: {exc}") from None

    from app.planner.queueing import WorkBudgetExceeded

    try:
        result = plan(inp, catalog, preset=preset)
    except PlannerInputError as exc:
        raise _fail(f"{FLAGS.get(exc.field, exc.field)}: {exc.message}") from None
    except WorkBudgetExceeded as exc:
        raise _fail(f"--tasks-per-month: {exc}") from None
    for warning in result.warnings:
        typer.echo(f"Warning: {warning}", err=True)

    if chart is not None:
        from app.planner.chart import ChartError, render_chart

        try:
            render_chart(result, chart)
        except ChartError as exc:
            raise _fail(f"--chart: {exc}") from None
        typer.echo(f"Chart written to {chart}", err=True)

    if emit is not None:
        from app.planner.advice import advice_document, advice_yaml

        if as_json:
            typer.echo(json.dumps(advice_document(result.replica_advice), indent=2))
        else:
            header = [
                f"aipp plan: {inp.tasks_per_month:,} tasks/month x {inp.avg_minutes:g} min on "
                f"{result.gpu.name} ({result.gpu.instance_type}), layout {result.sizing.chosen}",
                "consumed by: aipp cluster render --values FILE",
            ]
            typer.echo(advice_yaml(result.replica_advice, header), nl=False)
        return
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    from app.planner.tables import print_table

    print_table(result)


def register(cli: typer.Typer) -> None:
    @cli.command("plan")
    def plan_command(
        tasks_per_month: int | None = typer.Option(
            None, "--tasks-per-month", help="Audio files processed per month."
        ),
        avg_minutes: float | None = typer.Option(
            None, "--avg-minutes", help="Average audio minutes per task."
        ),
        active_hours: float | None = typer.Option(
            None, "--active-hours", help="Hours a day the work arrives in (default 10)."
        ),
        active_days: float | None = typer.Option(
            None, "--active-days", help="Days a month the work arrives on (default 22)."
        ),
        peak_factor: float | None = typer.Option(
            None, "--peak-factor", help="Peak-hour load / average active-hour load (default 2)."
        ),
        utilization: float | None = typer.Option(
            None, "--utilization", help="Target GPU utilisation, 0-1 (default 0.7)."
        ),
        words_per_minute: float | None = typer.Option(
            None, "--words-per-minute", help="Speech rate (default 150)."
        ),
        tokens_per_word: float | None = typer.Option(
            None, "--tokens-per-word", help="LLM tokens per word (default 1.33)."
        ),
        prompt_overhead: int | None = typer.Option(
            None,
            "--prompt-overhead",
            help="Prompt tokens per task besides the transcript (default 600).",
        ),
        tokens_in: int | None = typer.Option(
            None, "--tokens-in", help="Override summary input tokens per task."
        ),
        tokens_out: int | None = typer.Option(
            None, "--tokens-out", help="Summary output tokens per task (default 500)."
        ),
        gpu: str | None = typer.Option(
            None, "--gpu", help="GPU type: T4, A10G, L4, L40S, A100, H100 (default L4)."
        ),
        stt_model: str | None = typer.Option(
            None, "--stt-model", help="Whisper model in the catalog (default whisper-large-v3)."
        ),
        llm_model: str | None = typer.Option(
            None,
            "--llm-model",
            help="Self-hosted LLM in the catalog (default llama-3.1-8b-instruct).",
        ),
        bedrock_model: str | None = typer.Option(
            None, "--bedrock-model", help="Managed LLM to compare with (default claude-haiku-4.5)."
        ),
        packing: str | None = typer.Option(
            None, "--packing", help="auto | dedicated | packed (default auto)."
        ),
        packing_efficiency: float | None = typer.Option(
            None, "--packing-efficiency", help="Throughput kept when packed (default 0.85)."
        ),
        spot_share: float | None = typer.Option(
            None, "--spot-share", help="Share of GPUs on spot, 0-1 (default 0)."
        ),
        spot_overhead: float | None = typer.Option(
            None, "--spot-overhead", help="Extra spot hours for interruptions (default 0.05)."
        ),
        always_on: bool | None = typer.Option(
            None, "--always-on/--active-hours-only", help="Bill GPUs all month (default always-on)."
        ),
        fixed_costs: bool | None = typer.Option(
            None, "--fixed-costs/--no-fixed-costs", help="Include platform fixed costs."
        ),
        curve_points: int | None = typer.Option(
            None, "--curve-points", help="Points in the cost curve (default 80)."
        ),
        sizing: str | None = typer.Option(
            None, "--sizing", help="queueing (to the p95 target, default) | throughput."
        ),
        p95_minutes: float | None = typer.Option(
            None, "--p95-minutes", help="Target p95 upload-to-result minutes (default 15)."
        ),
        max_utilization: float | None = typer.Option(
            None, "--max-utilization", help="Queueing: highest pool utilisation (default 0.9)."
        ),
        duration_cv: float | None = typer.Option(
            None, "--duration-cv", help="Variation of audio length, CV (default 0.5)."
        ),
        managed_stt: str | None = typer.Option(
            None, "--managed-stt", help="Managed STT of the chosen baseline (aws-transcribe)."
        ),
        bedrock_batch: bool | None = typer.Option(
            None, "--bedrock-batch/--bedrock-on-demand", help="Bedrock batch pricing."
        ),
        diarize: bool | None = typer.Option(
            None, "--diarize/--no-diarize", help="Plan a speaker-diarization pool."
        ),
        diarizer_device: str | None = typer.Option(
            None, "--diarizer-device", help="cpu (default) | gpu."
        ),
        diarizer_speed: float | None = typer.Option(
            None, "--diarizer-speed", help="Measured diarizer audio s per s (1/RTF)."
        ),
        commitment: str | None = typer.Option(
            None, "--commitment", help="none | savings-plan-1y | savings-plan-3y."
        ),
        ha: bool | None = typer.Option(None, "--ha/--no-ha", help="N+1 GPUs per pool."),
        ops_hours: float | None = typer.Option(
            None, "--ops-hours", help="Engineer hours a month (default 8)."
        ),
        ops_usd_per_hour: float | None = typer.Option(
            None, "--ops-usd-per-hour", help="Cost of an engineer hour (default 100)."
        ),
        scale_up_delay: float | None = typer.Option(
            None,
            "--scale-up-delay",
            help="Minutes a new replica needs; in the p95 with spot or active-hours-only (3).",
        ),
        support_plan: str | None = typer.Option(
            None, "--support-plan", help="AWS support: none | developer | business (default)."
        ),
        bedrock_in_region: bool | None = typer.Option(
            None,
            "--bedrock-in-region/--bedrock-global",
            help="Bedrock in-region endpoints (a premium on some models) or global (default).",
        ),
        preset: str | None = typer.Option(
            None, "--preset", help="Start from named inputs: seed-example."
        ),
        catalog: Path | None = typer.Option(
            None,
            "--catalog",
            help="YAML merged over the built-in catalog (default: $AIPP_PLANNER_CATALOG).",
            dir_okay=False,
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
        chart: Path | None = typer.Option(
            None, "--chart", help="Write the cost-crossover chart (.svg or .png).", dir_okay=False
        ),
        emit: Emit | None = typer.Option(
            None, "--emit", help="Print replica advice (YAML; JSON with --json)."
        ),
        calibrate: bool = typer.Option(
            False, "--calibrate", help="Measure Whisper and LLM throughput on this machine."
        ),
        calibration_out: Path | None = typer.Option(
            None,
            "--calibration-out",
            help="With --calibrate: save the measured profile as a catalog file for --catalog.",
            dir_okay=False,
        ),
        calibration_audio: Path | None = typer.Option(
            None,
            "--calibration-audio",
            help="Speech clip to time (default tests/data/jfk.flac).",
            dir_okay=False,
        ),
        calibration_batch: int | None = typer.Option(
            None,
            "--calibration-batch",
            min=1,
            max=64,
            help="On a GPU: recordings per Whisper pass and concurrent LLM requests to "
            "time (default AIPP_STT_BATCH_SIZE).",
        ),
    ) -> None:
        """Size GPUs, compare self-hosted and managed monthly cost, find the crossover."""
        given = {
            "tasks_per_month": tasks_per_month,
            "avg_minutes": avg_minutes,
            "active_hours_per_day": active_hours,
            "active_days_per_month": active_days,
            "peak_factor": peak_factor,
            "target_utilization": utilization,
            "words_per_minute": words_per_minute,
            "tokens_per_word": tokens_per_word,
            "prompt_overhead_tokens": prompt_overhead,
            "summary_tokens_in": tokens_in,
            "summary_tokens_out": tokens_out,
            "gpu": gpu,
            "stt_model": stt_model,
            "llm_model": llm_model,
            "bedrock_model": bedrock_model,
            "packing": packing,
            "packing_efficiency": packing_efficiency,
            "spot_share": spot_share,
            "spot_interruption_overhead": spot_overhead,
            "always_on": always_on,
            "include_fixed_costs": fixed_costs,
            "curve_points": curve_points,
            "sizing": sizing,
            "p95_minutes": p95_minutes,
            "max_utilization": max_utilization,
            "duration_cv": duration_cv,
            "managed_stt": managed_stt,
            "bedrock_batch": bedrock_batch,
            "diarize": diarize,
            "diarizer_device": diarizer_device,
            "diarizer_audio_s_per_s": diarizer_speed,
            "commitment": commitment,
            "ha": ha,
            "ops_hours_per_month": ops_hours,
            "ops_usd_per_hour": ops_usd_per_hour,
            "scale_up_delay_minutes": scale_up_delay,
            "support_plan": support_plan,
            "bedrock_in_region": bedrock_in_region,
        }
        run_plan(
            given,
            preset=preset,
            catalog_path=catalog,
            as_json=as_json,
            chart=chart,
            emit=emit,
            calibrate=calibrate,
            calibration_out=calibration_out,
            calibration_audio=calibration_audio,
            calibration_batch=calibration_batch,
        )


if __name__ == "__main__":  # pragma: no cover - `python -m app.planner.cli ...`
    app = typer.Typer(add_completion=False)
    register(app)
    sys.exit(app())
