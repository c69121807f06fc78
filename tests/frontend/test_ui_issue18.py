"""Issue 18's dashboard pieces as pure functions: the run schedule and queue position in the
Run header, the over-optimisation watch, Compare's phase chart and side-by-side galleries, the
form's per-algorithm fields, tags, and notices that follow a job's status."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ui_factories import job_json

from frontend import curves, form, render
from frontend.client import Job, MetricPoint, Sample
from frontend.compare import gallery_epochs, phase_chart_svg, side_by_side_html
from frontend.render import watch_notice
from frontend.run import watch_html
from frontend.runs import split_tags


def _store(points: dict[str, dict[int, float]]) -> curves.MetricStore:
    store = curves.MetricStore(job_id=1)
    store.add(MetricPoint(step, name, v) for name, s in points.items() for step, v in s.items())
    return store


def test_header_says_when_the_next_gallery_and_tree_are_due() -> None:
    job = Job.from_json(
        job_json(
            schedule={
                "epochs": 8,
                "next_gallery_epoch": 8,
                "next_tree_epoch": 7,
                "sample_every": 10,
                "log_tree_every": 10,
            }
        )
    )
    html = render.job_header(job, checkpoint_href=None)
    assert "next gallery" in html and "epoch 8 (the final one) · every 10" in html
    assert "next tree" in html and "epoch 7 · every 10" in html
    done = Job.from_json(
        job_json(status="succeeded", schedule={"epochs": 8, "next_gallery_epoch": None})
    )
    assert "none left" in render.job_header(done, checkpoint_href=None)


def test_queue_position_is_shown_while_waiting() -> None:
    job = Job.from_json(job_json(status="queued", queue_position=2, lane="interactive"))
    assert render.queue_text(job) == "2nd in the interactive queue"
    assert "2nd in the interactive queue" in render.job_header(job, checkpoint_href=None)
    first = Job.from_json(job_json(status="queued", queue_position=1, lane="interactive"))
    assert render.queue_text(first) == "next to start in the interactive queue"
    watch = {"job_id": 1, "text": "Created job #1.", "status": "queued"}
    assert "next to start" in watch_notice(watch, first)


def test_notices_follow_the_job_status() -> None:
    watch = {"job_id": 4, "text": "Cancel requested.", "status": "cancelled"}
    text = watch_notice(watch)
    assert "Job #4 was cancelled." in text and "cancelling" not in text
    assert "has succeeded" in watch_notice({**watch, "status": "succeeded"})


def test_overoptimisation_is_flagged_when_the_gap_rises_and_diversity_falls() -> None:
    healthy = _store({curves.GAP: {2: 0.10, 4: 0.08}, curves.DIVERSITY: {2: 0.30, 4: 0.31}})
    assert curves.overoptimising(healthy.values) is None
    html = watch_html(healthy, 0.0)
    assert 'data-flagged="0"' in html and "No sign" in html
    hacked = _store({curves.GAP: {2: 0.10, 4: 0.25}, curves.DIVERSITY: {2: 0.30, 4: 0.12}})
    assert curves.overoptimising(hacked.values) == (2, 4)
    html = watch_html(hacked, 0.0)
    assert 'data-flagged="1"' in html and "from epoch 2 to 4" in html
    root = ET.fromstring(f"<div>{html.split('</div>', 2)[2].rsplit('</div>', 1)[0]}</div>")
    charts = [e for e in root.iter("{http://www.w3.org/2000/svg}svg")]
    assert [c.get("data-points") for c in charts] == ["2", "2"]
    # Only the gap rose: no flag (the diversity held).
    mixed = _store({curves.GAP: {2: 0.10, 4: 0.25}, curves.DIVERSITY: {2: 0.30, 4: 0.35}})
    assert curves.overoptimising(mixed.values) is None


def test_phase_chart_stacks_rollout_reward_update_per_run() -> None:
    a, b = Job.from_json(job_json(id=1)), Job.from_json(job_json(id=2, algorithm="dancegrpo"))
    sa = _store({"time/rollout": {1: 2.0, 2: 4.0}, "time/reward": {1: 1.0}, "time/update": {1: 3}})
    sb = _store({"time/rollout": {1: 1.0}})
    root = ET.fromstring(phase_chart_svg([(a, sa), (b, sb)]))
    bars = {
        (r.get("data-job-id"), r.get("data-phase")): float(r.get("data-seconds", "0"))
        for r in root.iter("{http://www.w3.org/2000/svg}rect")
        if r.get("class") == "phase"
    }
    assert bars[("1", "time/rollout")] == 3.0 and bars[("1", "time/update")] == 3.0
    assert bars[("2", "time/reward")] == 0.0
    assert "No per-phase timing" in phase_chart_svg([(a, _store({}))])


def test_galleries_side_by_side_on_the_same_prompts() -> None:
    assert gallery_epochs([[0, 4, 8], [0, 8], [0, 2, 8]]) == [0, 8]

    def samples(job: int) -> list[Sample]:
        return [
            Sample(
                id=job * 10 + i,
                epoch=8,
                index=i,
                prompt=f"digit {i}",
                reward=0.1 * i,
                rewards=None,
                image_url=f"/api/v1/artifacts/{job}/{i}.png",
            )
            for i in range(3)
        ]

    a = Job.from_json(job_json(id=1, config={"seed": 0}))
    b = Job.from_json(job_json(id=2, name="<b>x</b>", config={"seed": 0}))
    html = side_by_side_html(
        [(a, samples(1)), (b, samples(2))],
        8,
        sources={"/api/v1/artifacts/2/1.png": "data:x"},
        pixelated=True,
    )
    assert 'data-epoch="8"' in html and 'data-same="1"' in html and "&lt;b&gt;x" in html
    # A grid of one card per prompt (not one table row per prompt: 40 prompts made 6,700 px),
    # each with both runs' images, lettered as the legend names them.
    assert html.count('class="tg-sbs-card"') == 3 and html.count('src="data:x"') == 1
    assert 'class="tg-sbs-grid" style="--tg-runs:2"' in html
    assert html.count('class="tg-sbs-cell" data-job-id="2"') == 3
    assert '<span class="tg-sbs-run" data-job-id="1"><b>A</b>' in html
    c = Job.from_json(job_json(id=3, config={"seed": 1}))
    assert 'data-same="0"' in side_by_side_html(
        [(a, samples(1)), (c, samples(3))], 8, sources={}, pixelated=False
    )
    assert "two or more" in side_by_side_html([(a, samples(1))], 8, sources={}, pixelated=False)


def test_form_hides_tree_fields_for_flat_runs() -> None:
    # The algorithms come from the presets the API serves (GET /presets), not a list of our own.
    presets = [{"algorithm": a} for a in ("treegrpo", "dancegrpo", "treegrpo", "flowgrpo")]
    served = form.served_algorithms([*presets, {"model": "digits"}])
    assert served == ("treegrpo", "dancegrpo", "flowgrpo")
    assert "tree.k" not in form.fields_for("dancegrpo", served)
    assert "log_tree_every" not in form.fields_for("flowgrpo", served)
    assert "flat.group_size" not in form.fields_for("treegrpo", served)
    assert "tree.k" in form.fields_for("treegrpo", served)
    assert form.fields_for("something-new", served) == frozenset(form.FIELD_NAMES)


def test_tags_are_split_and_shown() -> None:
    assert split_tags(" a, b ,,a, <c> ") == ["a", "b", "<c>"]
    job = Job.from_json(job_json(tags=["baseline", "<c>"], notes="n"))
    table = render.jobs_table([job])
    assert 'class="tg-tag">baseline<' in table and "&lt;c&gt;" in table and "<c>" not in table
