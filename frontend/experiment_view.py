"""What the Experiments tab draws from GET /experiments/{id} (pure functions, no Gradio).

- `grid_table_html`: one row per group: runs and their states, final held-out reward, seconds
  per iteration on the CPU clock and on wall-clock, and CPU seconds to each target level, each
  as the median over seeds with the [min-max] range.
- `bands_svg`: reward against a clock (CPU seconds, wall-clock or images seen), one line per
  group (the median over seeds) inside its min-max band, with the target levels dashed.
- `pareto_svg`: final reward against CPU seconds per iteration, the front joined (the
  paper's Figure 1 shape).
- `ratios_table_html`: paired time-to-target ratios with their bootstrap intervals.
- `csv_text` and `png_bytes`: the exports.
Every text from the API is escaped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from frontend.charts import PALETTE, format_number, nice_ticks
from frontend.render import esc

CLOCK_LABELS = {
    "cpu_clock": "CPU seconds of training (the run's own clock)",
    "wall_clock": "wall-clock seconds of training",
    "images_seen": "images seen",
}
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 340, 64, 190, 30, 44


def _range(summary: dict[str, Any] | None, digits: int = 3, unit: str = "") -> str:
    """'median [low-high]' of a statistics summary; a target never reached shows as '>end'."""
    if not summary or not summary.get("n"):
        return "-"
    if summary.get("median") is None:  # reached by fewer than half the seeds
        reached, low = summary.get("reached") or 0, summary.get("low")
        if not reached or low is None:
            return f"not reached (0/{summary['n']})"
        return (
            f"median not reached ({reached}/{summary['n']} reached, fastest {low:.{digits}f}{unit})"
        )
    text = f"{summary['median']:.{digits}f}{unit}"
    if summary["n"] > 1 and summary.get("low") is not None:
        high = "never" if summary.get("high") is None else f"{summary['high']:.{digits}f}"
        text += f" [{summary['low']:.{digits}f}-{high}]"
    reached, n = summary.get("reached"), summary["n"]
    if reached is not None and reached < n:
        text += f" ({reached}/{n} reached)"
    return text


def _states(runs: Sequence[dict[str, Any]], group: str) -> str:
    counts: dict[str, int] = {}
    for run in runs:
        if run.get("group") == group:
            counts[run["status"]] = counts.get(run["status"], 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def grid_table_html(experiment: dict[str, Any]) -> str:
    stats = experiment.get("statistics") or {}
    groups = stats.get("groups") or []
    if not groups:
        return '<div class="tg-empty" id="tg-exp-grid">No runs yet.</div>'
    levels = list((stats.get("targets") or {}).keys())
    head = "".join(
        f"<th>CPU s to {float(level) * 100:.0f}% ({stats['targets'][level]:.3f})</th>"
        for level in levels
    )
    rows = []
    for group in groups:
        cells = "".join(
            f"<td>{esc(_range(group['time_to_target'].get(level, {}).get('cpu_clock'), 1))}</td>"
            for level in levels
        )
        rows.append(
            f'<tr data-group="{esc(group["group"])}"><th>{esc(group["group"])}</th>'
            f"<td>{esc(_states(experiment.get('runs', []), group['group']))}</td>"
            f"<td>{esc(_range(group['final_reward']))}</td>"
            f"<td>{esc(_range(group['cpu_seconds_per_iteration'], 2))}</td>"
            f"<td>{esc(_range(group['seconds_per_iteration'], 2))}</td>{cells}</tr>"
        )
    base = stats.get("base_reward")
    note = (
        f"Shared held-out yardstick: {experiment['evaluation'].get('count')} images, noise seed "
        f"{experiment['evaluation'].get('noise_seed')}; base reward "
        f"{'-' if base is None else f'{base:.4f}'}. Medians over seeds with [min-max]; target "
        "levels are shares of the gain from the base to the best group's median final reward."
    )
    return (
        f'<div id="tg-exp-grid"><div class="tg-muted">{esc(note)}</div>'
        '<table class="tg-table"><thead><tr><th>group</th><th>runs</th>'
        "<th>final held-out reward</th><th>CPU s/iter</th><th>wall s/iter</th>"
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def ratios_table_html(stats: dict[str, Any], clock: str = "cpu_clock") -> str:
    ratios = [r for r in stats.get("ratios") or [] if r["clock"] == clock]
    if not ratios:
        return '<div class="tg-empty" id="tg-exp-ratios">No paired ratios yet.</div>'
    rows = []
    for r in ratios:
        if r["ratio"] is None:
            value = "neither reached it"
        else:
            value = f"{r['ratio']:.2f}x [{r['low']:.2f}-{r['high']:.2f}]"
        seeds = ", ".join(f"{s}: {v:.2f}" for s, v in r["per_seed"].items())
        rows.append(
            f"<tr><td>{esc(r['group'])}</td><td>{float(r['level']) * 100:.0f}%</td>"
            f"<td class='tg-ratio'>{esc(value)}</td><td>{esc(seeds)}</td>"
            f"<td>{r['censored']}</td></tr>"
        )
    reference = esc(ratios[0]["reference"])
    return (
        f'<div id="tg-exp-ratios"><div class="tg-muted">How many times sooner {reference} '
        "reaches each target than each group, seed by seed (same seed, same yardstick), on "
        f"{esc(CLOCK_LABELS.get(clock, clock))}: geometric mean with a 95% bootstrap interval "
        "over seeds; a run that never reached the target counts at its budget (a bound).</div>"
        '<table class="tg-table"><thead><tr><th>against</th><th>target</th><th>ratio</th>'
        "<th>per seed</th><th>bounded</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _axes(
    xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str
) -> tuple[list[str], Any, Any]:
    """Frame, ticks and labels; returns (svg parts, px, py)."""
    x_ticks = nice_ticks(min(xs), max(xs))
    y_ticks = nice_ticks(min(ys), max(ys))
    x0, x1 = min(x_ticks[0], min(xs)), max(x_ticks[-1], max(xs))
    y0, y1 = min(y_ticks[0], min(ys)), max(y_ticks[-1], max(ys))
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1

    def px(x: float) -> float:
        return LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT)

    def py(y: float) -> float:
        return TOP + (1 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM)

    parts = [
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" '
        'fill="none" stroke="#dadce0"/>'
    ]
    for t in x_ticks:
        parts.append(
            f'<text x="{px(t):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" fill="#5f6368">'
            f"{format_number(t)}</text>"
        )
    for t in y_ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{py(t):.1f}" y2="{py(t):.1f}" '
            'stroke="#f1f3f4"/>'
            f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end" fill="#5f6368">'
            f"{format_number(t)}</text>"
        )
    parts.append(
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle" '
        f'fill="#3c4043">{esc(x_label)}</text>'
        f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" fill="#3c4043" '
        f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{esc(y_label)}</text>'
    )
    return parts, px, py


def _svg(chart_id: str, title: str, parts: list[str], extra: str = "") -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="{chart_id}" class="chart" width="{W}" '
        f'height="{H}" viewBox="0 0 {W} {H}" font-family="ui-sans-serif, system-ui, sans-serif" '
        f'font-size="11" role="img" aria-label="{esc(title)}"{extra}>'
        f'<text x="{LEFT}" y="18" font-size="13" font-weight="600" fill="#202124">'
        f"{esc(title)}</text>{''.join(parts)}</svg>"
    )


def bands_svg(stats: dict[str, Any], clock: str = "cpu_clock") -> str:
    groups = stats.get("groups") or []
    curves = [(g["group"], g["curves"][clock]) for g in groups if clock in g.get("curves", {})]
    xs = [x for _, c in curves for x, m in zip(c["x"], c["median"], strict=True) if m is not None]
    ys = [v for _, c in curves for key in ("low", "high") for v in c[key] if v is not None]
    if len(xs) < 2 or not ys:
        return '<div class="tg-empty" id="tg-exp-bands">No held-out points yet.</div>'
    targets = stats.get("targets") or {}
    ys = ys + list(targets.values())
    parts, px, py = _axes(xs, ys, CLOCK_LABELS.get(clock, clock), "held-out reward")
    for level, value in targets.items():
        parts.append(
            f'<line class="target" x1="{LEFT}" x2="{W - RIGHT}" y1="{py(value):.1f}" '
            f'y2="{py(value):.1f}" stroke="#9aa0a6" stroke-dasharray="4 3"/>'
            f'<text x="{W - RIGHT + 4}" y="{py(value) + 4:.1f}" fill="#9aa0a6">'
            f"{float(level) * 100:.0f}%</text>"
        )
    for i, (name, c) in enumerate(curves):
        colour = PALETTE[i % len(PALETTE)]
        points = [
            (x, lo, hi, m)
            for x, lo, hi, m in zip(c["x"], c["low"], c["high"], c["median"], strict=True)
            if m is not None and lo is not None and hi is not None
        ]
        if not points:
            continue
        upper = " ".join(f"{px(x):.1f},{py(hi):.1f}" for x, _, hi, _ in points)
        lower = " ".join(f"{px(x):.1f},{py(lo):.1f}" for x, lo, _, _ in reversed(points))
        line = " ".join(f"{px(x):.1f},{py(m):.1f}" for x, _, _, m in points)
        parts.append(
            f'<polygon class="band" data-group="{esc(name)}" points="{upper} {lower}" '
            f'fill="{colour}" fill-opacity="0.18" stroke="none"/>'
            f'<polyline class="median" data-group="{esc(name)}" points="{line}" fill="none" '
            f'stroke="{colour}" stroke-width="2"><title>{esc(name)}</title></polyline>'
        )
        ly = TOP + 14 + i * 16
        parts.append(
            f'<rect x="{W - RIGHT + 40}" y="{ly - 9}" width="12" height="10" fill="{colour}"/>'
            f'<text x="{W - RIGHT + 56}" y="{ly}" fill="#3c4043">{esc(name[:22])}</text>'
        )
    title = "Held-out reward: median over seeds, min-max band"
    return _svg("tg-exp-bands", title, parts, f' data-groups="{len(curves)}"')


def pareto_svg(stats: dict[str, Any]) -> str:
    points = stats.get("pareto_points") or {}
    if not points:
        return '<div class="tg-empty" id="tg-exp-pareto">No finished runs yet.</div>'
    front = stats.get("pareto") or []
    xs = [p["cpu_seconds_per_iteration"] for p in points.values()]
    ys = [p["final_reward"] for p in points.values()]
    parts, px, py = _axes([*xs, 0.0], ys, "CPU seconds per iteration", "final held-out reward")
    line = " ".join(
        f"{px(points[g]['cpu_seconds_per_iteration']):.1f},{py(points[g]['final_reward']):.1f}"
        for g in front
    )
    parts.append(f'<polyline points="{line}" fill="none" stroke="#5f6368" stroke-dasharray="5 3"/>')
    for i, (name, p) in enumerate(points.items()):
        x, y = px(p["cpu_seconds_per_iteration"]), py(p["final_reward"])
        on = name in front
        parts.append(
            f'<circle class="point" data-group="{esc(name)}" data-front="{int(on)}" '
            f'cx="{x:.1f}" cy="{y:.1f}" r="{6 if on else 4}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{esc(name)}</title></circle>'
            f'<text x="{x + 8:.1f}" y="{y - 6:.1f}" fill="#3c4043">{esc(name[:26])}</text>'
        )
    title = "Final reward against seconds per iteration (dashed: the Pareto front)"
    return _svg("tg-exp-pareto", title, parts, f' data-front-size="{len(front)}"')


def csv_text(experiment: dict[str, Any]) -> str:
    """One row per group (the grid table's figures) and one per paired ratio."""
    stats = experiment.get("statistics") or {}
    out = io.StringIO()
    writer = csv.writer(out)
    levels = list((stats.get("targets") or {}).keys())

    def cell(summary: dict[str, Any] | None, key: str) -> str:
        value = (summary or {}).get(key)
        return "" if value is None else repr(value)

    writer.writerow(
        [
            "group",
            "seeds",
            "final_reward_median",
            "final_reward_low",
            "final_reward_high",
            "cpu_s_per_iter_median",
            "wall_s_per_iter_median",
            *[f"cpu_s_to_{float(level) * 100:.0f}pct_median" for level in levels],
        ]
    )
    for group in stats.get("groups") or []:
        writer.writerow(
            [
                group["group"],
                len(group["runs"]),
                cell(group["final_reward"], "median"),
                cell(group["final_reward"], "low"),
                cell(group["final_reward"], "high"),
                cell(group["cpu_seconds_per_iteration"], "median"),
                cell(group["seconds_per_iteration"], "median"),
                *[
                    cell(group["time_to_target"].get(level, {}).get("cpu_clock"), "median")
                    for level in levels
                ],
            ]
        )
    writer.writerow([])
    writer.writerow(["reference", "group", "clock", "level", "ratio", "low", "high", "censored"])
    for r in stats.get("ratios") or []:
        writer.writerow(
            [
                r["reference"],
                r["group"],
                r["clock"],
                r["level"],
                "" if r["ratio"] is None else repr(r["ratio"]),
                "" if r["low"] is None else repr(r["low"]),
                "" if r["high"] is None else repr(r["high"]),
                r["censored"],
            ]
        )
    return out.getvalue()


def _hex(colour: str) -> tuple[int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))


