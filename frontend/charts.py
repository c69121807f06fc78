"""Server-rendered SVG line charts (pure functions), in the spirit of TensorBoard's scalars.

    svg = line_chart_svg([Series("reward_mean", xs, ys)], title="reward", x_label="epoch",
                         smoothing=0.6)

With smoothing > 0 each series is drawn twice: the raw points faint, the smoothed curve solid
(TensorBoard's debiased exponential moving average, `ema_smooth`). Every point has a hover
title; the `<svg>` carries `data-points` (points drawn) for tests. No script, no external asset;
every text is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MAX_HOVER_POINTS = 400  # per series; beyond it only the line is drawn


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class Series:
    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    colour: str | None = None


def ema_smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing: the first point is not pulled
    towards zero. weight 0 returns the values; 0.99 is very smooth."""
    weight = min(max(weight, 0.0), 0.999)
    out: list[float] = []
    last = 0.0
    for i, value in enumerate(values):
        last = last * weight + (1 - weight) * value
        debias = 1 - weight ** (i + 1)
        out.append(last / debias if debias > 0 else value)
    return out


def nice_ticks(low: float, high: float, count: int = 5, *, integer: bool = False) -> list[float]:
    """About `count` round tick values (1, 2, 5 x 10^n steps) covering [low, high]; with
    `integer`, steps of at least 1 (epochs)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high < low:
        low, high = high, low
    if high == low:
        # One value: a small range around it, which never crosses zero when the value does
        # not (a single epoch-0 point gets 0..1, not -1..1).
        pad = abs(low) * 0.1 or 1.0
        low, high = (low - pad if low - pad >= 0 or low < 0 else 0.0), high + pad
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, float(round(step)))
    first = math.floor(low / step) * step
    ticks: list[float] = []
    value = first
    while value <= high + step * 0.5 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def format_tick(value: float, step: float) -> str:
    """Tick text with as many decimals as the tick spacing needs (0.996, 0.998, 1, 1.002)."""
    if step <= 0 or not math.isfinite(step):
        return format_number(value)
    magnitude = max(abs(value), step)
    if magnitude >= 1e4 or step < 1e-4:
        return format_number(value)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10**decimals % 1 > 1e-6 and step * 10**decimals % 1 < 1 - 1e-6:
        decimals += 1  # 2.5-type steps
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def format_number(value: float) -> str:
    """Compact tick text: 1.2k, 0.35, 1e-04."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1e4:
        return f"{value / 1e3:.3g}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 1e-2:
        return f"{value:.3g}"
    return f"{value:.1e}"


def _legend_layout(names: Sequence[str], room: int) -> list[tuple[int, str, int]]:
    """(x offset, label, row) of each legend entry, flowing left to right in rows."""
    out: list[tuple[int, str, int]] = []
    x, row = 0, 0
    for name in names:
        label = name if len(name) <= 40 else name[:39] + "…"
        w = 26 + int(6.2 * len(label))
        if x and x + w > room:
            x, row = 0, row + 1
        out.append((x, label, row))
        x += w + 12
    return out


