"""vlm_judge: a vision-language model on an OpenAI-compatible chat server judges each image.

Any server that speaks OpenAI's `POST <url>/chat/completions` with image content works (vLLM's
`vllm serve`, SGLang's `launch_server`, ...). Each image is one request: a user message holding
the image as a base64 data URL and the question (`template`, with `{prompt}` replaced by the
image's prompt), temperature 0. Two modes:

- `yes_no` (default): one completion token with its top log-probabilities; the score is
  P(yes) / (P(yes) + P(no)), each summed over the top tokens that read "yes" / "no" once
  stripped and lower-cased. That is sigmoid(logp(yes) - logp(no)), Flow-Factory's
  `vllm_evaluate` reward (X-GenGroup/Flow-Factory `src/flow_factory/rewards/vllm_evaluate.py`:
  `max_completion_tokens=1`, `logprobs`, `top_logprobs=20`), here with the prompt in the question.
- `score`: the answer's text is searched with `score_pattern` (default Flow-GRPO's UnifiedReward
  parse, `Final Score:\\s*([1-5](?:\\.\\d+)?)`, yifan123/flow_grpo `flow_grpo/rewards.py`
  `unifiedreward_score_sglang`) and the number divided by `max_score` (default 5, as there).

A failed item fails the batch with a RuntimeError naming its prompt: an unreachable server after
the retries, an HTTP error, an answer without "yes"/"no" among the top tokens, or a text the
pattern does not match. The references score such items 0.0 silently (Flow-GRPO's regex miss,
Flow-Factory's failed request), which teaches the policy from a network fault.

Options (`reward_options.vlm_judge`): `url` (required: the server's OpenAI base URL, e.g.
`http://127.0.0.1:8000/v1`), `model` (required: the served model name), `mode` (yes_no | score),
`template` (the question; must contain `{prompt}`), `top_logprobs` (default 20), `max_tokens`
(score mode, default 256), `score_pattern`, `max_score`, `image_size` (resize to this square
before sending, as Flow-GRPO's 512; default 0 = as generated), `timeout` (s, default 60),
`retries` (default 2), `backoff` (s, default 0.5), `concurrency` (requests in flight, default 8).
A bearer key is named with `api_key_env` / `api_key_secret` (treegrpo/secrets.py), never given.
In a studio worker every attempt resolves the host and checks it against the outbound rule
(treegrpo/egress.py `pinned_target`), as the `remote` reward does.

    fn = vlm_judge_factory(cpu, {"url": "http://127.0.0.1:8000/v1", "model": "Qwen2.5-VL-7B"})
    scores = fn(images, prompts, [{}] * len(prompts))  # (B,) float32 in [0, 1]
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

from treegrpo.config import ConfigError, _choice, _float, _int, _text
from treegrpo.egress import pinned_target
from treegrpo.rewards.clip import _check_keys
from treegrpo.rewards.jpeg import to_pil_images
from treegrpo.rewards.remote import _shown, _snippet, _url
from treegrpo.rewards.signature import Metadata, RewardFn

MODES = ("yes_no", "score")
OPTIONS = (
    "url",
    "model",
    "mode",
    "template",
    "top_logprobs",
    "max_tokens",
    "score_pattern",
    "max_score",
    "image_size",
    "timeout",
    "retries",
    "backoff",
    "concurrency",
    "api_key",  # what a resolved api_key_env / api_key_secret becomes
)
YES_NO_TEMPLATE = (
    "Does this image show what the caption describes, with good visual quality? "
    "Caption: {prompt}\nAnswer Yes or No."
)
# Flow-GRPO's UnifiedReward question (flow_grpo/rewards.py `unifiedreward_score_sglang`), reworded.
SCORE_TEMPLATE = (
    "You are given a text caption and an image generated from it. Judge the image on two "
    "criteria: how well it matches the caption (objects, attributes, relations), and its visual "
    "quality (clarity, detail, colour, aesthetics). Give a score from 1 to 5 after "
    "'Final Score:'.\nCaption: [{prompt}]"
)
SCORE_PATTERN = r"Final Score:\s*([1-5](?:\.\d+)?)"


def data_url(image: Any) -> str:
    """A PIL image as a `data:image/png;base64,...` URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def yes_probability(top_logprobs: Any) -> float:
    """P(yes) / (P(yes) + P(no)) over one position's top tokens; ValueError when neither is there.

    `top_logprobs` is OpenAI's list of {"token": str, "logprob": float}."""
    if not isinstance(top_logprobs, list):
        raise ValueError(f"top_logprobs is {type(top_logprobs).__name__}, expected a list")
    mass = {"yes": 0.0, "no": 0.0}
    for entry in top_logprobs:
        if not isinstance(entry, Mapping):
            raise ValueError(f"a top_logprobs entry is {type(entry).__name__}, not an object")
        token = str(entry.get("token", "")).strip().lower()
        logprob = entry.get("logprob")
        if token in mass:
            if isinstance(logprob, bool) or not isinstance(logprob, int | float):
                raise ValueError(f"token {token!r} has logprob {logprob!r}, not a number")
            mass[token] += math.exp(logprob)
    total = mass["yes"] + mass["no"]
    if not total > 0:
        shown = [str(e.get("token")) for e in top_logprobs[:5] if isinstance(e, Mapping)]
        raise ValueError(f"neither 'yes' nor 'no' among the top tokens (first: {shown})")
    return mass["yes"] / total


