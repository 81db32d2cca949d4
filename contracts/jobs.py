"""Jobs: what the orchestrator asks an executor to run.

A tagged union on ``kind``. Schema evolution follows msgspec's rules: a new field
gets a default and goes last; a field's type never changes; a breaking change is a
new tag. ``tests/test_contracts.py`` keeps old payloads decoding.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Struct

# A playbook is a *name* from the executor's allow-list, never a path.
PlaybookName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")]
# Hostname (RFC 1123 labels), IPv4 or bracket-free IPv6; no shell metacharacters.
HostName = Annotated[
    str,
    Meta(
        pattern=r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|[0-9A-Fa-f:.]{2,45})$",
        max_length=253,
    ),
]
RequestId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
Port = Annotated[int, Meta(ge=1, le=65535)]
UserName = Annotated[str, Meta(pattern=r"^[a-z_][a-z0-9_-]{0,31}$")]
# Sealed values are base64 text of a NaCl SealedBox; only executors can open them.
Sealed = Annotated[str, Meta(max_length=65536)]
Serial = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,3}%?$")]

LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "local"})


class Target(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where a playbook runs. ``localhost`` means Ansible's local connection."""

    host: HostName = "localhost"
    port: Port = 22
    user: UserName | None = None

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS


def parse_host_spec(text: str) -> tuple[str, int, str | None]:
    """``[USER@]HOST[:PORT]`` (IPv6: ``[ADDR]:PORT``) -> ``(host, port, user)``. Only the
    shape: the host and user are checked where a job is built. ValueError if malformed."""
    user, at, rest = text.rpartition("@")
    host, port = rest, "22"
    if rest.startswith("[") and "]" in rest:
        host, _, tail = rest[1:].partition("]")
        if tail:
            port = tail.removeprefix(":")
    elif rest.count(":") == 1:
        host, _, port = rest.partition(":")
    if not host or (at and not user) or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not [USER@]HOST[:PORT] (port 1-65535)")
    return host, int(port), user or None


class _JobBase(Struct, kw_only=True, tag_field="kind", forbid_unknown_fields=True):
    request_id: RequestId
    submitted_at: float
    playbook: PlaybookName
    target: Target = Target()
    idempotency_key: Annotated[str, Meta(max_length=200)] | None = None
    timeout_s: Annotated[int, Meta(ge=1, le=86_400)] = 900
    attempt: Annotated[int, Meta(ge=1)] = 1
    retry_of: RequestId | None = None
    extra_vars: dict[str, Any] = {}
    # name -> sealed value; opened only inside the executor.
    secrets: dict[str, Sealed] = {}
    # Ansible --limit, for "retry only the failed hosts".
    limit: list[HostName] = []
    # More hosts of the same run besides ``target`` (inventory: target first, then
    # these). New in v2 of the schema: absent in older payloads, so it defaults.
    hosts: list[Target] = []
    # When the job stops being valid (Unix time on the Redis server's clock, stamped by
    # the client at submit, signed with the rest). An executor refuses a job past it
    # and one without it (older payloads still decode; they are refused, see intake).
    expires_at: float | None = None
    # Rolling runs (Ansible's ``serial`` and ``max_fail_percentage``): hosts in
    # batches of N or N% of them; a batch failing beyond the limit stops the rollout.
    serial: Serial | None = None
    max_fail_percent: Annotated[int, Meta(ge=0, le=100)] | None = None


class DeployJob(_JobBase, tag="deploy"):
    project_name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    repo: Annotated[str, Meta(min_length=1, max_length=2048)]
    project_id: str | None = None
    ref: Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,199}$")] = "main"
    service_port: Port = 8000
    modules: list[str] = []
    # Plain, non-secret environment for the service.
    env: dict[str, str] = {}
    github_token: Sealed | None = None
    health_path: Annotated[str, Meta(pattern=r"^/[A-Za-z0-9_./-]*$")] = "/health"


class ProvisionJob(_JobBase, tag="provision"):
    server_handle: Annotated[str, Meta(min_length=1, max_length=200)]
    force_reinstall: bool = False
    is_recovery: bool = False
    # Trust a host whose key is not yet known on first contact (ssh accept-new) and
    # record it; a *changed* key still fails.
    accept_new_host_key: bool = False


Job = DeployJob | ProvisionJob


def job_kind(job: Job) -> str:
    """The union tag of a job (``deploy`` or ``provision``)."""
    return _kind_of(type(job))


@functools.cache
def _kind_of(cls: type[Struct]) -> str:
    # msgspec.inspect evaluates every annotation of the class (~2 ms): once per class.
    tag = msgspec.inspect.type_info(cls)
    assert isinstance(tag, msgspec.inspect.StructType)
    return str(tag.tag)
