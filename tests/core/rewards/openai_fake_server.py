"""A stand-in OpenAI-compatible chat server for the vlm_judge tests, run as its own process:

    python openai_fake_server.py   # prints its port, then serves until killed

POST /v1/chat/completions judges the request's image by its mean brightness m (clamped to
[0.01, 0.99]): with `logprobs`, one token whose top_logprobs are " Yes" (log m), "no" (log(1 - m))
and an unrelated "Maybe"; without, the text "... Final Score: <1 + 4 m>". Words in the question
change that: [fail] answers HTTP 500 every time, [flaky] answers 500 on its first request, [mute]
answers without yes/no tokens or a score. With FAKE_KEY set, a request without that bearer key
gets 401. GET /log lists what the server received (question, image size, model, auth header).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageStat

LOG: list[dict[str, Any]] = []
SEEN: set[str] = set()


def _answer(request: dict[str, Any], text: str, brightness: float) -> tuple[int, dict[str, Any]]:
    if "[fail]" in text:
        return 500, {"error": "model crashed"}
    if "[flaky]" in text and text not in SEEN:
        SEEN.add(text)
        return 500, {"error": "warming up"}
    m = min(max(brightness, 0.01), 0.99)
    if request.get("logprobs"):
        top = [{"token": "Maybe", "logprob": -3.0}]
        if "[mute]" not in text:
            top += [
                {"token": " Yes", "logprob": math.log(m)},
                {"token": "no", "logprob": math.log(1 - m)},
            ]
        content = {"content": [{"token": "Maybe", "logprob": -3.0, "top_logprobs": top}]}
        return 200, {"choices": [{"message": {"content": "Yes"}, "logprobs": content}]}
    said = "I cannot tell." if "[mute]" in text else f"Looks fine. Final Score: {1 + 4 * m:.4f}"
    return 200, {"choices": [{"message": {"role": "assistant", "content": said}}]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, LOG) if self.path == "/log" else self._send(404, {"error": "no route"})

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._send(404, {"error": f"no route {self.path}"})
            return
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization")
        key = os.environ.get("FAKE_KEY")
        if key and auth != f"Bearer {key}":
            self._send(401, {"error": "bad key"})
            return
        parts = request["messages"][0]["content"]
        text = next(p["text"] for p in parts if p["type"] == "text")
        url = next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")
        head, _, data = url.partition(",")
        image = Image.open(io.BytesIO(base64.b64decode(data))).convert("L")
        LOG.append(
            {
                "text": text,
                "head": head,
                "size": list(image.size),
                "model": request.get("model"),
                "max_tokens": request.get("max_tokens"),
                "temperature": request.get("temperature"),
                "auth": auth,
            }
        )
        status, payload = _answer(request, text, ImageStat.Stat(image).mean[0] / 255)
        self._send(status, payload)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
