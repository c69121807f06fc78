"""The dashboard's handlers as plain functions on a mock transport (issue 28): actions act on the
row the confirmation names, the search says what it searched, notices follow a job's queue
position, deleted runs come back, the Playground lists only runs it can sample and leaves no
failed job behind, the Run header shows the held-out reward, and only the tab on screen polls."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, get_type_hints

import gradio as gr
import httpx
from fake_api import FakeApi
from ui_factories import job_json

from frontend import curves, playground, polling, run, runs, submit
from frontend.app import build_blocks
from frontend.client import ApiClient, Job, MetricPoint
from frontend.context import UiContext
from frontend.shared import only_when_shown
from frontend.static import read_static

Route = Callable[[httpx.Request], httpx.Response]


JOBS = "/api/v1/jobs"


def _jobs(*jobs: dict[str, Any]) -> dict[str, Any]:
    return {"data": list(jobs), "count": len(jobs)}


def test_delete_acts_on_the_row_the_confirmation_names_not_a_late_selection() -> None:
    """Under load a row click reached the server 4.65 s late and "Delete run…" hit the previous
    selection. The page sends the highlighted row's id with the click; the confirmation names
    that job and "Yes" deletes exactly it, whatever the selection became meanwhile."""
    old = job_json(id=3, name="finished 12-epoch run", status="succeeded")
    new = job_json(id=9, name="scratch run", status="failed")
    api = FakeApi(
        {
            ("GET", f"{JOBS}/3"): old,
            ("GET", f"{JOBS}/9"): new,
            ("DELETE", f"{JOBS}/9"): httpx.Response(204),
            ("GET", JOBS): _jobs(old),
            ("GET", f"{JOBS}/deleted"): {"data": [], "count": 0},
        }
    )
    client = api.client()
    # The server still holds job 3 as the selection; the page highlights row 9.
    pending, row, text, message = runs.ask_delete(client, 3, 9)
    assert pending == {"action": "delete", "job_id": 9} and row["visible"] is True
    assert "#9" in text and "scratch run" in text and "#3" not in text and message == ""
    # The late select of row 3 arrives now: it withdraws a confirmation about another job...
    *_, confirm, _ = runs.select_row(client, {"job_id": 3}, pending)
    assert confirm == {"visible": False, "__type__": "update"}
    # ...but one about the job being selected stays.
    *_, confirm, _ = runs.select_row(client, {"job_id": 9}, pending)
    assert confirm == gr.skip()
    out = runs.confirmed(client, pending, [], "all", 3, "", "")
    assert api.calls("DELETE") == [f"{JOBS}/9"]
    assert "Job #9 was deleted" in out[3] and out[6] is None  # the selection is cleared
    # Nothing highlighted in the page: the server's selection, as before.
    pending, *_ = runs.ask_cancel(FakeApi({("GET", f"{JOBS}/3"): old}).client(), 3, None)
    assert pending is None  # a succeeded job cannot be cancelled: refused, nothing pending


def test_an_action_without_a_key_or_a_row_sends_nothing() -> None:
    api = FakeApi({})
    assert "Select a job" in runs.ask_delete(api.client(), None, None)[3]
    assert "API key" in runs.ask_delete(api.client(key=None), 4, 4)[3]
    assert api.seen == []


def test_searching_percent_sends_it_literally_and_says_what_matched_nothing() -> None:
    api = FakeApi({("GET", JOBS): _jobs()})
    html = runs.table_html(api.client(), [], "all", None, "%", "")
    assert api.seen[0].url.params["q"] == "%"
    assert "No job has a name containing “%”." in html and "yet" not in html
    html = runs.table_html(api.client(), ["failed"], "train", None, "", "a, b")
    assert "the tags “a”, “b”; status failed; kind train" in html
    assert "No jobs yet" in runs.table_html(api.client(), [], "all", None, "", "")


def test_the_submit_notice_follows_the_queue_position() -> None:
    """The notice kept "3rd in the queue" after the jobs ahead of it started."""
    waiting = job_json(id=5, status="queued", queue_position=1)
    api = FakeApi({("GET", f"{JOBS}/5"): waiting})
    watch = {"job_id": 5, "text": "Created job #5.", "status": "queued", "position": 3}
    new, notice = runs.watched(watch, api.client())
    assert new["position"] == 1 and "next to start" in notice
    assert runs.watched(new, api.client()) == (gr.skip(), gr.skip())  # nothing moved


def test_submit_sends_the_form_once_with_its_idempotency_key() -> None:
    created = job_json(id=12, status="queued", queue_position=2)
    api = FakeApi({("POST", JOBS): httpx.Response(201, json=created)})
    preset = {"algorithm": "treegrpo", "model": "digits", "epochs": 3}
    values = [None] * len(submit.form.FIELDS)
    values[submit.form.FIELD_NAMES.index("epochs")] = 5
    out = submit.do_submit(
        api.client(),
        "train",
        "digits",
        "my run",
        None,
        "",
        "tok-1",
        {"digits": preset},
        [],
        *values,
    )
    message, *_, new_job, token, watch = out
    body = json.loads(api.seen[0].content)
    assert body["config"] == {"epochs": 5} and body["name"] == "my run"
    assert api.seen[0].headers["idempotency-key"] == "tok-1"
    assert new_job == 12 and token != "tok-1" and watch["position"] == 2
    assert "Created job #12" in message and "2nd in the queue" in message


def test_recently_deleted_runs_are_listed_and_restored() -> None:
    gone = {
        "id": 4,
        "kind": "train",
        "name": "oops",
        "status": "succeeded",
        "algorithm": "treegrpo",
        "owner_key_id": 1,
        "deleted_at": "2026-12-06T10:00:00Z",
        "purge_after": "2026-12-07T10:00:00Z",
    }
    listing = {"data": [gone], "count": 1}
    api = FakeApi(
        {
            ("GET", f"{JOBS}/deleted"): lambda r: listing,
            ("POST", f"{JOBS}/4/restore"): job_json(id=4, name="oops", status="succeeded"),
            ("GET", JOBS): _jobs(job_json(id=4, name="oops", status="succeeded")),
        }
    )
    html = runs.deleted_html(api.client())
    assert 'data-restore-id="4"' in html and "oops" in html and "restorable for" in html
    listing = {"data": [], "count": 0}
    message, after, table = runs.restore(api.client(), {"job_id": 4}, [], "all", None, "", "")
    assert api.calls("POST") == [f"{JOBS}/4/restore"]
    assert "Job #4 oops was restored" in message and "No deleted run" in after
    assert 'data-job-id="4"' in table


def test_the_playground_lists_only_runs_with_a_checkpoint_and_starts_none_without() -> None:
    trained = job_json(id=1, status="succeeded", checkpoint_path="jobs/1/checkpoints/e")
    bare = job_json(id=2, status="running", checkpoint_path=None)
    api = FakeApi({("GET", JOBS): _jobs(bare, trained), ("GET", f"{JOBS}/2"): bare})
    update = playground.list_runs(api.client(), 2)
    assert [value for _, value in update["choices"]] == [1] and update["value"] is None
    steps = list(playground.sample(UiContext(), api.client(), 2, "", "a digit", 0, 2))
    assert "has no checkpoint yet" in steps[-1][0]
    assert api.calls("POST") == []  # no failed job left behind


def test_the_run_header_shows_the_held_out_reward_beside_the_training_mean() -> None:
    store = curves.MetricStore(job_id=1)
    store.add(
        [
            MetricPoint(step=8, name="reward_mean", value=0.771),
            MetricPoint(step=4, name="eval/reward_mean", value=0.85),
            MetricPoint(step=8, name="eval/reward_mean", value=0.92),
        ]
    )
    job = Job.from_json(job_json(id=1, latest_reward=0.771))
    header = run.header_html(UiContext(), ApiClient("http://api.test"), job, store)
    assert "held-out reward</span><b>0.920 <small>(epoch 8)</small>" in header
    assert "training reward (last epoch, noisy)</span><b>0.771" in header


def test_a_finished_run_stops_the_run_tab_timer_without_asking_the_api() -> None:
    api = FakeApi({})
    store = curves.MetricStore(job_id=1)
    store.add([MetricPoint(step=1, name="reward_mean", value=0.5)])
    view = run.RunView(job_id=1, store=store, status="succeeded")
    out = run.tick(UiContext(), api.client(), view, 0.6)
    assert out[-1].active is False and api.seen == []


def test_only_the_tab_on_screen_polls() -> None:
    """Hidden tabs made about 1.4 events a second with nothing happening. At load only the
    Runs tab's refresh timer runs; a tab switch starts the shown tab's and stops the others'."""
    demo = build_blocks("http://127.0.0.1:8000")
    config = demo.get_config_file()
    tabs = {b.elem_id: b for b in demo.blocks.values() if isinstance(b, gr.Tab) and b.elem_id}
    timers = {name: polling.refresh_timers(tab) for name, tab in tabs.items()}
    assert timers["tg-tab-runs"] and timers["tg-tab-run"] and timers["tg-tab-compare"]
    by_id = {c["id"]: c for c in config["components"]}
    for name, owned in timers.items():
        for timer in owned:
            assert by_id[timer._id]["props"]["active"] is (name == "tg-tab-runs"), name
    # The tree inspector's branch poll starts inactive and stays under its tab's control.
    tree_timers = [b for b in polling.walk(tabs["tg-tab-tree"]) if isinstance(b, gr.Timer)]
    assert all(t not in timers["tg-tab-tree"] for t in tree_timers)
    # The switch event: its handler gets the shown tab's elem_id from the page.
    switch = next(
        d
        for d in config["dependencies"]
        if any(t[1] == "change" for t in d["targets"])
        and d.get("js") == read_static("shown_tab.js")
    )
    flat = [t for owned in timers.values() for t in owned]
    assert switch["outputs"][: len(flat)] == [t._id for t in flat]
    fn = demo.fns[switch["id"]].fn
    out = fn("tg-tab-run")
    updates, shown, boxes = out[: len(flat)], out[len(flat)], out[len(flat) + 1 :]
    assert [u.active for u in updates] == [t in timers["tg-tab-run"] for t in flat]
    assert shown == "run"  # the shown tab's id, which the tabs' loaders read
    # Only the Run tab's box takes a new value (so only its loaders fire), a new one each time.
    assert [b != gr.skip() for b in boxes] == [t == "tg-tab-run" for t in tabs]
    again = fn("tg-tab-run")[len(flat) + 1 :]
    assert [b for b in again if b != gr.skip()] != [b for b in boxes if b != gr.skip()]
    out = fn("tg-tab-tree")
    assert not any(u.active for u in out[: len(flat)]) and out[len(flat)] == "tree"


