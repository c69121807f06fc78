"""The `vlm_judge` reward against a local OpenAI-compatible chat server in a subprocess
(openai_fake_server.py: it judges an image by its mean brightness m)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from treegrpo import egress
from treegrpo.config import ConfigError
from treegrpo.egress import EgressRefused, parse_hosts
from treegrpo.rewards import vlm_judge
from treegrpo.rewards.registry import load_rewards

SERVER = Path(__file__).with_name("openai_fake_server.py")


def _start(env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, str(SERVER)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    assert port.isdigit(), f"the fake server did not start (said {port!r})"
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    process, url = _start()
    try:
        yield url
    finally:
        process.kill()
        process.wait()


def _log(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/log", timeout=5) as answer:
        return list(json.loads(answer.read()))


def _grey(*levels: float) -> torch.Tensor:
    """(B, 3, 16, 16) uniform images at the given brightness levels (multiples of 1/255)."""
    return torch.stack([torch.full((3, 16, 16), level) for level in levels])


def _fn(url: str, **options: Any) -> vlm_judge.MetadataRewardFn:
    return vlm_judge.vlm_judge_factory(
        torch.device("cpu"), {"url": f"{url}/v1", "model": "judge-7b", "backoff": 0, **options}
    )


def test_yes_no_mode_is_the_probability_of_yes_among_yes_and_no(server: str) -> None:
    images = _grey(51 / 255, 204 / 255)  # m = 0.2, 0.8
    scores = _fn(server)(images, ["a red apple", "a blue car"], [{}, {}])
    # P(yes) / (P(yes) + P(no)) with P(yes) = m and P(no) = 1 - m: m itself ("Maybe" is ignored).
    assert scores.tolist() == pytest.approx([0.2, 0.8], abs=1e-6)
    sent = _log(server)[-2:]
    # The prompt travels inside the question, with the image as a PNG data URL, temperature 0.
    assert sorted("a red apple" in s["text"] or "a blue car" in s["text"] for s in sent) == [
        True,
        True,
    ]
    assert {s["head"] for s in sent} == {"data:image/png;base64"}
    assert {s["max_tokens"] for s in sent} == {1}
    assert {s["temperature"] for s in sent} == {0}
    assert {s["model"] for s in sent} == {"judge-7b"}


def test_score_mode_parses_the_final_score(server: str) -> None:
    fn = _fn(server, mode="score", image_size=32, template="Rate it. Caption: {prompt}")
    scores = fn(_grey(0.0, 1.0), ["dark", "light"], [{}, {}])
    # "Final Score: 1 + 4 m" with m clamped to [0.01, 0.99], then / 5.
    assert scores.tolist() == pytest.approx([(1 + 0.04) / 5, (1 + 3.96) / 5], abs=1e-4)
    sent = _log(server)[-2:]
    assert {tuple(s["size"]) for s in sent} == {(32, 32)}  # resized before sending
    assert all(s["text"].startswith("Rate it. Caption: ") for s in sent)


def test_a_failed_item_fails_the_batch_naming_its_prompt(server: str) -> None:
    fn = _fn(server, retries=1)
    with pytest.raises(RuntimeError, match=r"prompt 'a cat \[fail\]'.*HTTP 500"):
        fn(_grey(0.5, 0.5), ["a dog", "a cat [fail]"], [{}, {}])
    with pytest.raises(RuntimeError, match=r"prompt 'a cat \[mute\]'.*neither 'yes' nor 'no'"):
        fn(_grey(0.5), ["a cat [mute]"], [{}])
    with pytest.raises(RuntimeError, match=r"prompt 'a cat \[mute\]'.*no score matching"):
        _fn(server, mode="score")(_grey(0.5), ["a cat [mute]"], [{}])
    # A 500 that clears is retried, not failed.
    assert fn(_grey(0.6), ["a cow [flaky]"], [{}]).tolist() == pytest.approx([0.6], abs=0.01)


def test_an_unreachable_server_fails_and_never_scores_zero() -> None:
    process, url = _start()
    process.kill()
    process.wait()
    fn = _fn(url, retries=0, timeout=2)
    with pytest.raises(RuntimeError, match=r"prompt 'a fox'.*could not be reached"):
        fn(_grey(0.5), ["a fox"], [{}])


def test_bearer_key_and_the_outbound_rule() -> None:
    process, url = _start({"FAKE_KEY": "s3cret"})
    port = url.rsplit(":", 1)[1]
    try:
        with pytest.raises(RuntimeError, match="HTTP 401"):
            _fn(url)(_grey(0.5), ["a bee"], [{}])
        keyed = _fn(url, api_key="s3cret")
        assert keyed(_grey(0.4), ["a bee"], [{}]).tolist() == pytest.approx([0.4], abs=0.01)
        assert _log(url)[-1]["auth"] == "Bearer s3cret"
        # A studio worker's rule: the server's port is not listed -> refused before connecting.
        egress.install(parse_hosts("127.0.0.1:1"))
        with pytest.raises(EgressRefused, match="not a host the operator lets jobs connect to"):
            keyed(_grey(0.4), ["a bee"], [{}])
        egress.install(parse_hosts(f"127.0.0.1:{port}"))
        assert keyed(_grey(0.4), ["a bee"], [{}]).tolist() == pytest.approx([0.4], abs=0.01)
    finally:
        egress.install(None)
        process.kill()
        process.wait()


def test_registry_entry_scores(server: str) -> None:
    options = {"vlm_judge": {"url": f"{server}/v1", "model": "m"}}
    fn = load_rewards({"vlm_judge": 1.0}, options=options)["vlm_judge"]
    assert fn(_grey(0.2), ["x"], [{}]).tolist() == pytest.approx([0.2], abs=0.01)
    assert getattr(fn, "remote", False)  # its scoring overlaps the rollout, as `remote`'s does


def test_helpers_on_hand_made_answers() -> None:
    top = [
        {"token": "Yes", "logprob": math.log(0.3)},
        {"token": " yes", "logprob": math.log(0.1)},
        {"token": "NO", "logprob": math.log(0.4)},
    ]
    assert vlm_judge.yes_probability(top) == pytest.approx(0.4 / 0.8)  # (0.3 + 0.1) / 0.8
    with pytest.raises(ValueError, match="neither"):
        vlm_judge.yes_probability([{"token": "Hmm", "logprob": 0.0}])
    pattern = vlm_judge.re.compile(vlm_judge.SCORE_PATTERN)
    assert vlm_judge.parsed_score("ok. Final Score: 4.5", pattern, 5) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="no score"):
        vlm_judge.parsed_score("Final Score: 9", pattern, 5)  # out of the 1-5 scale


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"model": "m"}, "url"),
        ({"url": "ftp://x/v1", "model": "m"}, "url"),
        ({"url": "http://127.0.0.1:9/v1"}, "model"),
        ({"url": "http://127.0.0.1:9/v1", "model": "m", "mode": "stars"}, "mode"),
        ({"url": "http://127.0.0.1:9/v1", "model": "m", "template": "no slot"}, "template"),
        ({"url": "http://127.0.0.1:9/v1", "model": "m", "score_pattern": "("}, "score_pattern"),
        ({"url": "http://127.0.0.1:9/v1", "model": "m", "colour": 1}, "colour"),
    ],
)
def test_bad_options_name_their_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=rf"reward_options\.vlm_judge\.{field}"):
        vlm_judge.vlm_judge_factory(torch.device("cpu"), options)
