"""The worker's side of the operator's lists (TREEGRPO_OUTBOUND_HOSTS, TREEGRPO_REFERABLE_ENV,
TREEGRPO_MODEL_ROOTS and the stored secrets' hosts; docs/API.md "Operator lists").

`enforce` runs in the job's child process before anything loads: it installs the outbound and
file rules for the process (the remote reward client, the MLflow tracker and the model and
reward loaders check them again at the point of use: a name is resolved and its addresses
checked right before each connection), then checks the whole config as the API did at submit.
So a job that reached the database some other way (a row written directly, lists narrowed
since its submit) still fails here, with the rule named, before it reads or sends anything.
"""

from __future__ import annotations

from backend.crud.secrets import secret_hosts
from backend.db import session_scope
from backend.settings import get_settings
from treegrpo import egress, file_roots
from treegrpo.config import RunConfig
from treegrpo.job_limits import limit_problems
from treegrpo.secrets import secret_names


class JobRefused(RuntimeError):
    """A job whose config breaks an operator's rule; the message names each field and rule."""


def enforce(config: RunConfig) -> None:
    limits = get_settings().job_limits
    egress.install(limits.hosts)
    file_roots.install(limits.roots)
    with session_scope() as session:
        hosts = secret_hosts(session, names=secret_names(config.reward_options))
    problems = limit_problems(config.to_dict(), limits, hosts)
    if problems:
        raise JobRefused("; ".join(str(problem) for problem in problems))
