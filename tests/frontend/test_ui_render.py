"""Every HTML/SVG renderer escapes user text; charts, curves and form logic on literal inputs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from ui_factories import job_json, tree_json

from frontend import curves, form, render
from frontend.charts import Series, ema_smooth, format_tick, line_chart_svg, nice_ticks
from frontend.client import ApiClient, Job, MetricPoint, Sample, Tree
from frontend.compare import compare_html
from frontend.run import reward_charts_html, training_charts_html
from frontend.tree_handlers import tree_choice_label
from frontend.tree_svg import layout_tree
from frontend.tree_view import tree_view_json

XSS = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def _xss_job(**kw: object) -> Job:
    return Job.from_json(
        job_json(name=XSS, error=f"boom {XSS}", preset=XSS, algorithm=XSS, worker=XSS, **kw)
    )


def _clean(markup: str) -> None:
    assert "<img src=x" not in markup and "<script" not in markup
    assert ESCAPED in markup


def test_jobs_table_and_header_escape() -> None:
    job = _xss_job()
    _clean(render.jobs_table([job], selected=job.id))
    _clean(render.job_header(job, checkpoint_href='/api/v1/jobs/1/checkpoint"><b>'))
    assert '"><b>' not in render.job_header(job, checkpoint_href='/x"><b>')
    _clean(render.notice(XSS, "error"))
    _clean(render.field_error(XSS))
    assert "<img" not in render.status_badge(XSS)


def test_header_offers_the_lora_export_beside_the_checkpoint() -> None:
    from frontend.context import UiContext
    from frontend.run import header_html

    ctx = UiContext(public_base="http://host:9000/")
    keyless = ApiClient("http://api.test")  # reads open: the API's own URLs
    config = {"algorithm": "treegrpo", "model": "digits", "train": {"lora_rank": 4}}
    lora = Job.from_json(job_json(id=7, config=config, checkpoint_path="jobs/7/checkpoints/e"))
    header = header_html(ctx, keyless, lora)
    assert 'href="http://host:9000/api/v1/jobs/7/checkpoint"' in header
    assert 'href="http://host:9000/api/v1/jobs/7/export?format=lora"' in header
    assert 'data-testid="export-link"' in header
    # With a key (reads may be closed) both go through the UI's origin; the key is in no URL.
    key = "k" * 24
    header = header_html(ctx, ApiClient("http://api.test", api_key=key), lora)
    assert header.count('href="files/') == 2 and key not in header and "/api/v1" not in header
    # A full fine-tune: no LoRA to download; the header names the CLI's pipeline export.
    full = Job.from_json(job_json(id=8, checkpoint_path="jobs/8/checkpoints/e"))
    header = header_html(ctx, keyless, full)
    assert "export-link" not in header and "treegrpo export 8 --format pipeline" in header
    # No checkpoint yet: neither download.
    assert "export" not in header_html(ctx, keyless, Job.from_json(job_json(id=9, config=config)))


def test_gallery_panel_caption_and_compare_table_escape() -> None:
    sample = Sample(1, 0, 0, XSS, 0.5, {XSS: 0.5, "b": 0.2}, "/api/v1/artifacts/a.png")
    _clean(render.gallery([sample], title=XSS))
    tree = Tree.from_json(tree_json(prompt=XSS))
    leaf = next(n for n in tree.nodes if n.is_leaf)
    _clean(render.tree_caption(tree))
    panel = render.node_panel(tree, leaf.id)
    assert "<img src=x" not in panel and 'data-field="reward"' in panel
    view = tree_view_json(tree, layout_tree(tree))
    _clean(view["caption"])
    # Dropdown labels are plain text that Gradio shows as text (never as HTML): not escaped here,
    # or the user would read "&lt;"; the browser tests check it shows as text.
    assert XSS in tree_choice_label(tree.summary)
    row = render.CompareRow(_xss_job(), 0.9, 0.95, 0.8, 12.0, 300.0, 2.0, 1.5)
    _clean(render.compare_table([row], metric=XSS))


def test_charts_escape_titles_and_series_names() -> None:
    svg = line_chart_svg(
        [Series(XSS, [0, 1], [0.1, 0.2]), Series("b", [0], [1])],
        title=XSS,
        x_label=XSS,
        y_label=XSS,
        chart_id=XSS,
    )
    _clean(svg)
    ET.fromstring(svg)
    empty = line_chart_svg([], title=XSS, x_label="x", empty_message=XSS)
    _clean(empty)
    assert ET.fromstring(empty).get("data-points") == "0"


def test_run_and_compare_views_escape_job_names() -> None:
    store = curves.MetricStore(job_id=1)
    store.add(
        [
            MetricPoint(0, "reward_mean", 0.5),
            MetricPoint(0, "wall_clock", 2.0),
            MetricPoint(0, "images_seen", 54),
            MetricPoint(0, "loss", 0.1),
        ]
    )
    assert "data-points" in reward_charts_html(store, 0.6)
    assert "data-points" in training_charts_html(store, 0.6)
    charts, table = compare_html([(_xss_job(), store)], "reward_mean", 0.0, None)
    _clean(charts)
    _clean(table)


def test_chart_points_and_smoothing() -> None:
    svg = line_chart_svg([Series("r", [0, 1, 2], [0.0, 1.0, 0.5])], title="t", x_label="epoch")
    root = ET.fromstring(svg)
    assert root.get("data-points") == "3"
    ns = "{http://www.w3.org/2000/svg}"
    assert len(list(root.iter(f"{ns}circle"))) == 3
    smooth = ET.fromstring(
        line_chart_svg([Series("r", [0, 1], [0, 1])], title="t", x_label="e", smoothing=0.5)
    )
    assert [p.get("class") for p in smooth.iter(f"{ns}path")].count("smoothed") == 1
    # Debiased EMA, weight 0.5: 0; (0.5*0 + 0.5*1)/(1-0.25) = 2/3.
    assert ema_smooth([0.0, 1.0], 0.5) == pytest.approx([0.0, 2 / 3])
    assert ema_smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    assert nice_ticks(0, 1, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(5, 5) and nice_ticks(float("nan"), 1) == []
    assert nice_ticks(1, 3, 5, integer=True) == [1.0, 2.0, 3.0]
    # Ticks keep the decimals their spacing needs (never two ticks reading "1").
    assert [format_tick(v, 0.002) for v in (0.996, 0.998, 1.0, 1.002)] == [
        "0.996",
        "0.998",
        "1.000",
        "1.002",
    ]
    assert format_tick(2.5, 2.5) == "2.5" and format_tick(20, 10) == "20"
    assert format_tick(2e-7, 5e-8) == "2.0e-07"


def test_curves_join_metrics_on_steps_and_time_to_reward() -> None:
    values = {
        "reward_mean": {0: 0.5, 1: 0.7, 2: 0.9},
        "wall_clock": {0: 10.0, 1: 20.0, 2: 30.0},
        "images_seen": {0: 54.0, 1: 108.0, 2: 162.0},
    }
    assert curves.xy(values, "reward_mean", "wall_clock") == ([10.0, 20.0, 30.0], [0.5, 0.7, 0.9])
    assert curves.xy(values, "reward_mean") == ([0.0, 1.0, 2.0], [0.5, 0.7, 0.9])
    summary = curves.summarise_run(values, "reward_mean", target=0.7, smoothing=0.0)
    assert summary.final == 0.9 and summary.best == 0.9
    assert summary.seconds_to_target == 20.0 and summary.images_to_target == 108.0
    assert summary.seconds_per_epoch == 10.0
    assert (
        curves.summarise_run(values, "reward_mean", target=2.0, smoothing=0).seconds_to_target
        is None
    )
    assert curves.auto_target([0.9, None, 0.7]) == 0.7
    assert curves.reward_names(["loss", "reward/hps_mean", "reward_mean", "reward/hps_std"]) == [
        "reward_mean",
        "reward/hps_mean",
    ]
    store = curves.MetricStore()
    assert store.add([MetricPoint(1, "a", 1.0), MetricPoint(1, "a", 2.0)]) == 1
    assert store.values == {"a": {1: 2.0}} and store.last_step == 1


def test_age_and_duration() -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    assert render.age(now - timedelta(seconds=12), now) == "12 s ago"
    assert render.age(now - timedelta(minutes=5), now) == "5 min ago"
    assert render.age(None, now) == "-"
    assert render.duration(75) == "1 min 15 s"


PRESET = {
    "algorithm": "treegrpo",
    "model": "digits",
    "reward": "digit_judge",
    "prompts": "digits",
    "epochs": 100,
    "prompts_per_epoch": 4,
    "seed": 0,
    "sampling": {"steps": 10, "cfg_scale": 1.5, "eta": 0.7},
    "tree": {"k": 3, "depth": 3, "window": "random"},
    "flat": {"group_size": 27},
    "train": {"lr": 1e-4, "clip_range": 1e-3},
    "log_tree_every": 10,
    "sample_every": 10,
    "checkpoint_every": 10,
}


def test_form_sends_only_what_differs_from_the_preset() -> None:
    raw = form.preset_values(PRESET)
    assert raw["sampling.steps"] == 10 and raw["reward"] == "digit_judge"
    unchanged = form.build_request(raw, PRESET, name="n", prompt_sets=["digits"])
    assert unchanged.config == {} and unchanged.errors == {}
    raw.update({"epochs": 3, "tree.k": 2.0, "prompts": f"{XSS}\nsecond", "reward": "a=0.8, b=0.2"})
    changed = form.build_request(
        raw,
        PRESET,
        name="n",
        advanced="train.kl_beta = 0.01\ntree.backup = mean",
        prompt_sets=["digits"],
    )
    assert changed.errors == {}
    assert changed.config == {
        "epochs": 3,
        "tree.k": 2,
        "prompts": [XSS, "second"],
        "reward": {"a": 0.8, "b": 0.2},
        "train.kl_beta": 0.01,
        "tree.backup": "mean",
    }


def test_form_checks_fields_before_sending() -> None:
    raw = form.preset_values(PRESET)
    raw.update({"epochs": 0, "tree.k": 2.5, "train.lr": 0, "algorithm": "nope", "reward": "a=x"})
    served = {"algorithm": ["treegrpo", "dancegrpo"]}
    result = form.build_request(raw, PRESET, name="x" * 201, advanced="oops", choices=served)
    assert result.errors["algorithm"] == "choose one of: treegrpo, dancegrpo"
    assert set(result.errors) == {
        "epochs",
        "tree.k",
        "train.lr",
        "algorithm",
        "reward",
        "name",
        "advanced",
    }
    assert result.errors["epochs"] == "must be at least 1"
    assert result.errors["tree.k"] == "must be a whole number"
    assert result.errors["train.lr"] == "must be greater than 0"
    # Empty fields keep the preset's value: nothing to send, nothing wrong.
    blank = {name: None for name in form.FIELD_NAMES}
    assert form.build_request(blank, PRESET, name="").config == {}


def test_api_messages_find_their_field() -> None:
    assert form.slot_for("tree.k") == "tree.k"
    assert form.slot_for("name") == "name"
    assert form.slot_for("reward.hps") == "reward"
    assert form.slot_for("train.kl_beta", ["train.kl_beta"]) == "advanced"
    assert form.slot_for("params.source_job_id") == "source_job_id"
    assert form.slot_for("something.else") is None


def test_node_panel_summarises_the_leaves_below_and_the_path() -> None:
    tree = Tree.from_json(tree_json(k=3, depth=3))
    root = next(n for n in tree.nodes if n.parent_id is None)
    panel = render.node_panel(tree, root.id)
    assert 'data-field="leaves below">27<' in panel
    assert "best 1.0000" in panel  # rewards run 0 .. 1 in the factory
    leaf = next(n for n in tree.nodes if n.is_leaf)
    panel = render.node_panel(tree, leaf.id, image_src="data:image/png;base64,AAAA")
    assert panel.count('<li class="tg-hop') == 11  # steps 0..10, every recorded state
    assert 'src="data:image/png;base64,AAAA"' in panel
    assert "leaves below" not in panel


def test_run_tab_shows_the_last_epochs_checks_and_flags_an_off_policy_gap() -> None:
    store = curves.MetricStore(job_id=1)
    store.add(
        [
            MetricPoint(1, "check/ratio_dev_first_minibatch", 2e-7),
            MetricPoint(2, "check/ratio_dev_first_minibatch", 0.05),  # rollout != training
            MetricPoint(2, "check/zero_std_groups", 0.25),
            MetricPoint(2, "check/adv_clipped", 0.0),
            MetricPoint(2, "clip_fraction", 0.125),
            MetricPoint(2, "time/rollout", 1.5),
            MetricPoint(2, "time/reward", 0.25),
            MetricPoint(2, "time/update", 0.75),
            MetricPoint(2, "throughput/images_per_s", 43.2),
        ]
    )
    html = training_charts_html(store, 0.0)
    table = html[: html.index('<div class="tg-charts"')]
    assert "Checks at epoch 2" in table
    assert (
        '<tr class="tg-check-warn"><td>max |ratio - 1| on the first minibatch</td><td>5.0e-02'
        in table
    )
    assert "<td>prompt groups with zero reward std</td><td>25%</td>" in table
    assert "<td>rollout / reward / update (s)</td><td>1.50 / 0.25 / 0.75</td>" in table
    assert "<td>images per second</td><td>43.2</td>" in table
    assert table.count("tg-check-warn") == 1
    # ... and each check as a chart over epochs.
    assert html.count("<svg") == len(curves.TRAINING_METRICS)
    assert training_charts_html(curves.MetricStore(job_id=1), 0.0).count("tg-checks") == 0


def test_single_point_charts_have_no_negative_axis() -> None:
    # Issue 18: one epoch-0 point drew an x axis from -1 to 1.
    assert nice_ticks(0, 0, integer=True)[0] == 0.0
    assert min(nice_ticks(0.5, 0.5)) >= 0 and min(nice_ticks(3, 3)) >= 0
    assert min(nice_ticks(-2, -2)) < -2  # a negative value keeps room on both sides
    svg = line_chart_svg([Series("r", [0], [0.5])], title="t", x_label="epoch", integer_x=True)
    ticks = [t for t in re.findall(r'text-anchor="middle" fill="#5f6368">([^<]+)<', svg)]
    assert ticks and not any(t.startswith("-") for t in ticks), ticks


def test_status_phrases_read_as_english() -> None:
    from frontend.render import status_phrase

    assert status_phrase("succeeded") == "has succeeded"
    assert status_phrase("cancelled") == "was cancelled"
    assert status_phrase("running") == "is running"
