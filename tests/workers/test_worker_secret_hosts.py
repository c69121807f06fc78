"""The worker's resolver (workers/secrets.py) refuses on its own, whatever checked the config
before it: a variable the operator did not list, and a secret sent to a host it is not bound to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.crud.secrets import SecretError, set_secret
from backend.db import session_scope
from backend.migrate import upgrade
from backend.settings import get_settings
from workers.secrets import resolve_secret


@pytest.fixture
def worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    for name, value in {
        "TREEGRPO_DATABASE_URL": url,
        "TREEGRPO_SECRETS_KEY": "sealing",
        "TREEGRPO_REFERABLE_ENV": "LISTED",
        "LISTED": "listed-value",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    with session_scope(url) as session:
        set_secret(session, name="k", value="sk-1", hosts=["reward:8100"], secrets_key="sealing")
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("worker_env")
def test_the_resolver_refuses_what_the_lists_do_not_allow() -> None:
    to_reward = ("http://reward:8100/score",)
    assert resolve_secret("env", "LISTED", to_reward) == "listed-value"
    with pytest.raises(LookupError, match="TREEGRPO_SECRETS_KEY is not a variable"):
        resolve_secret("env", "TREEGRPO_SECRETS_KEY", to_reward)
    assert resolve_secret("secret", "k", to_reward) == "sk-1"
    with pytest.raises(SecretError, match="may be sent only to reward:8100"):
        resolve_secret("secret", "k", ("http://127.0.0.1:9/",))
    with pytest.raises(SecretError, match="names none"):
        resolve_secret("secret", "k", ())
    with pytest.raises(SecretError, match="no secret named 'other'"):
        resolve_secret("secret", "other", to_reward)
