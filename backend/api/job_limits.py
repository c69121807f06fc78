"""The operator's lists at submit: a config sent through the API that would connect, read a
variable or open a file the operator did not allow is a 422 naming the field and the rule
(treegrpo/job_limits.py holds the rule; the worker applies it again before anything loads).
A size the model's own config files rule out is refused here too, read without torch."""

from __future__ import annotations

from pathlib import Path

from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from backend.crud.secrets import secret_hosts
from backend.settings import Settings
from treegrpo.config import BUILTIN_MODELS, ConfigError, RunConfig
from treegrpo.hub import local_folder
from treegrpo.job_limits import limit_problems
from treegrpo.models.sizes import check_requested_size
from treegrpo.secrets import secret_names


def _model_folder(config: RunConfig, settings: Settings) -> Path | None:
    """The folder `model` names, once the file rule allowed it; None for a built-in model or a
    folder that cannot be found here (the worker reports it)."""
    if config.model in BUILTIN_MODELS:
        return None
    limits = settings.job_limits
    try:
        return local_folder("model", config.model, cache_dir=limits.hub_cache, roots=limits.roots)
    except ConfigError:
        return None


def refuse_beyond_limits(session: Session, *, settings: Settings, config: RunConfig) -> None:
    """422 with every field that breaks a rule; nothing when the job may run."""
    as_dict = config.to_dict()
    hosts = secret_hosts(session, names=secret_names(config.reward_options))
    problems = limit_problems(as_dict, settings.job_limits, hosts)
    if not problems:
        try:
            check_requested_size(
                config.model,
                (config.sampling.height, config.sampling.width),
                _model_folder(config, settings),
            )
        except ConfigError as exc:
            problems.append(exc)
    if problems:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "config", problem.field),
                    "msg": problem.reason,
                    "type": "limit_error",
                    "input": None,
                }
                for problem in problems
            ]
        )
