"""A failed job's error: one line, naming the rule, quoting back only what the job sent, and the
traceback kept for the worker's log (workers/failures.py)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from treegrpo.config import ConfigError
from workers.failures import (
    FILE_ERROR,
    describe,
    save_traceback,
    sent_strings,
    take_traceback,
)


def test_quoted_values_the_job_did_not_send_are_blanked() -> None:
    sent = sent_strings({"model": "/models/mine", "reward": "remote", "tags": ["a"]})
    exc = ValueError(
        "model folder '/models/mine' holds a 'HushHushPipeline' pipeline: expected one of sd15, "
        "flux in model_index.json's _class_name"
    )
    assert describe(exc, sent) == (
        "ValueError: model folder '/models/mine' holds a '…' pipeline: expected one of sd15, "
        "flux in model_index.json's _class_name"
    )
    clip = ConfigError("reward_options.clipscore.path", 'config.json has model_type "llama"')
    assert describe(clip, sent) == (
        "invalid setting reward_options.clipscore.path: config.json has model_type '…'"
    )
    assert describe(RuntimeError("reward 'remote' failed"), sent) == (
        "RuntimeError: reward 'remote' failed"
    )


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(2, "No such file or directory", "/etc/shadow-ish"),
        IsADirectoryError(21, "Is a directory", "/etc"),
        PermissionError(13, "Permission denied", "/root/.ssh/id_rsa"),
        NotADirectoryError(20, "Not a directory", "/etc/passwd/x"),
    ],
)
def test_file_errors_do_not_tell_what_a_path_is(exc: OSError) -> None:
    assert describe(exc, sent_strings({"model": str(exc.filename)})) == FILE_ERROR


def test_an_error_is_one_line_and_bounded() -> None:
    text = describe(RuntimeError('first\n  File "/usr/lib/x.py", line 3\nlast'))
    assert "\n" not in text and text == "RuntimeError: first File '…', line 3 last"
    long = describe(RuntimeError("x" * 5000))
    assert len(long) == 2000 and long.endswith("...")


def test_the_traceback_is_saved_privately_and_taken_once(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    try:
        raise ValueError("deep inside")
    except ValueError as exc:
        save_traceback(exc, result)
        save_traceback(exc, result)  # a second rank appends its own
    saved = tmp_path / "traceback.txt"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    text = take_traceback(result)
    assert text is not None and text.count("Traceback (most recent call last)") == 2
    assert "ValueError: deep inside" in text
    assert take_traceback(result) is None and not saved.exists()
