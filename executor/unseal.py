"""Open a job's sealed values, each only if it is bound to that job.

Every sealed value (secrets and the GitHub token) carries its binding inside the box
(:mod:`contracts.sealing`); a value sealed for another project, repo or name, or for
none, is refused here. Intake calls this to refuse such a job before it runs (the
values are dropped at once); the run calls it again to get the values it uses.
"""

from __future__ import annotations

from contracts import DeployJob, Job
from contracts.sealing import GITHUB_TOKEN, BindingError, binding_for, unbind
from deploystream.errors import KeyMaterialError
from deploystream.keys import ExecutorKeys
from executor.runner import OpenedSecrets


class UnsealError(ValueError):
    """A sealed value of the job that cannot be used; the message names it."""


def _open(keys: ExecutorKeys, job: Job, name: str, sealed: str) -> str:
    try:
        return unbind(keys.open(sealed), binding_for(job, name))
    except KeyMaterialError as exc:
        raise UnsealError(f"{name}: {exc}") from exc
    except BindingError as exc:
        raise UnsealError(str(exc)) from exc


def open_secrets(keys: ExecutorKeys, job: Job) -> OpenedSecrets:
    values = {name: _open(keys, job, name, sealed) for name, sealed in job.secrets.items()}
    token = None
    if isinstance(job, DeployJob) and job.github_token:
        token = _open(keys, job, GITHUB_TOKEN, job.github_token)
    return OpenedSecrets(values=values, github_token=token)
