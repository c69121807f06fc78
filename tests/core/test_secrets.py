"""Secrets are references in a config, never values: refused at validation, resolved by the
caller, redacted in answers and logs."""

from __future__ import annotations

import pytest

from treegrpo.config import ConfigError, RunConfig
from treegrpo.rewards.registry import load_rewards
from treegrpo.secrets import environment_resolver, redact, redact_text, resolve_options

REMOTE = {"reward": "remote"}


def test_a_key_in_a_config_is_refused_with_the_way_out() -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(
            {**REMOTE, "reward_options": {"remote": {"url": "http://h/s", "api_key": "abc"}}}
        )
    assert caught.value.field == "reward_options.remote.api_key"
    assert "api_key_env: NAME" in caught.value.reason
    assert "api_key_secret: NAME" in caught.value.reason
    for field in ("token", "hub_token", "password", "secret"):
        with pytest.raises(ConfigError, match=field):
            RunConfig.from_dict({**REMOTE, "reward_options": {"remote": {field: "x"}}})


def test_references_are_kept_and_checked() -> None:
    config = RunConfig.from_dict(
        {**REMOTE, "reward_options": {"remote": {"url": "http://h/s", "api_key_env": "RK"}}}
    )
    assert config.reward_options["remote"]["api_key_env"] == "RK"
    with pytest.raises(ConfigError, match="expected the name"):
        RunConfig.from_dict({**REMOTE, "reward_options": {"remote": {"api_key_secret": "a b"}}})


def test_references_resolve_outside_the_config() -> None:
    options = {"remote": {"url": "http://h/s", "api_key_env": "RK"}}
    resolved = resolve_options(options, environment_resolver({"RK": "value"}))
    assert resolved == {"remote": {"url": "http://h/s", "api_key": "value"}}
    assert options["remote"] == {"url": "http://h/s", "api_key_env": "RK"}  # untouched
    with pytest.raises(ConfigError, match="RK is not set"):
        resolve_options(options, environment_resolver({}))
    with pytest.raises(ConfigError, match="only be read by a studio worker"):
        resolve_options({"remote": {"api_key_secret": "n"}}, environment_resolver({}))
    with pytest.raises(ConfigError, match="nothing here can resolve"):
        load_rewards({"remote": 1.0}, options=options)


def test_redaction_of_answers_and_log_lines() -> None:
    config = {"reward_options": {"remote": {"url": "u", "api_key": "v1", "hub_token": None}}}
    assert redact(config) == {
        "reward_options": {"remote": {"url": "u", "api_key": "***", "hub_token": "***"}}
    }
    line = "options {'api_key': 'v1', 'url': 'u'} token=v2 password: v3 keyboard: ok"
    assert redact_text(line) == (
        "options {'api_key': '***', 'url': 'u'} token=*** password: *** keyboard: ok"
    )


def test_a_reward_of_a_set_can_be_scored_on_its_server() -> None:
    fns = load_rewards(
        {"digit_judge": 1.0, "boldness": 0.5},
        options={"digit_judge": {"server": "http://127.0.0.1:9/score", "batch_size": 4}},
    )
    assert getattr(fns["digit_judge"], "remote", False)  # a client, not the judge itself
    assert not getattr(fns["boldness"], "remote", False)
    with pytest.raises(ConfigError, match=r"reward_options.digit_judge.path.*belong to its server"):
        load_rewards(
            {"digit_judge": 1.0}, options={"digit_judge": {"server": "http://h/s", "path": "x"}}
        )
    with pytest.raises(ConfigError, match=r"reward_options.digit_judge.server"):
        load_rewards({"digit_judge": 1.0}, options={"digit_judge": {"server": "ftp://h"}})


def test_studio_references_need_the_operators_lists() -> None:
    """A job from the studio may name listed variables only, and a secret only for URLs among
    its hosts; a secret with no hosts (stored before hosts existed) goes nowhere."""
    from treegrpo.egress import parse_hosts
    from treegrpo.secrets import reference_problems

    url = "http://reward:8100/score"
    hosts = {"bound": parse_hosts("reward:8100"), "unbound": ()}

    def problems(options: dict[str, object]) -> list[tuple[str, str]]:
        found = reference_problems({"remote": options}, {"LISTED"}, hosts)
        return [(p.field, p.reason) for p in found]

    assert problems({"url": url, "api_key_env": "LISTED"}) == []
    assert problems({"url": url, "api_key_secret": "bound"}) == []
    [(field, reason)] = problems({"url": url, "api_key_env": "TREEGRPO_SECRETS_KEY"})
    assert field == "reward_options.remote.api_key_env"
    assert "TREEGRPO_SECRETS_KEY is not a variable" in reason and "LISTED" in reason
    [(_, reason)] = problems({"url": "http://other:8100/", "api_key_secret": "bound"})
    assert "may be sent only to reward:8100, not to other:8100" in reason
    [(_, reason)] = problems({"url": url, "api_key_secret": "unbound"})
    assert "may be sent only to none" in reason
    [(_, reason)] = problems({"url": "ftp://reward:8100/", "api_key_secret": "bound"})
    assert "goes only to a valid URL (outbound rule: only http://" in reason
    [(_, reason)] = problems({"api_key_secret": "bound"})
    assert "names none" in reason
    [(_, reason)] = problems({"url": url, "api_key_secret": "missing"})
    assert reason == "no secret named 'missing'"
    # The resolver gets where the value goes, so a worker can refuse on its own.
    seen: list[tuple[str, str, tuple[str, ...]]] = []
    resolve_options(
        {"remote": {"url": url, "api_key_env": "K"}},
        lambda kind, name, where: seen.append((kind, name, where)) or "v",
    )
    assert seen == [("env", "K", (url,))]
