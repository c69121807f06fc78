"""The `remote` reward client against a loopback HTTP server run in a thread.

The server's path picks its behaviour: /good scores each image by its prompt's length, /slow sleeps
past the client's timeout, /flaky answers 500 once then scores, /bad-request answers 400, and the
others return malformed answers.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from treegrpo.config import ConfigError
from treegrpo.rewards.registry import RewardFn, load_rewards

SLOW_S = 0.6  # longer than the 0.2 s timeout the slow tests use


@dataclass
class Server:
    url: str
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def hits(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path)


def _answer(server: Server, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
    scores = [float(len(p)) for p in body["prompts"]]
    if path == "/good":
        return 200, json.dumps({"scores": scores}).encode()
    if path == "/flaky":
        if server.hits("/flaky") == 1:
            return 500, b"<html>worker restarting</html>"
        return 200, json.dumps({"scores": scores}).encode()
    if path == "/down":
        return 503, b"model still loading"
    if path == "/bad-request":
        return 400, b'{"detail": "images must be 512x512"}'
    if path == "/not-json":
        return 200, b"<html>oops</html>"
    if path == "/short":
        return 200, json.dumps({"scores": scores[:-1]}).encode()
    if path == "/no-scores":
        return 200, json.dumps({"rewards": scores}).encode()
    if path == "/strings":
        return 200, json.dumps({"scores": [str(s) for s in scores]}).encode()
    if path == "/nan":
        return 200, b'{"scores": [' + b", ".join([b"NaN"] * len(scores)) + b"]}"
    return 404, b"no such mode"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.requests.append((self.path, body, dict(self.headers)))
            if self.path == "/slow":
                time.sleep(SLOW_S)
                status, payload = 200, b'{"scores": []}'
            else:
                status, payload = _answer(state, self.path, body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:  # the client gave up (timeout) and closed the connection
                pass

        def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _remote(url: str, **options: Any) -> RewardFn:
    return load_rewards({"remote": 1.0}, "cpu", {"remote": {"url": url, **options}})["remote"]


def _images(batch: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, channels, 8, 8, generator=torch.Generator().manual_seed(0))


def test_good_server_scores_in_batches(server: Server) -> None:
    prompts = [f"prompt {'x' * i}" for i in range(7)]
    images = _images(7)
    scores = _remote(f"{server.url}/good", batch_size=3, api_key="sk-test")(images, prompts)
    assert scores.dtype == torch.float32 and scores.shape == (7,)
    assert scores.tolist() == [float(len(p)) for p in prompts]
    assert server.hits("/good") == 3  # ceil(7 / 3)
    _, body, headers = server.requests[0]
    assert body["prompts"] == prompts[:3] and len(body["images"]) == 3
    assert headers["Authorization"] == "Bearer sk-test"
    # Images travel as base64 PNGs of the 8-bit pixels.
    png = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert png.format == "PNG" and png.mode == "RGB" and png.size == (8, 8)
    pixels = torch.from_numpy(np.array(png)).permute(2, 0, 1)  # (3, H, W) uint8
    assert torch.equal(pixels.float(), (images[0] * 255).round())


def test_grey_images_travel_as_greyscale_png(server: Server) -> None:
    _remote(f"{server.url}/good")(_images(2, channels=1), ["a", "b"])
    _, body, _ = server.requests[0]
    assert server.hits("/good") == 1  # default batch_size 16
    assert Image.open(io.BytesIO(base64.b64decode(body["images"][1]))).mode == "L"


def test_retries_a_server_error_then_succeeds(server: Server) -> None:
    scores = _remote(f"{server.url}/flaky", backoff=0.01)(_images(2), ["ab", "abc"])
    assert scores.tolist() == [2.0, 3.0]
    assert server.hits("/flaky") == 2


def test_gives_up_after_retries_on_server_errors(server: Server) -> None:
    with pytest.raises(RuntimeError) as info:
        _remote(f"{server.url}/down", retries=2, backoff=0.01)(_images(1), ["a"])
    message = str(info.value)
    assert f"remote reward at {server.url}/down" in message
    assert "HTTP 503 after 3 attempts" in message and "model still loading" in message
    assert server.hits("/down") == 3


def test_timeout_names_the_server_and_attempts(server: Server) -> None:
    start = time.monotonic()
    with pytest.raises(RuntimeError) as info:
        _remote(f"{server.url}/slow", timeout=0.2, retries=1, backoff=0.01)(_images(1), ["a"])
    assert time.monotonic() - start < 1.5
    assert str(info.value) == (
        f"remote reward at {server.url}/slow timed out after 2 attempts (timeout 0.2 s)"
    )
    assert server.hits("/slow") == 2


def test_client_errors_are_not_retried(server: Server) -> None:
    with pytest.raises(RuntimeError) as info:
        _remote(f"{server.url}/bad-request", backoff=0.01)(_images(1), ["a"])
    assert str(info.value) == (
        f"remote reward at {server.url}/bad-request answered HTTP 400: "
        '{"detail": "images must be 512x512"}'
    )
    assert server.hits("/bad-request") == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/not-json", "returned malformed JSON"),
        ("/short", "returned 1 scores for 2 images"),
        (
            "/no-scores",
            "returned JSON without a 'scores' list (got an object with keys ['rewards'])",
        ),
        ("/strings", "returned scores[0] = '1.0', not a number"),
        ("/nan", "returned scores[0] = nan, not a finite number"),
    ],
)
def test_malformed_answers_fail_at_once(server: Server, path: str, reason: str) -> None:
    with pytest.raises(RuntimeError) as info:
        _remote(f"{server.url}{path}", backoff=0.01)(_images(2), ["a", "bb"])
    assert str(info.value).startswith(f"remote reward at {server.url}{path} {reason}")
    assert server.hits(path) == 1


def test_unreachable_server_is_retried_then_reported() -> None:
    import socket

    with socket.socket() as sock:  # a loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(RuntimeError, match=r"could not be reached after 2 attempts"):
        _remote(f"http://127.0.0.1:{port}/score", retries=1, backoff=0.01)(_images(1), ["a"])


def test_credentials_in_the_url_stay_out_of_messages(server: Server) -> None:
    url = server.url.replace("http://", "http://user:secret@") + "/bad-request"
    with pytest.raises(RuntimeError) as info:
        _remote(url)(_images(1), ["a"])
    assert "secret" not in str(info.value) and f"{server.url}/bad-request" in str(info.value)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "url"),
        ({"url": "ftp://host/score"}, "url"),
        ({"url": "http:///score"}, "url"),
        ({"url": "http://h", "timeout": 0}, "timeout"),
        ({"url": "http://h", "retries": -1}, "retries"),
        ({"url": "http://h", "batch_size": 0}, "batch_size"),
        ({"url": "http://h", "api_key": ""}, "api_key"),
        ({"url": "http://h", "tiemout": 3}, "tiemout"),
    ],
)
def test_bad_options_raise_config_errors(options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_rewards({"remote": 1.0}, "cpu", {"remote": options})
    assert info.value.field == f"reward_options.remote.{key}"


def test_prompt_count_must_match(server: Server) -> None:
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        _remote(f"{server.url}/good")(_images(2), ["a"])
    assert not server.requests
