"""The cost-vs-volume chart as SVG or PNG, drawn with matplotlib's Agg canvas.

No pyplot: a bare :class:`~matplotlib.figure.Figure` on an Agg canvas touches no global
backend state, so it is safe in a server process and in tests.
"""

from __future__ import annotations

from pathlib import Path

from app.planner.schemas import PlanResult

FORMATS = {".svg": "svg", ".png": "png"}


class ChartError(Exception):
    pass


def chart_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ChartError(f"chart file must end in .svg or .png, not '{suffix or path}'")
    return FORMATS[suffix]


def render_chart(result: PlanResult, path: str | Path) -> Path:
    fmt = chart_format(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    out = Path(path)
    if out.parent and not out.parent.exists():
        raise ChartError(f"directory does not exist: {out.parent}")

    curve = result.curve
    fig = Figure(figsize=(8, 4.8), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    band = result.band
    pts = [
        (x, lo, hi)
        for x, lo, hi in zip(
            curve.tasks_per_month, band.self_hosted_low_usd, band.self_hosted_high_usd, strict=True
        )
        if lo is not None and hi is not None
    ]
    if pts:
        ax.fill_between(
            [p[0] for p in pts],
            [p[1] for p in pts],
            [p[2] for p in pts],
            color="#1f6feb",
            alpha=0.15,
            linewidth=0,
            label="self-hosted sensitivity band (throughput x0.5-x1.5, peak, prices)",
        )
    top = curve.tasks_per_month[-1] if curve.tasks_per_month else 1
    for i, rg in enumerate(result.crossover_cheapest.ranges):
        if rg.from_tasks > top:
            break
        ax.axvspan(
            rg.from_tasks,
            min(top, rg.to_tasks if rg.to_tasks is not None else top),
            color="#2da44e",
            alpha=0.12,
            linewidth=0,
            label="self-hosting cheaper than every like-for-like option" if i == 0 else None,
        )
    if curve.cheapest_managed_usd:
        ax.plot(
            curve.tasks_per_month,
            curve.cheapest_managed_usd,
            color="#bf8700",
            linewidth=1.5,
            linestyle="-.",
            label="Cheapest like-for-like managed option",
        )
    ax.plot(
        curve.tasks_per_month,
        curve.self_hosted_usd,
        drawstyle="default",
        color="#1f6feb",
        linewidth=2,
        label=f"Self-hosted ({result.gpu.name}, {result.sizing.chosen})",
    )
    ax.plot(
        curve.tasks_per_month,
        curve.managed_usd,
        color="#d1242f",
        linewidth=2,
        label=f"Managed, chosen ({result.inputs.managed_stt} + Bedrock {result.bedrock_model})",
    )
    co = result.crossover
    if co.status == "found" and co.tasks_per_month is not None:
        ax.axvline(co.tasks_per_month, color="#444", linestyle="--", linewidth=1)
        ax.plot([co.tasks_per_month], [co.self_hosted_usd], "o", color="#444")
        ax.annotate(
            f"crossover\n{co.tasks_per_month:,} tasks/mo",
            (co.tasks_per_month, co.self_hosted_usd or 0),
            textcoords="offset points",
            xytext=(8, 12),
            fontsize=9,
        )
    v = result.inputs.tasks_per_month
    ax.axvline(v, color="#8250df", linestyle=":", linewidth=1)
    ax.annotate(
        "your volume",
        (v, 0),
        textcoords="offset points",
        xytext=(4, 6),
        fontsize=8,
        color="#8250df",
    )
    ax.set_xlabel("tasks per month")
    ax.set_ylabel("USD per month")
    cc = result.crossover_cheapest
    if cc.status == "always_cheaper":
        headline = "self-hosting is cheapest from the first task"
    elif cc.tasks_per_month is not None:
        first = (
            f" (first at {cc.first_cheaper:,})"
            if cc.first_cheaper and cc.first_cheaper != cc.tasks_per_month
            else ""
        )
        headline = f"self-hosting stays cheapest from {cc.tasks_per_month:,} tasks/month{first}"
    elif cc.ranges:
        headline = f"self-hosting cheapest only in {len(cc.ranges)} window(s)"
    else:
        headline = "the cheapest like-for-like managed option stays cheaper"
    chosen = (
        f"crossover vs chosen {co.tasks_per_month:,}"
        if co.tasks_per_month is not None
        else "no lasting crossover vs chosen"
    )

    def vol(x: int | None) -> str:
        return "never" if x is None else f"{x:,}"

    ax.set_title(
        f"Monthly cost vs volume ({result.inputs.avg_minutes:g} min/task): {headline}\n"
        f"{chosen}; sensitivity band: stays cheapest from {vol(band.cheapest_low)} to "
        f"{vol(band.cheapest_high)} tasks/month",
        fontsize=9,
    )
    money = FuncFormatter(lambda x, _: f"${x:,.0f}")
    ax.yaxis.set_major_formatter(money)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(out, format=fmt)
    except OSError as exc:
        raise ChartError(f"cannot write chart {out}: {exc}") from None
    return out