def line_chart_svg(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str = "",
    smoothing: float = 0.0,
    width: int = 520,
    height: int = 260,
    empty_message: str = "no points yet",
    chart_id: str = "",
    integer_x: bool = False,
    legend: bool | None = None,
    x_from_zero: bool = False,
) -> str:
    """One chart with one line per series (up to 10 colours, then they repeat); `integer_x`
    keeps x ticks on whole numbers (epochs); `legend` None shows one when there are several
    series; `x_from_zero` starts the x axis at 0 (training time, images seen)."""
    left, right, top, bottom = 58, 14, 30, 42
    drawn = [(s, [(float(x), float(y)) for x, y in zip(s.xs, s.ys, strict=False)]) for s in series]
    drawn = [
        (s, [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]) for s, pts in drawn
    ]
    drawn = [(s, sorted(pts)) for s, pts in drawn if pts]
    total = sum(len(pts) for _, pts in drawn)
    show_legend = len(drawn) > 1 if legend is None else legend and bool(drawn)
    legend_items = (
        _legend_layout([s.name for s, _ in drawn], width - left - right) if show_legend else []
    )
    legend_rows = max((row for _, _, row in legend_items), default=-1) + 1
    height += 16 * legend_rows
    bottom += 16 * legend_rows
    plot_w, plot_h = width - left - right, height - top - bottom
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" data-points="{total}" data-series="{len(drawn)}"'
        + (f' data-chart="{_esc(chart_id)}"' if chart_id else "")
        + f' role="img" aria-label="{_esc(title)}" '
        'font-family="ui-sans-serif, system-ui, sans-serif" font-size="11">'
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="#202124">'
        f"{_esc(title)}</text>"
    )
    if not drawn:
        return (
            head + f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
            'stroke="#e0e0e0"/>'
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            f'fill="#80868b">{_esc(empty_message)}</text></svg>'
        )
    smoothed = {
        id(s): ema_smooth([y for _, y in pts], smoothing) if smoothing > 0 else None
        for s, pts in drawn
    }
    xs = [x for _, pts in drawn for x, _ in pts]
    ys = [y for _, pts in drawn for _, y in pts]
    x_low = min(0.0, min(xs)) if x_from_zero else min(xs)
    x_ticks = nice_ticks(x_low, max(xs), 5, integer=integer_x)
    y_ticks = nice_ticks(min(ys), max(ys), 4)
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    out = [head]
    out.append(
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#ffffff" '
        'stroke="#dadce0"/>'
    )
    y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else 0.0
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 0.0
    for t in y_ticks:
        if y0 <= t <= y1:
            y = py(t)
            out.append(
                f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                'stroke="#f1f3f4"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5f6368">'
                f"{_esc(format_tick(t, y_step))}</text>"
            )
    for t in x_ticks:
        if x0 <= t <= x1:
            x = px(t)
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" '
                'stroke="#f1f3f4"/>'
                f'<text x="{x:.1f}" y="{top + plot_h + 15}" text-anchor="middle" fill="#5f6368">'
                f"{_esc(format_tick(t, x_step))}</text>"
            )
    out.append(
        f'<text x="{left + plot_w / 2}" y="{top + plot_h + 32}" text-anchor="middle" '
        f'fill="#3c4043">'
        f"{_esc(x_label)}</text>"
    )
    if y_label:
        out.append(
            f'<text transform="translate(13 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" '
            f'fill="#3c4043">{_esc(y_label)}</text>'
        )
    for i, (s, pts) in enumerate(drawn):
        colour = s.colour or PALETTE[i % len(PALETTE)]
        smooth = smoothed[id(s)]
        raw_path = " ".join(
            f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for j, (x, y) in enumerate(pts)
        )
        out.append(f'<g class="series" data-name="{_esc(s.name)}" data-n="{len(pts)}">')
        out.append(f"<title>{_esc(s.name)}</title>")
        if smooth is not None:
            out.append(
                f'<path d="{raw_path}" fill="none" stroke="{colour}" stroke-opacity="0.28" '
                'stroke-width="1.2"/>'
            )
            smooth_path = " ".join(
                f"{'M' if j == 0 else 'L'}{px(x):.1f},{py(y):.1f}"
                for j, ((x, _), y) in enumerate(zip(pts, smooth, strict=True))
            )
            out.append(
                f'<path class="smoothed" d="{smooth_path}" fill="none" stroke="{colour}" '
                'stroke-width="2"/>'
            )
        else:
            out.append(f'<path d="{raw_path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        if len(pts) <= MAX_HOVER_POINTS:
            radius = 2.6 if len(pts) <= 60 else 1.6
            for j, (x, y) in enumerate(pts):
                tip = f"{s.name} · {x_label} {format_number(x)}: {y:.4g}"
                if smooth is not None:
                    tip += f" (smoothed {smooth[j]:.4g})"
                out.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="{radius}" fill="{colour}">'
                    f"<title>{_esc(tip)}</title></circle>"
                )
        out.append("</g>")
    for i, (x, label, row) in enumerate(legend_items):
        colour = drawn[i][0].colour or PALETTE[i % len(PALETTE)]
        ly = top + plot_h + 52 + 16 * row
        out.append(
            f'<g class="legend-item"><rect x="{left + x}" y="{ly - 6}" width="14" height="4" '
            f'fill="{colour}"/><text x="{left + x + 18}" y="{ly}" fill="#3c4043">'
            f"{_esc(label)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)
