"""`treegrpo reward-serve` as a real subprocess: health, readiness and info, dynamic batching under
concurrent clients, per-item errors, the bearer key, size limits, msgpack, and the core's `remote`
client against it."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import torch
from PIL import Image
from reward_server import RewardServer, reward_server

from treegrpo.cli import main
from treegrpo.rewards.digits import boldness, digit_judge, digit_probabilities
from treegrpo.rewards.registry import load_rewards, score_images
from treegrpo.rewards.remote import encode_png, encode_raw

KEY = "s3cret-reward-key"
TIMEOUT = 60  # seconds: a 2-core machine shared by several test runs


@pytest.fixture(scope="module")
def served() -> Iterator[RewardServer]:
    with reward_server(
        "--reward",
        "digit_judge",
        "--api-key",
        KEY,
        "--max-batch",
        "64",
        "--max-wait-ms",
        "200",
        "--max-body-mb",
        "1",
        "--max-items",
        "100",
        "--max-pixels",
        "4096",
    ) as server:
        yield server


def _digits(count: int) -> tuple[torch.Tensor, list[str]]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images[:count] / 16.0, dtype=torch.float32)[:, None]  # (B,1,8,8)
    prompts = [f"the digit {int(d)}" for d in data.target[:count]]
    return images, prompts


def _auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_ready_and_info(served: RewardServer) -> None:
    assert httpx.get(f"{served.base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{served.base}/ready").status_code == 200
    info = httpx.get(f"{served.base}/info", headers=_auth(), timeout=TIMEOUT).json()
    assert info["reward"] == "digit_judge"
    assert info["device"] == "cpu"
    assert info["version"]
    assert info["limits"]["max_batch"] == 64


def test_scores_match_the_in_process_reward(served: RewardServer) -> None:
    images, prompts = _digits(6)
    answer = httpx.post(
        served.url,
        json={"prompts": prompts, "images": encode_png(images)},
        headers=_auth(),
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["errors"] == [None] * 6
    # The PNG round trip rounds pixels to 8 bits, as the reference does here.
    rounded = (images * 255).round() / 255
    expected = digit_judge(rounded, prompts)
    assert torch.allclose(torch.tensor(body["scores"]), expected, atol=1e-5)


def test_concurrent_clients_are_batched_together(served: RewardServer) -> None:
    before = httpx.get(f"{served.base}/info", headers=_auth(), timeout=TIMEOUT).json()["stats"]
    images, prompts = _digits(16)
    answers: list[list[float]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def client(i: int) -> None:
        part = slice(2 * i, 2 * i + 2)
        barrier.wait()
        response = httpx.post(
            served.url,
            json={"prompts": prompts[part], "images": encode_png(images[part])},
            headers=_auth(),
            timeout=TIMEOUT,
        )
        answers[i] = response.json()["scores"]

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = httpx.get(f"{served.base}/info", headers=_auth(), timeout=TIMEOUT).json()["stats"]
    assert after["requests"] - before["requests"] == 8
    batches = after["batches"] - before["batches"]
    # 16 items of 8 requests arrive within the 200 ms wait: far fewer model calls than requests.
    assert batches < 8, after
    assert max(after["recent_batch_sizes"][-batches:]) > 2
    each = torch.tensor([s for scores in answers for s in scores])
    rounded = (images * 255).round() / 255
    assert torch.allclose(each, digit_judge(rounded, prompts), atol=1e-5)


def test_a_corrupt_image_fails_only_its_own_item(served: RewardServer) -> None:
    images, prompts = _digits(4)
    encoded = encode_png(images)
    encoded[1] = base64.b64encode(b"\x89PNG\r\n\x1a\n not really a png").decode()
    jpeg = io.BytesIO()
    Image.new("L", (8, 8)).save(jpeg, format="JPEG")
    encoded[3] = base64.b64encode(jpeg.getvalue()).decode()
    body = httpx.post(
        served.url, json={"prompts": prompts, "images": encoded}, headers=_auth(), timeout=TIMEOUT
    ).json()
    assert body["scores"][1] is None and body["scores"][3] is None
    assert body["errors"][1].startswith("image 1: not a PNG")
    assert body["errors"][3] == "image 3: not a PNG (a JPEG file)"
    assert body["errors"][0] is None and body["errors"][2] is None
    assert isinstance(body["scores"][0], float) and isinstance(body["scores"][2], float)


def test_an_oversized_image_fails_only_its_own_item(served: RewardServer) -> None:
    images, prompts = _digits(2)
    encoded = encode_png(images)
    encoded[0] = encode_png(torch.zeros(1, 1, 65, 65))[0]  # 4225 pixels, over the 4096 limit
    body = httpx.post(
        served.url, json={"prompts": prompts, "images": encoded}, headers=_auth(), timeout=TIMEOUT
    ).json()
    assert body["scores"][0] is None
    assert body["errors"][0] == "image 0: 65 x 65 pixels is over the limit of 4096"
    assert body["errors"][1] is None and isinstance(body["scores"][1], float)


def test_a_reward_of_a_weighted_set_is_scored_on_its_server(served: RewardServer) -> None:
    """reward_options.<name>.server: digit_judge on the server, boldness here; each keeps its
    own scores, so the per-reward z-score sum is unchanged."""
    images, prompts = _digits(4)
    fns = load_rewards(
        {"digit_judge": 1.0, "boldness": 0.5},
        options={"digit_judge": {"server": served.url, "api_key": KEY}},
    )
    scores = score_images(fns, images, prompts)
    rounded = (images * 255).round() / 255
    assert torch.allclose(scores["digit_judge"], digit_judge(rounded, prompts), atol=1e-5)
    assert torch.equal(scores["boldness"], boldness(images, prompts))


def test_a_bad_prompt_is_an_item_error_too(served: RewardServer) -> None:
    images, prompts = _digits(3)
    prompts[2] = "a cat"  # digit_judge cannot judge it; the other two are still scored
    body = httpx.post(
        served.url,
        json={"prompts": prompts, "images": encode_png(images)},
        headers=_auth(),
        timeout=TIMEOUT,
    ).json()
    assert body["scores"][2] is None and "names no single digit" in body["errors"][2]
    assert body["errors"][:2] == [None, None]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-Key": KEY}])
def test_a_wrong_or_missing_key_is_refused(served: RewardServer, headers: dict[str, str]) -> None:
    images, prompts = _digits(1)
    answer = httpx.post(
        served.url, json={"prompts": prompts, "images": encode_png(images)}, headers=headers
    )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{served.base}/info", headers=headers).status_code == 401
    assert httpx.get(f"{served.base}/health").status_code == 200  # probes need no key


def test_oversized_requests_are_refused(served: RewardServer) -> None:
    big = "A" * (2 * 2**20)  # a 2 MB body against the 1 MB limit
    answer = httpx.post(
        served.url, json={"prompts": ["x"], "images": [big]}, headers=_auth(), timeout=TIMEOUT
    )
    assert answer.status_code == 413
    assert "limit" in answer.json()["detail"]
    images, prompts = _digits(1)
    many = {"prompts": prompts * 101, "images": encode_png(images) * 101}
    answer = httpx.post(served.url, json=many, headers=_auth(), timeout=TIMEOUT)
    assert answer.status_code == 413 and "101 images" in answer.json()["detail"]
    assert (
        httpx.post(served.url, content=b"{not json", headers=_auth(), timeout=TIMEOUT).status_code
        == 400
    )


def test_msgpack_raw_arrays_are_negotiated(served: RewardServer) -> None:
    images, prompts = _digits(4)
    answer = httpx.post(
        served.url,
        content=msgpack.packb({"prompts": prompts, "images": encode_raw(images)}),
        headers={
            **_auth(),
            "Content-Type": "application/msgpack",
            "Accept": "application/msgpack",
        },
    )
    assert answer.headers["content-type"].startswith("application/msgpack")
    body = msgpack.unpackb(answer.content)
    rounded = (images * 255).round() / 255
    assert torch.allclose(torch.tensor(body["scores"]), digit_judge(rounded, prompts), atol=1e-5)


@pytest.mark.parametrize("wire", ["png", "msgpack"])
def test_the_remote_client_scores_against_it(served: RewardServer, wire: str) -> None:
    images, prompts = _digits(5)
    fn = load_rewards(
        {"remote": 1.0},
        options={"remote": {"url": served.url, "api_key": KEY, "format": wire, "batch_size": 2}},
    )["remote"]
    rounded = (images * 255).round() / 255
    assert torch.allclose(fn(images, prompts), digit_judge(rounded, prompts), atol=1e-5)
    assert digit_probabilities(images).shape == (5, 10)


@pytest.mark.parametrize("wire", ["png", "msgpack"])
def test_metadata_reaches_the_served_reward(served: RewardServer, wire: str) -> None:
    # digit_judge scores against the row's `digit` when present: the prompts here name another
    # digit, so the scores are those of the metadata's digits only if the field arrived.
    images, prompts = _digits(4)
    wanted = [{"digit": (int(p[-1]) + 1) % 10} for p in prompts]
    fn = load_rewards(
        {"remote": 1.0},
        options={"remote": {"url": served.url, "api_key": KEY, "format": wire, "batch_size": 3}},
    )["remote"]
    rounded = (images * 255).round() / 255
    expected = digit_judge(rounded, [f"the digit {m['digit']}" for m in wanted])
    assert torch.allclose(fn(images, prompts, wanted), expected, atol=1e-5)
    assert not torch.allclose(expected, digit_judge(rounded, prompts), atol=1e-3)
    body = {"prompts": prompts[:1], "images": encode_png(images[:1]), "metadata": [7]}
    answer = httpx.post(served.url, json=body, headers=_auth(), timeout=TIMEOUT).json()
    assert answer["scores"] == [None] and "metadata is not an object" in answer["errors"][0]
    body["metadata"] = [{}, {}]
    assert httpx.post(served.url, json=body, headers=_auth(), timeout=TIMEOUT).status_code == 400


def test_the_client_names_the_prompt_of_a_failed_item(served: RewardServer) -> None:
    images, prompts = _digits(3)
    prompts[1] = "a cat"
    fn = load_rewards({"remote": 1.0}, options={"remote": {"url": served.url, "api_key": KEY}})[
        "remote"
    ]
    with pytest.raises(RuntimeError, match=r"could not score image 1 \(prompt 'a cat'\)"):
        fn(images, prompts)


@pytest.mark.slow
def test_a_digits_run_trains_against_the_server(
    served: RewardServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`treegrpo train` on the shipped digits model, scored by the server (key from the
    environment, named by api_key_env): it trains, and its logged tree holds the rewards."""
    monkeypatch.setenv("DIGITS_REWARD_KEY", KEY)
    out = tmp_path / "run"
    before = httpx.get(f"{served.base}/info", headers=_auth(), timeout=TIMEOUT).json()["stats"][
        "items"
    ]
    settings = {
        "reward": "remote",
        "reward_options.remote.url": served.url,
        "reward_options.remote.api_key_env": "DIGITS_REWARD_KEY",
        "epochs": 2,
        "prompts_per_epoch": 2,
        "tree.k": 2,
        "tree.depth": 2,
        "sampling.steps": 4,
        "log_tree_every": 1,
        "sample_every": 0,
        "checkpoint_every": 0,
        "device": "cpu",
    }
    assigns = [part for key, value in settings.items() for part in ("--set", f"{key}={value}")]
    assert (
        main(["train", "--preset", "digits-treegrpo", *assigns, "--out", str(out), "--quiet"]) == 0
    )
    lines = (out / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1])["metrics"]
    assert 0.0 < last["reward/remote_mean"] <= 1.0  # a probability from the judge
    trees = sorted((out / "artifacts" / "trees").glob("*/tree.json"))
    assert len(trees) == 2 * 2
    leaves = [n for n in json.loads(trees[-1].read_text())["nodes"] if n["is_leaf"]]
    assert len(leaves) == 4 and all(0.0 < n["reward"] <= 1.0 for n in leaves)
    after = httpx.get(f"{served.base}/info", headers=_auth(), timeout=TIMEOUT).json()["stats"][
        "items"
    ]
    # Every leaf of both epochs went to the server, and so did the final epoch's gallery (the
    # last epoch always logs one, whatever sample_every says).
    galleries = list((out / "artifacts" / "samples").glob("**/samples.json"))
    assert len(galleries) == 1
    gallery = len(json.loads(galleries[0].read_text())["samples"])
    assert after - before == 2 * 2 * 4 + gallery
    assert KEY not in (out / "config.json").read_text()
