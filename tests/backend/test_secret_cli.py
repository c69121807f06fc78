"""`treegrpo secret set NAME --host H`: a secret is stored with the hosts it may be sent to,
`secret list` shows them (never the value), and the API reads only the hosts."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pytest

from backend.cli import register_secret
from backend.crud.secrets import secret_hosts
from backend.db import session_scope
from backend.migrate import upgrade
from backend.settings import Settings, get_settings, load_settings
from treegrpo.config import ConfigError
from treegrpo.egress import HostRule


def _run(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch) -> int:
    parser = argparse.ArgumentParser(prog="treegrpo")
    register_secret(parser.add_subparsers())
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    args = parser.parse_args(argv)
    get_settings.cache_clear()
    try:
        return int(args.func(args))
    finally:
        get_settings.cache_clear()


def test_a_secret_is_bound_to_its_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    monkeypatch.setenv("TREEGRPO_SECRETS_KEY", "sealing-key-for-tests")
    store = ["secret", "--url", url, "set", "reward-key"]
    with pytest.raises(SystemExit):  # --host is required: a secret must go somewhere named
        _run(store, "sk-1\n", monkeypatch)
    assert _run([*store, "--host", "http://x"], "sk-1\n", monkeypatch) == 2
    assert "--host" in capsys.readouterr().err
    assert _run([*store, "--host", "Reward:8100", "--host", "[::1]:*"], "sk-1\n", monkeypatch) == 0
    assert "for Reward:8100, [::1]:* only" in capsys.readouterr().err
    assert _run(["secret", "--url", url, "list"], "", monkeypatch) == 0
    listing = capsys.readouterr().out
    assert "reward-key" in listing and "reward:8100,[::1]:*" in listing and "sk-1" not in listing
    with session_scope(url) as session:
        hosts = secret_hosts(session, names=["reward-key", "other"])
    assert hosts == {"reward-key": (HostRule("reward", 8100), HostRule("::1", -1))}


def test_a_bad_host_list_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREEGRPO_OUTBOUND_HOSTS", "reward:8100,http://evil")
    with pytest.raises(ConfigError, match="TREEGRPO_OUTBOUND_HOSTS"):
        load_settings()
    limits = Settings(
        outbound_hosts="reward:8100", referable_env=" A, B ", model_roots="/m"
    ).job_limits
    assert limits.hosts == (HostRule("reward", 8100),)
    assert limits.referable_env == frozenset({"A", "B"}) and limits.roots == (Path("/m"),)