def parsed_score(text: str, pattern: re.Pattern[str], max_score: float) -> float:
    """The first number `pattern` captures in `text`, divided by max_score; ValueError if none."""
    match = pattern.search(text)
    if match is None:
        raise ValueError(f"no score matching {pattern.pattern!r} in the answer {_snippet(text)!r}")
    value = float(match.group(1) if match.groups() else match.group(0))
    if not math.isfinite(value):
        raise ValueError(f"the answer's score {value} is not finite")
    return value / max_score


def vlm_judge_factory(device: torch.device, options: Mapping[str, Any]) -> RewardFn:
    """Registry factory for `vlm_judge`: checks the options; makes no request until called."""
    _check_keys("vlm_judge", options, OPTIONS)
    where = "reward_options.vlm_judge"
    base = _url(f"{where}.url", options.get("url")).rstrip("/")
    endpoint = base + "/chat/completions"
    if options.get("model") is None:
        raise ConfigError(f"{where}.model", "missing: give the model name the server serves")
    model = _text(f"{where}.model", options["model"], max_chars=512)
    mode = _choice(f"{where}.mode", options.get("mode", "yes_no"), MODES)
    default_template = YES_NO_TEMPLATE if mode == "yes_no" else SCORE_TEMPLATE
    template = _text(f"{where}.template", options.get("template", default_template), 8192)
    if "{prompt}" not in template:
        raise ConfigError(f"{where}.template", "must contain {prompt}, where the prompt goes")
    top_logprobs = _int(f"{where}.top_logprobs", options.get("top_logprobs", 20), lo=2, hi=20)
    max_tokens = _int(f"{where}.max_tokens", options.get("max_tokens", 256), lo=1, hi=32768)
    pattern_text = _text(f"{where}.score_pattern", options.get("score_pattern", SCORE_PATTERN))
    try:
        pattern = re.compile(pattern_text)
    except re.error as exc:
        raise ConfigError(f"{where}.score_pattern", f"not a regular expression: {exc}") from None
    max_score = _float(f"{where}.max_score", options.get("max_score", 5.0), lo=0, lo_open=True)
    image_size = _int(f"{where}.image_size", options.get("image_size", 0), lo=0, hi=4096)
    timeout = _float(f"{where}.timeout", options.get("timeout", 60.0), lo=0, lo_open=True)
    retries = _int(f"{where}.retries", options.get("retries", 2), lo=0, hi=10)
    backoff = _float(f"{where}.backoff", options.get("backoff", 0.5), lo=0, hi=60)
    concurrency = _int(f"{where}.concurrency", options.get("concurrency", 8), lo=1, hi=256)
    headers = {"Content-Type": "application/json"}
    if options.get("api_key") is not None:
        headers["Authorization"] = f"Bearer {_text(f'{where}.api_key', options['api_key'], 2048)}"

    import httpx  # only when the reward is used

    client = httpx.Client(timeout=timeout, headers=headers)
    server = f"vlm_judge server at {_shown(endpoint)}"

    def body(prompt: str, image_url: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image_url}},
                        {"type": "text", "text": template.replace("{prompt}", prompt)},
                    ],
                }
            ],
            "temperature": 0,
        }
        if mode == "yes_no":
            request.update(max_tokens=1, logprobs=True, top_logprobs=top_logprobs)
        else:
            request["max_tokens"] = max_tokens
        return request

    def post(request: dict[str, Any]) -> Any:
        """The decoded answer, after retries of timeouts, connection errors and HTTP 5xx."""
        content = json.dumps(request).encode()
        failure = ""
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(backoff * 2 ** (attempt - 1))
            target, pin_headers, extensions = pinned_target(endpoint, server)
            try:
                response = client.post(
                    target, content=content, headers=pin_headers, extensions=extensions
                )
            except httpx.TimeoutException:
                failure = f"timed out after {retries + 1} attempts (timeout {timeout:g} s)"
                continue
            except httpx.TransportError as exc:
                failure = f"could not be reached after {retries + 1} attempts: {exc!r}"
                continue
            if response.status_code >= 500:
                failure = f"answered HTTP {response.status_code}: {_snippet(response.text)}"
                continue
            if not 200 <= response.status_code < 300:
                raise ValueError(f"answered HTTP {response.status_code}: {_snippet(response.text)}")
            try:
                return response.json()
            except ValueError:
                raise ValueError(f"returned malformed JSON: {_snippet(response.text)}") from None
        raise ValueError(failure)

    def judge(prompt: str, image_url: str) -> float:
        answer = post(body(prompt, image_url))
        try:
            choice = answer["choices"][0]
            if mode == "yes_no":
                return yes_probability(choice["logprobs"]["content"][0]["top_logprobs"])
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ValueError(
                f"answered without the expected fields: {_snippet(json.dumps(answer))}"
            ) from None
        if not isinstance(text, str):
            raise ValueError(f"answered content {text!r}, not text")
        return parsed_score(text, pattern, max_score)

    def scored(item: tuple[int, str, str]) -> float:
        index, prompt, image_url = item
        try:
            return judge(prompt, image_url)
        except (ValueError, OSError) as exc:
            raise RuntimeError(
                f"{server} could not judge image {index} (prompt {prompt!r}): {exc}"
            ) from exc

    def vlm_judge(images: Tensor, prompts: Sequence[str], metadata: Metadata = ()) -> Tensor:
        metadata = metadata or [{} for _ in prompts]  # no dataset rows: every image gets {}
        if not len(prompts) == len(metadata) == images.shape[0]:
            raise ValueError(
                f"got {images.shape[0]} images, {len(prompts)} prompts and {len(metadata)} "
                "metadata rows"
            )
        pil = [image.convert("RGB") for image in to_pil_images(images)]
        if image_size:
            pil = [image.resize((image_size, image_size)) for image in pil]
        items = [(i, p, data_url(im)) for i, (p, im) in enumerate(zip(prompts, pil, strict=True))]
        with ThreadPoolExecutor(max_workers=min(concurrency, len(items) or 1)) as pool:
            scores = list(pool.map(scored, items))  # the first failure raises, in order
        return torch.tensor(scores, dtype=torch.float32)

    vlm_judge.remote = True  # type: ignore[attr-defined]  # the trainer overlaps remote scoring
    return vlm_judge