def test_the_form_loads_its_presets_once_a_key_is_pasted_where_reads_need_one() -> None:
    """The compose smoke run's screenshot: with reads closed the page's first load of the
    presets was refused, and the form still said so after the key was pasted."""
    closed = httpx.Response(401, json={"title": "Unauthorized", "detail": "reads need a key"})
    refused = submit.load_presets(FakeApi({("GET", "/api/v1/presets"): closed}).client(None))
    assert refused[0] == {} and "Could not load the presets" in refused[3]
    config = {"algorithm": "dancegrpo", "epochs": 4, "model": "digits"}
    api = FakeApi(
        {
            ("GET", "/api/v1/presets"): {"data": [{"name": "digits-dancegrpo", "config": config}]},
            ("GET", "/api/v1/prompt-sets"): {"data": []},
            ("GET", "/api/v1/models"): {"data": ["digits"]},
        }
    )
    out = submit.presets_when_missing(api.client(), refused[0])
    assert out[0] == {"digits-dancegrpo": config} and out[2]["value"] == "digits-dancegrpo"
    assert out[3] == ""  # the refusal is gone
    epochs = out[4 + submit.form.FIELD_NAMES.index("epochs")]
    assert epochs["value"] == 4
    hidden = json.loads(out[-1])
    assert "tg-fcol-tree-k" in hidden and "tg-fcol-flat-group-size" not in hidden
    # Loaded already: a new key leaves the form (and what the user typed in it) alone.
    again = submit.presets_when_missing(api.client(), out[0])
    assert all(v == gr.skip() for v in again) and len(again) == len(out)
    assert api.calls("GET").count("/api/v1/presets") == 1


