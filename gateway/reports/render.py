"""AGP pictures: a PNG (percentile plot over the daily traces) and a one-page PDF report.

Figures are built with matplotlib's object API and rendered by the Agg and PDF canvases
directly, never through pyplot, so concurrent requests share no global figure state.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import FigureCanvasPdf
from matplotlib.figure import Figure

from gateway.reports.agp import AgpReport

__all__ = ["render_pdf", "render_png"]

TARGET_LOW_MG_DL = 70
TARGET_HIGH_MG_DL = 180
Y_MAX_MG_DL = 350
BAND = "#2e8b57"
LINE = "#1f4e9c"


def _hours(minutes: list[int]) -> list[float]:
    return [m / 60.0 for m in minutes]


def _percentile_axes(ax: Axes, report: AgpReport) -> None:
    bins = [b for b in report.percentiles if b.p50 is not None]
    ax.axhspan(TARGET_LOW_MG_DL, TARGET_HIGH_MG_DL, color=BAND, alpha=0.12, lw=0)
    for level in (54, 70, 180, 250):
        ax.axhline(level, color="grey", lw=0.6, ls=":")
    if bins:
        # Gaps (bins without enough readings) stay gaps: split the series where they occur.
        runs: list[list[Any]] = [[]]
        last = None
        for b in bins:
            if last is not None and b.minute_of_day - last.minute_of_day > 15:
                runs.append([])
            runs[-1].append(b)
            last = b
        for i, run in enumerate(runs):
            h = [b.minute_of_day / 60.0 for b in run]
            first = i == 0
            ax.fill_between(
                h, [b.p5 for b in run], [b.p95 for b in run], color=LINE, alpha=0.15,
                lw=0, label="5–95 %" if first else None,
            )  # fmt: skip
            ax.fill_between(
                h, [b.p25 for b in run], [b.p75 for b in run], color=LINE, alpha=0.35,
                lw=0, label="25–75 %" if first else None,
            )  # fmt: skip
            ax.plot(h, [b.p50 for b in run], color=LINE, lw=2, label="median" if first else None)
        ax.legend(loc="upper right", fontsize=7, frameon=False)
    else:
        ax.text(12, 200, "no readings in this period", ha="center", va="center", color="grey")
    ax.set_xlim(0, 24)
    ax.set_ylim(40, Y_MAX_MG_DL)
    ax.set_xticks(range(0, 25, 3))
    ax.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_ylabel("glucose (mg/dL)", fontsize=8)
    ax.set_title("Ambulatory glucose profile (target 70–180 mg/dL)", fontsize=9, loc="left")


def _daily_axes(fig: Figure, spec: Any, report: AgpReport, cols: int) -> None:
    rows = -(-len(report.daily) // cols)
    grid = spec.subgridspec(rows, cols, wspace=0.06, hspace=0.45)
    for i, day in enumerate(report.daily):
        ax = fig.add_subplot(grid[i // cols, i % cols])
        ax.axhspan(TARGET_LOW_MG_DL, TARGET_HIGH_MG_DL, color=BAND, alpha=0.12, lw=0)
        if day.minutes:
            ax.plot(_hours(day.minutes), day.glucose_mg_dl, color=LINE, lw=0.8)
        ax.set_xlim(0, 24)
        ax.set_ylim(40, Y_MAX_MG_DL)
        ax.set_xticks([])
        ax.set_yticks([])
        tir = "no data" if day.tir_pct is None else f"TIR {day.tir_pct:.0f} %"
        ax.set_title(f"{day.date:%a %d %b} · {tir}", fontsize=6, pad=2)


def _metric_rows(report: AgpReport) -> list[tuple[str, str, str]]:
    m = report.metrics

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f} %"

    def mg(v: float | None) -> str:
        return "–" if v is None else f"{v:.0f} mg/dL"

    return [
        ("Time in range 70–180", pct(m.tir_pct), "goal > 70 %"),
        ("Time below 70", pct(m.tbr70_pct), "goal < 4 %"),
        ("Time below 54", pct(m.tbr54_pct), "goal < 1 %"),
        ("Time above 180", pct(m.tar180_pct), "goal < 25 %"),
        ("Time above 250", pct(m.tar250_pct), "goal < 5 %"),
        ("Mean glucose", mg(m.mean_mg_dl), ""),
        ("Standard deviation", mg(m.sd_mg_dl), ""),
        ("Coefficient of variation", pct(m.cv_pct), "goal ≤ 36 %"),
        ("GMI", pct(m.gmi_pct), ""),
        ("Time CGM active", pct(m.coverage_pct), "goal ≥ 70 %"),
    ]


def _period(report: AgpReport) -> str:
    return f"{report.start:%d %b %Y} – {report.end.astimezone(report.start.tzinfo):%d %b %Y}"


def render_png(report: AgpReport, dpi: int = 110) -> bytes:
    fig = Figure(figsize=(10, 6.4))
    outer = fig.add_gridspec(
        2, 1, height_ratios=[2.2, 1.2], hspace=0.22, left=0.07, right=0.98, top=0.9, bottom=0.03
    )
    ax = fig.add_subplot(outer[0])
    _percentile_axes(ax, report)
    _daily_axes(fig, outer[1], report, cols=7)
    fig.suptitle(
        f"{report.display_name} · {_period(report)} ({report.days} days, {report.timezone})",
        fontsize=10,
    )
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def render_pdf(report: AgpReport) -> bytes:
    """One A4 page: header, metrics table, percentile plot, daily overlays."""
    fig = Figure(figsize=(8.27, 11.69))
    outer = fig.add_gridspec(
        4,
        1,
        height_ratios=[0.5, 1.6, 2.3, 1.6],
        hspace=0.3,
        left=0.09,
        right=0.96,
        top=0.96,
        bottom=0.04,
    )
    head = fig.add_subplot(outer[0])
    head.axis("off")
    head.text(0, 0.95, "AGP report", fontsize=16, weight="bold", va="top")
    head.text(0, 0.45, report.display_name, fontsize=12, va="top")
    head.text(
        0,
        0.05,
        f"{_period(report)} · {report.days} days · {report.timezone}",
        fontsize=9,
        va="bottom",
        color="#444",
    )
    if not report.metrics.sufficient_data:
        head.text(
            1,
            0.05,
            "CGM active < 70 % of the period: interpret with care",
            fontsize=8,
            ha="right",
            va="bottom",
            color="#a33",
        )
    table_ax = fig.add_subplot(outer[1])
    table_ax.axis("off")
    table = table_ax.table(
        cellText=[list(r) for r in _metric_rows(report)],
        colLabels=["metric", "value", "consensus goal"],
        loc="upper left",
        cellLoc="left",
        colLoc="left",
        colWidths=[0.45, 0.2, 0.3],
        edges="horizontal",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1, 1.15)
    _percentile_axes(fig.add_subplot(outer[2]), report)
    _daily_axes(fig, outer[3], report, cols=7)
    buf = io.BytesIO()
    FigureCanvasPdf(fig)
    fig.savefig(
        buf,
        format="pdf",
        metadata={"Title": f"AGP report {report.display_name}", "Creator": "Langerhans"},
    )
    return buf.getvalue()
