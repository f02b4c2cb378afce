"""``aipp plan``'s tables: the plan as an operator reads it in a terminal (rich).

Kept apart from the command's options and error handling (cli.py) so each stays short.
"""

from __future__ import annotations

from typing import Any


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.2f}"


def print_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    inp = result.inputs
    w = result.workload
    title = f"Capacity plan{f' (preset {result.preset})' if result.preset else ''}"
    console.print(f"[bold]{title}[/bold]")
    console.print(
        f"{inp.tasks_per_month:,} tasks/month x {inp.avg_minutes:g} min = "
        f"{w.audio_minutes_per_month:,.0f} audio min; peak {w.peak_tasks_per_hour:,.1f} "
        f"tasks/h ({inp.active_hours_per_day:g} h x {inp.active_days_per_month:g} days, "
        f"peak x{inp.peak_factor:g}); {w.summary_tokens_in_per_task:,} tokens in / "
        f"{w.summary_tokens_out_per_task:,} out per task"
    )

    s = result.sizing
    gpus = Table(
        title=f"GPUs ({result.gpu.name}, {result.gpu.instance_type})", title_justify="left"
    )
    gpus.add_column("What")
    gpus.add_column("Exact", justify="right")
    gpus.add_column("GPUs", justify="right")
    gpus.add_column("Throughput per GPU")
    gpus.add_row(
        "STT " + result.stt.model,
        f"{s.stt_gpus_exact:.3f}",
        str(s.dedicated.stt_gpus),
        f"{result.stt.audio_s_per_gpu_s:g}x real time ({result.stt.basis})",
    )
    gpus.add_row(
        "LLM " + result.llm.model,
        f"{s.llm_gpus_exact:.3f}",
        str(s.dedicated.llm_gpus),
        f"{result.llm.prefill_tokens_per_s:g} prefill / "
        f"{result.llm.decode_tokens_per_s:g} decode tok/s ({result.llm.basis})",
    )
    gpus.add_row(
        "Dedicated total",
        "",
        str(s.dedicated.total_gpus) if s.dedicated.available else "-",
        _money(s.dedicated.monthly_usd) + "/month" if s.dedicated.available else s.dedicated.reason,
    )
    if s.packed.monthly_usd is not None:
        gpus.add_row(
            "Packed (0.5 + 0.5 per GPU)",
            f"{s.packed_gpus_exact:.3f}",
            str(s.packed.total_gpus),
            _money(s.packed.monthly_usd) + "/month",
        )
    else:
        gpus.add_row("Packed (0.5 + 0.5 per GPU)", "", "-", s.packed.reason)
    console.print(gpus)
    console.print(f"Layout: [bold]{s.chosen}[/bold]. {s.note}")
    target = f", target p95 {s.p95_target_s / 60:g} min" if s.p95_target_s else ""
    pools = Table(
        title=f"Pools at the peak hour (sizing: {s.method}{target})", title_justify="left"
    )
    for col in ("Pool", "Device", "GPUs/nodes", "Utilisation", "p50 wait", "p95 wait"):
        pools.add_column(col, justify="left" if col in ("Pool", "Device") else "right")
    for p in s.pools:
        pools.add_row(
            p.pool,
            p.device,
            str(p.gpus),
            f"{p.utilization:.0%}",
            "-" if p.wait_p50_s is None else f"{p.wait_p50_s:,.0f} s",
            "-" if p.wait_p95_s is None else f"{p.wait_p95_s:,.0f} s",
        )
    console.print(pools)
    if s.predicted_p95_s is not None:
        console.print(
            f"Predicted p95 upload-to-result at the peak hour: {s.predicted_p95_s / 60:.1f} min"
            + (
                f" (includes a {s.delay_allowance_s / 60:g} min scale-up allowance)"
                if s.delay_allowance_s
                else ""
            )
        )
    if s.combined_utilization is not None:
        console.print(
            f"Packed: STT + LLM keep the shared GPUs {s.combined_utilization:.0%} busy "
            f"(at most {inp.max_utilization:.0%})."
        )

    for label, breakdown in (("Self-hosted", result.self_hosted), ("Managed", result.managed)):
        t = Table(title=f"{label} monthly cost", title_justify="left")
        t.add_column("Item")
        t.add_column("Quantity", justify="right")
        t.add_column("Unit price", justify="right")
        t.add_column("Monthly", justify="right")
        for item in breakdown.line_items:
            t.add_row(
                item.name,
                f"{item.quantity:,.2f} {item.unit}",
                f"${item.unit_usd:,.6g}",
                _money(item.monthly_usd),
            )
        t.add_row(
            "[bold]Total[/bold]",
            "",
            f"{_money(breakdown.per_task_usd)}/task",
            f"[bold]{_money(breakdown.monthly_usd)}[/bold]",
        )
        console.print(t)

    cheaper = "self-hosting" if result.cheaper == "self_hosted" else "managed services"
    console.print(
        f"Self-hosted {_money(result.self_hosted.monthly_usd)} vs managed "
        f"{_money(result.managed.monthly_usd)}: {cheaper} cheaper by "
        f"{_money(abs(result.savings_monthly_usd))}/month ({abs(result.savings_pct):.1f}%)."
    )
    console.print(f"Crossover (chosen baseline): {result.crossover.message}", soft_wrap=True)
    console.print(
        f"Crossover (cheapest like-for-like): {result.crossover_cheapest.message}",
        soft_wrap=True,
    )
    band = result.band

    def _vol(x: int | None) -> str:
        return "never" if x is None else f"{x:,}"

    console.print(
        "Sensitivity band (throughput x0.5-x1.5, peak factor, prices): self-hosting stays "
        f"cheaper than the chosen baseline from {_vol(band.crossover_low)} to "
        f"{_vol(band.crossover_high)} tasks/month, than the cheapest like-for-like option "
        f"from {_vol(band.cheapest_low)} to {_vol(band.cheapest_high)}; self-hosted "
        f"{_money(band.monthly_usd_low)} to {_money(band.monthly_usd_high)} at this volume.",
        soft_wrap=True,
    )
    chosen = _chosen_id(result)
    llm = f"Bedrock {result.bedrock_model}"
    groups = (
        (
            f"Managed baselines (like-for-like): speech API + {llm}",
            [b for b in result.baselines if b.comparable],
        ),
        (
            f"If you can wait (not like-for-like): speech API + {llm} batch, up to 24 h",
            [b for b in result.baselines if not b.comparable],
        ),
    )
    for title, rows in groups:
        if not rows:
            continue
        bl = Table(title=title, title_justify="left")
        bl.add_column("Speech API", overflow="fold")
        bl.add_column("Monthly", justify="right")
        bl.add_column("Cheaper now", justify="right")
        bl.add_column("Stays cheaper from", justify="right")
        bl.add_column("Self-hosting cheaper in", overflow="fold")
        bl.add_column("Band", justify="right")
        for b in rows:
            co = b.crossover
            bl.add_row(
                b.name.split(" + ")[0]
                + (" (chosen)" if b.id == chosen else "")
                + (" (cheapest)" if b.id == result.cheapest_managed else ""),
                _money(b.monthly_usd),
                b.cheaper.replace("_", "-"),
                _vol(co.tasks_per_month) if co.tasks_per_month else co.status,
                ranges_text(co.ranges, 3) + (" (+ undecided)" if co.undecided else ""),
                f"{_vol(b.band_low)} to {_vol(b.band_high)}",
            )
        console.print(bl)
    console.print(f"[bold]{result.verdict}[/bold]", soft_wrap=True)
    adv = result.replica_advice
    parts = [f"{n} {r.min_replicas}-{r.max_replicas}" for n, r in adv.deployments.items()]
    parts += [f"{n} {r.min_replicas}-{r.max_replicas}" for n, r in adv.worker_groups.items()]
    console.print("Replicas: " + ", ".join(parts) + " (aipp plan ... --emit serve-overrides)")
    console.print("[bold]Sources[/bold]")
    for sid, src in result.sources.items():
        console.print(
            f"  {sid}: {src.title} (as of {src.as_of}){' ' + src.url if src.url else ''}",
            soft_wrap=True,
        )
    for note in result.notes:
        console.print(f"[dim]Note: {note}[/dim]", soft_wrap=True)


def ranges_text(ranges: Any, limit: int = 6) -> str:
    """``"72,775-80,011, 110,764+"``: volume ranges as an operator reads them."""
    parts = [
        f"{r.from_tasks:,}+"
        if r.to_tasks is None
        else (
            f"{r.from_tasks:,}"
            if r.from_tasks == r.to_tasks
            else f"{r.from_tasks:,}-{r.to_tasks:,}"
        )
        for r in ranges[:limit]
    ]
    more = f" (+{len(ranges) - limit} more)" if len(ranges) > limit else ""
    return (", ".join(parts) + more) or "none"


def _chosen_id(result: Any) -> str:
    mode = "batch" if result.inputs.bedrock_batch else "on-demand"
    return f"{result.inputs.managed_stt}+{mode}"
