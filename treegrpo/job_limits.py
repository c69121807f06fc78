"""What a job sent to the studio may reach, as one check the API runs at submit and the worker
runs again before anything loads (torch-free).

The operator's lists (backend/settings.py reads them; the core reads no environment):
- outbound hosts (TREEGRPO_OUTBOUND_HOSTS): every URL of the config (treegrpo/egress.py);
- referable environment variables (TREEGRPO_REFERABLE_ENV) and the stored secrets' hosts:
  every `<field>_env` / `<field>_secret` reference (treegrpo/secrets.py);
- file roots (TREEGRPO_MODEL_ROOTS): every path of the config (treegrpo/file_roots.py).

`treegrpo train` on one's own machine has no such limits: nothing here runs there.

    limits = JobLimits(hosts=parse_hosts("127.0.0.1:8100"), referable_env=frozenset(),
                       roots=(Path("models"),), hub_cache=None)
    problems = limit_problems(config.to_dict(), limits, secret_hosts={"reward-key": rules})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from treegrpo.egress import RULE, HostRule, check_url
from treegrpo.errors import ConfigError
from treegrpo.file_roots import path_problems
from treegrpo.secrets import reference_problems

# Local stores MLflow would open with the worker's rights (file:, sqlite:, mysql+..., ...).
MLFLOW_FIELD = "tracking.mlflow_uri"


@dataclass(frozen=True)
class JobLimits:
    hosts: tuple[HostRule, ...]
    referable_env: frozenset[str]
    roots: tuple[Path, ...]
    hub_cache: Path | None


def url_fields(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(dotted field, value) of every URL a config names: tracking.mlflow_uri, and each reward
    option that is a URL or is called url or server."""
    out = []
    tracking = config.get("tracking") or {}
    if isinstance(tracking, Mapping) and tracking.get("mlflow_uri") is not None:
        out.append((MLFLOW_FIELD, str(tracking["mlflow_uri"])))
    for reward, options in (config.get("reward_options") or {}).items():
        if not isinstance(options, Mapping):
            continue
        for key, value in options.items():
            if isinstance(value, str) and ("://" in value or key in ("url", "server")):
                out.append((f"reward_options.{reward}.{key}", value))
    return out


def url_problems(config: Mapping[str, Any], hosts: Sequence[HostRule]) -> list[ConfigError]:
    problems = []
    for field, url in url_fields(config):
        try:
            if field == MLFLOW_FIELD and not url.startswith(("http://", "https://")):
                raise ConfigError(
                    field,
                    f"{RULE}: a job sent to the studio may log to an MLflow server over http:// "
                    "or https:// only, never to a file, database or other local store of the "
                    "worker (leave it null for a store in the job's own folder; `treegrpo "
                    "train` on your own machine may use any URI)",
                )
            check_url(field, url, hosts)
        except ConfigError as exc:
            problems.append(exc)
    return problems


def limit_problems(
    config: Mapping[str, Any],
    limits: JobLimits,
    secret_hosts: Mapping[str, Sequence[HostRule]] | None,
    base: Path | None = None,
) -> list[ConfigError]:
    """Every reason the resolved config (RunConfig.to_dict()) may not run as a studio job;
    empty when it may. `secret_hosts` maps stored secrets to their hosts (None: unchecked)."""
    return [
        *url_problems(config, limits.hosts),
        *reference_problems(config.get("reward_options") or {}, limits.referable_env, secret_hosts),
        *path_problems(config, limits.roots, limits.hub_cache, base),
    ]
