"""Line charts as PNG with Pillow only (the project does not depend on matplotlib).

A chart is one or more panels side by side; each panel has axes with "nice" ticks, labels, a
legend and any number of series (polylines, optionally dashed) and horizontal reference lines.
Drawn at 2x and downsampled, so lines come out anti-aliased.

    panel = Panel("reward vs wall-clock", "seconds", "reward")
    panel.series.append(Series("TreeGRPO", xs, ys, color=PALETTE[0], width=3))
    panel.hlines.append(HLine(0.9, "target", color=(90, 90, 90)))
    save_chart([panel], Path("out.png"), title="efficiency")
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

Color = tuple[int, int, int]

# Colour-blind-friendly (Okabe-Ito), in the order methods are listed.
PALETTE: tuple[Color, ...] = (
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (0, 158, 115),  # green
    (204, 121, 167),  # purple
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (120, 120, 120),  # grey
    (240, 228, 66),  # yellow
)

SCALE = 2  # supersampling factor


@dataclass
class Series:
    label: str | None  # None: not in the legend (e.g. per-seed thin lines)
    xs: Sequence[float]
    ys: Sequence[float]
    color: Color
    width: int = 2
    dashed: bool = False
    alpha: float = 1.0  # < 1 blends the colour towards white


@dataclass
class HLine:
    y: float
    label: str
    color: Color = (90, 90, 90)


@dataclass
class Panel:
    title: str
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    hlines: list[HLine] = field(default_factory=list)
    legend_corner: str = "lower right"  # or "upper left", "upper right", "lower left"


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0) * 0.1
    raw = (hi - lo) / max(1, count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < hi:
        ticks.append(round(value, 10))
    return ticks


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _blend(color: Color, alpha: float) -> Color:
    r, g, b = color
    return (
        round(255 - (255 - r) * alpha),
        round(255 - (255 - g) * alpha),
        round(255 - (255 - b) * alpha),
    )


def _dashed(
    draw: ImageDraw.ImageDraw,
    points: Sequence[tuple[float, float]],
    color: Color,
    width: int,
    dash: float,
) -> None:
    """A polyline drawn as dashes of `dash` pixels (on, off, on, ...)."""
    on, remaining = True, dash
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        length = math.hypot(x1 - x0, y1 - y0)
        pos = 0.0
        while pos < length:
            step = min(remaining, length - pos)
            if on:
                a, b = pos / length, (pos + step) / length
                draw.line(
                    [
                        (x0 + (x1 - x0) * a, y0 + (y1 - y0) * a),
                        (x0 + (x1 - x0) * b, y0 + (y1 - y0) * b),
                    ],
                    fill=color,
                    width=width,
                )
            pos += step
            remaining -= step
            if remaining <= 1e-9:
                on, remaining = not on, dash


def _draw_panel(
    image: Image.Image, box: tuple[int, int, int, int], panel: Panel, font_size: int
) -> None:
    s = SCALE
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size * s)
    small = ImageFont.load_default(size=(font_size - 2) * s)
    left, top, right, bottom = box
    # Plot area inside the panel box: room for the title, tick labels and axis labels.
    px0, py0 = left + 78 * s, top + 34 * s
    px1, py1 = right - 14 * s, bottom - 52 * s

    xs = [x for se in panel.series for x in se.xs]
    ys = [y for se in panel.series for y in se.ys] + [h.y for h in panel.hlines]
    if not xs:
        xs = [0.0, 1.0]
    if not ys:
        ys = [0.0, 1.0]
    x_ticks = nice_ticks(min(0.0, min(xs)), max(xs))
    y_pad = 0.05 * ((max(ys) - min(ys)) or 1.0)
    y_ticks = nice_ticks(min(ys) - y_pad, max(ys) + y_pad)
    x_lo, x_hi, y_lo, y_hi = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0),
            py1 - (y - y_lo) / (y_hi - y_lo) * (py1 - py0),
        )

    draw.text(
        ((left + right) / 2, top + 6 * s), panel.title, fill=(0, 0, 0), font=font, anchor="ma"
    )
    grid, axis = (232, 232, 232), (60, 60, 60)
    for t in x_ticks:
        x, _ = to_px(t, y_lo)
        draw.line([(x, py0), (x, py1)], fill=grid, width=s)
        draw.line([(x, py1), (x, py1 + 5 * s)], fill=axis, width=s)
        draw.text((x, py1 + 8 * s), _tick_label(t), fill=axis, font=small, anchor="ma")
    for t in y_ticks:
        _, y = to_px(x_lo, t)
        draw.line([(px0, y), (px1, y)], fill=grid, width=s)
        draw.line([(px0 - 5 * s, y), (px0, y)], fill=axis, width=s)
        draw.text((px0 - 8 * s, y), _tick_label(t), fill=axis, font=small, anchor="rm")
    draw.rectangle([px0, py0, px1, py1], outline=axis, width=s)
    draw.text(
        ((px0 + px1) / 2, bottom - 8 * s), panel.x_label, fill=(0, 0, 0), font=font, anchor="md"
    )
    label = Image.new(
        "RGB", (int(font.getlength(panel.y_label)) + 4 * s, (font_size + 6) * s), "white"
    )
    ImageDraw.Draw(label).text((2 * s, 0), panel.y_label, fill=(0, 0, 0), font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (left + 6 * s, int((py0 + py1) / 2 - label.height / 2)))

    plot = Image.new("RGB", image.size, "white")  # series are clipped to the plot area
    plot_draw = ImageDraw.Draw(plot)
    for h in panel.hlines:
        _dashed(plot_draw, [to_px(x_lo, h.y), to_px(x_hi, h.y)], h.color, 2 * s, 8 * s)
    for se in panel.series:
        points = [to_px(x, y) for x, y in zip(se.xs, se.ys, strict=True)]
        color = _blend(se.color, se.alpha)
        if len(points) == 1:
            x, y = points[0]
            r = 2 * se.width * s
            plot_draw.ellipse([x - r, y - r, x + r, y + r], fill=color)
        elif se.dashed:
            _dashed(plot_draw, points, color, se.width * s, 10 * s)
        elif points:
            plot_draw.line(points, fill=color, width=se.width * s, joint="curve")
    crop = (int(px0) + s, int(py0) + s, int(px1) - s, int(py1) - s)
    image.paste(plot.crop(crop), crop[:2])

    # Legend inside the plot, in the chosen corner: labelled series, then reference lines.
    entries: list[tuple[str, Color, bool]] = [
        (se.label, _blend(se.color, se.alpha), se.dashed) for se in panel.series if se.label
    ]
    entries += [(h.label, h.color, True) for h in panel.hlines]
    if entries:
        row = (font_size + 6) * s
        width = max(int(small.getlength(text)) for text, _, _ in entries) + 44 * s
        box_height = row * len(entries) + 6 * s
        lx = px0 + 10 * s if "left" in panel.legend_corner else px1 - 10 * s - width
        ly = py0 + 10 * s if "upper" in panel.legend_corner else py1 - 10 * s - box_height
        draw.rectangle(
            [lx, ly, lx + width, ly + box_height],
            fill=(255, 255, 255),
            outline=(180, 180, 180),
            width=s,
        )
        for i, (text, color, dashed) in enumerate(entries):
            y = ly + 3 * s + row * i + row / 2
            segment = [(lx + 6 * s, y), (lx + 30 * s, y)]
            if dashed:
                _dashed(draw, segment, color, 3 * s, 5 * s)
            else:
                draw.line(segment, fill=color, width=3 * s)
            draw.text((lx + 36 * s, y), text, fill=(0, 0, 0), font=small, anchor="lm")


def save_chart(
    panels: Sequence[Panel],
    path: Path,
    title: str = "",
    footnote: str = "",
    panel_size: tuple[int, int] = (640, 460),
    font_size: int = 14,
) -> Path:
    """Draw `panels` left to right into one PNG at `path` (parent folders are created)."""
    s = SCALE
    width, height = panel_size
    head = 36 if title else 8
    foot = 26 if footnote else 0
    image = Image.new("RGB", (width * len(panels) * s, (height + head + foot) * s), "white")
    draw = ImageDraw.Draw(image)
    if title:
        font = ImageFont.load_default(size=(font_size + 2) * s)
        draw.text((image.width / 2, 10 * s), title, fill=(0, 0, 0), font=font, anchor="ma")
    for i, panel in enumerate(panels):
        box = (i * width * s, head * s, (i + 1) * width * s, (head + height) * s)
        _draw_panel(image, box, panel, font_size)
    if footnote:
        font = ImageFont.load_default(size=(font_size - 3) * s)
        draw.text(
            (10 * s, image.height - 6 * s), footnote, fill=(80, 80, 80), font=font, anchor="ld"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.resize((image.width // s, image.height // s), Image.Resampling.LANCZOS).save(path)
    return path