def test_a_hidden_tab_loads_nothing_and_loads_when_shown() -> None:
    """A job picked in one tab used to set off every other tab's loaders: each update to a
    hidden tab's component walks Gradio's whole component tree in the page. Now each tab's
    loader runs on its own tab's show and on a job change only while it is on screen; hidden,
    it skips every output."""
    calls: list[tuple[Any, ...]] = []

    def load(request: gr.Request, key: str | None, *values: Any) -> tuple[str, str]:
        calls.append((request, key, *values))
        return "header", "chart"

    gate = only_when_shown("run", load, 2)
    assert gate("tree", "req", "key", 7) == (gr.skip(), gr.skip()) and calls == []
    assert gate("run", "req", "key", 7) == ("header", "chart")
    assert calls == [("req", "key", 7)]
    # Gradio finds the request parameter after the new first one, by signature and type hints.
    assert list(inspect.signature(gate).parameters)[:3] == ["shown", "request", "key"]
    assert get_type_hints(gate)["request"] is gr.Request
    one = only_when_shown("run", lambda: "x", 1)
    assert one("runs") == gr.skip() and one("run") == "x"

    # Wired: the shown tab's change and, for job followers, the job's change; nothing on load.
    demo = build_blocks("http://127.0.0.1:8000")
    config = demo.get_config_file()
    names = {
        d["id"]: getattr(demo.fns[d["id"]].fn, "__name__", None) for d in config["dependencies"]
    }
    loads = {
        names[d["id"]] for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"])
    }
    for hidden_loader in ("open_job", "refresh_and_load", "list_runs", "on_refresh", "show"):
        assert hidden_loader not in loads, hidden_loader
    ids = {b.elem_id: b._id for b in demo.blocks.values() if getattr(b, "elem_id", None)}

    def on_change_of(elem_id: str, first_input: str | None = None) -> set[str]:
        return {
            names[d["id"]]
            for d in config["dependencies"]
            if [ids[elem_id], "change"] in [list(t) for t in d["targets"]]
            and (first_input is None or d["inputs"][:1] == [ids[first_input]])
        }

    assert {"open_job", "list_jobs", "show"} <= on_change_of("tg-opened-run")
    assert "refresh_and_load" in on_change_of("tg-opened-tree")
    assert {"show_selected", "fill_edit", "gate_actions"} <= on_change_of("tg-opened-runs")
    assert "open_job" not in on_change_of("tg-opened-tree")
    # A job change runs no server event itself: one function in the page bumps the "followed"
    # box of the tab on screen, and only that tab's followers (wired to its box) run.
    follow = [d for d in config["dependencies"] if d["js"] == read_static("follow_job.js")]
    assert len(follow) == 1 and follow[0]["backend_fn"] is False
    ((job_id, trigger),) = follow[0]["targets"]
    assert trigger == "change" and isinstance(demo.blocks[job_id], gr.State)
    assert follow[0]["inputs"][0] == ids["tg-shown"]
    assert not [d for d in config["dependencies"] if [job_id, "change"] in map(list, d["targets"])
                and d["backend_fn"]]  # fmt: skip
    assert {"open_job", "show"} <= on_change_of("tg-followed-run")
    assert {"show_selected", "fill_edit", "gate_actions"} <= on_change_of("tg-followed-runs")
    # The tree tab's own pick is the only job change while it is shown, and loads the tree.
    assert not on_change_of("tg-followed-tree")
    # No event switches tabs from the server (that made every tab an output, which Gradio
    # then snapshots on each later event): the page clicks the tab's button instead.
    tabs_id = ids["tg-tabs"]
    assert not [d for d in config["dependencies"] if tabs_id in d["outputs"] and d["backend_fn"]]


