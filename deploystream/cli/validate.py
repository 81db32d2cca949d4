"""Bad input named by its option, checked before anything is imported or connected.

Jobs are validated where they are built (:mod:`orchestrator.job_builder`), which
names the job *field* that is wrong and says in words what it allows; here that
field becomes the ``--option`` the operator typed. Missing required options are
reported all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from deploystream.errors import BadInputError, FieldError

# Job field (first part of its path) -> the option that sets it.
OPTION_OF: Mapping[str, str] = {
    "project_name": "--project",
    "project_id": "--project-id",
    "repo": "--repo",
    "ref": "--ref",
    "target": "--host",
    "service_port": "--service-port",
    "env": "--env",
    "secrets": "--secret",
    "extra_vars": "--extra-var",
    "playbook": "--playbook",
    "timeout_s": "--timeout",
    "idempotency_key": "--idempotency-key",
    "server_handle": "--server",
    "limit": "--failed-hosts",
    "hosts": "--host",
    "serial": "--serial",
    "max_fail_percent": "--max-fail-percent",
}
_ROOT = re.compile(r"^[A-Za-z_]+")


class OptionError(BadInputError):
    """Bad input for one option; the message starts with the option's name."""

    def __init__(self, option: str, detail: str) -> None:
        super().__init__(f"{option}: {detail}; nothing submitted")
        self.option = option


def named(exc: FieldError) -> BadInputError:
    """The same error, naming the option that set the field (when one did)."""
    found = _ROOT.match(exc.field)
    option = OPTION_OF.get(found.group(0)) if found else None
    if option is None:
        return BadInputError(f"{exc}; nothing submitted")
    return OptionError(option, exc.detail)


def require(given: Mapping[str, object], required: Mapping[str, str], hint: str = "") -> None:
    """Every option of ``required`` (option -> what it is) that ``given`` lacks, at once."""
    missing = [f"{option} ({what})" for option, what in required.items() if not given.get(option)]
    if missing:
        noun = "option" if len(missing) == 1 else "options"
        raise BadInputError(f"missing {noun} {', '.join(missing)}{hint}; nothing submitted")