def png_bytes(stats: dict[str, Any], clock: str = "cpu_clock") -> bytes:
    """The bands chart as a PNG (Pillow): median lines inside their min-max bands."""
    from PIL import Image, ImageDraw

    width, height, margin = 900, 420, 60
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image, "RGBA")
    groups = stats.get("groups") or []
    curves = [(g["group"], g["curves"][clock]) for g in groups if clock in g.get("curves", {})]
    xs = [x for _, c in curves for x, m in zip(c["x"], c["median"], strict=True) if m is not None]
    ys = [v for _, c in curves for k in ("low", "high") for v in c[k] if v is not None]
    draw.text((margin, 15), f"held-out reward vs {CLOCK_LABELS.get(clock, clock)}", fill="black")
    if len(xs) < 2 or not ys:
        draw.text((margin, height // 2), "no held-out points yet", fill="gray")
    else:
        x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

        def at(x: float, y: float) -> tuple[float, float]:
            return (
                margin + (x - x0) / (x1 - x0) * (width - 2 * margin - 160),
                height - margin - (y - y0) / (y1 - y0) * (height - 2 * margin),
            )

        draw.rectangle([at(x0, y1), at(x1, y0)], outline=(200, 200, 200))
        for label, value in ((f"{y0:.3f}", y0), (f"{y1:.3f}", y1)):
            draw.text((5, at(x0, value)[1] - 6), label, fill="black")
        draw.text((at(x1, y0)[0] - 40, height - margin + 8), f"{x1:.0f}", fill="black")
        for i, (name, c) in enumerate(curves):
            rgb = _hex(PALETTE[i % len(PALETTE)])
            pts = [
                (x, lo, hi, m)
                for x, lo, hi, m in zip(c["x"], c["low"], c["high"], c["median"], strict=True)
                if m is not None and lo is not None and hi is not None
            ]
            if len(pts) < 2:
                continue
            band = [at(x, hi) for x, _, hi, _ in pts] + [at(x, lo) for x, lo, _, _ in reversed(pts)]
            draw.polygon(band, fill=(*rgb, 50))
            draw.line([at(x, m) for x, _, _, m in pts], fill=rgb, width=3)
            draw.rectangle([width - 200, 40 + 18 * i, width - 188, 50 + 18 * i], fill=rgb)
            draw.text((width - 182, 38 + 18 * i), name[:26], fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