def test_opening_a_run_draws_its_header_and_curves_before_fetching_gallery_images() -> None:
    """The galleries' thumbnails were most of an open's requests (64 of 87 for a digits run):
    they come in a second event, after the header and curves are drawn."""
    sample = {"id": 1, "epoch": 0, "index": 0, "prompt": "a 3", "reward": 0.5}
    api = FakeApi(
        {
            ("GET", f"{JOBS}/1"): job_json(id=1, status="succeeded"),
            ("GET", f"{JOBS}/1/metrics"): {
                "data": [{"step": 1, "name": "reward_mean", "value": 0.5}],
                "count": 1,
                "names": ["reward_mean"],
            },
            ("GET", f"{JOBS}/1/logs"): httpx.Response(200, text="started\n"),
            ("GET", f"{JOBS}/1/samples"): {
                "data": [{**sample, "image_url": "/api/v1/artifacts/jobs/1/s/0.png"}],
                "count": 1,
                "epochs": [0, 2],
            },
            ("GET", JOBS): _jobs(job_json(id=1, status="succeeded")),
        }
    )
    opened = run.open_job(UiContext(), api.client(), 1, 0.6)
    view, _, header, reward, *_ = opened
    assert "#1" in header and "<svg" in reward and view.epochs == (0, 2)
    assert not [r for r in api.seen if "/artifacts/" in r.url.path]
    assert opened[-1].active is False  # a finished run: no timer
    base, late, slider = run.open_galleries(UiContext(), api.client(), view)
    assert "Epoch 0: the baseline" in base and "Epoch 2" in late and slider["value"] == 2
    assert [r for r in api.seen if "/artifacts/" in r.url.path]  # now the thumbnails


def test_the_run_tabs_downloads_open_through_the_ui_with_the_users_key() -> None:
    """With reads closed a plain link to /api/v1/jobs/1/checkpoint answered 401 (a link cannot
    carry the key): opening a run links its downloads through the UI's origin (frontend/links.py)
    with the caller's key, which is in no URL; the 2 s tick redraws the same links."""
    import re

    from frontend import links

    config = {"algorithm": "treegrpo", "model": "digits", "train": {"lora_rank": 4}}
    job = job_json(id=1, status="running", config=config, checkpoint_path="jobs/1/checkpoints/e")
    empty = {"data": [], "count": 0}
    api = FakeApi(
        {
            ("GET", f"{JOBS}/1"): job,
            ("GET", f"{JOBS}/1/metrics"): {**empty, "names": []},
            ("GET", f"{JOBS}/1/logs"): httpx.Response(200, text=""),
            ("GET", f"{JOBS}/1/samples"): {**empty, "epochs": []},
            ("GET", JOBS): _jobs(job),
        }
    )
    view, _, header, *_ = run.open_job(UiContext(), api.client("k-secret"), 1, 0.6)
    assert "k-secret" not in header
    found = re.findall(r'href="files/([^"]+)" download\s+data-testid="([a-z]+)-link"', header)
    hrefs = {name: token for token, name in found}
    assert hrefs.keys() == {"checkpoint", "export"}
    paths: dict[str, str] = {}
    for name, token in hrefs.items():
        link = links.LINKS.resolve(token)
        assert link is not None and link.key == "k-secret" and link.base_url == "http://api.test"
        paths[name] = link.path
    assert paths == {
        "checkpoint": f"{JOBS}/1/checkpoint",
        "export": f"{JOBS}/1/export?format=lora",
    }
    ticked = run.tick(UiContext(), api.client("k-secret"), view, 0.6)
    assert ticked[1] == header  # the same tokens: the header does not change under the cursor


def test_an_expired_download_link_is_renewed_with_the_header() -> None:
    """The page found a Run header link expired (frontend/static/links.js): the header again,
    with links issued now."""
    job = job_json(id=4, status="succeeded", checkpoint_path="jobs/4/checkpoints/epoch-000002")
    api = FakeApi({("GET", f"{JOBS}/4"): job})
    header = run.renew_links(UiContext(), api.client(), run.RunView(job_id=4))
    assert "#4" in header and 'href="files/' in header and "k-secret" not in header
    assert run.renew_links(UiContext(), api.client(), run.RunView()) == gr.skip()
