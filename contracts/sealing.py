"""What a sealed secret holds: its value and the request it was sealed for.

A secret is sealed (NaCl ``SealedBox``: encrypted and authenticated to the
executors' key) together with its *binding*: the job kind, the project, the
repository and the secret's own name. The executor opens it and compares the binding
with the job that carries it before the value is used, so a sealed value copied out
of one project's job into another job (another project, an attacker's repository,
another name) opens but is refused.

Anyone holding the executors' public key can seal, so a binding does not say *who*
sealed a value; it says what the value was sealed *for*, and that is what stops a
captured ciphertext from being re-aimed: altering the binding breaks the box.

Format: the sealed plaintext is a :class:`BoundSecret` as JSON (tag ``bound``). A
value sealed by older versions (the bare secret) carries no binding and is refused:
it is exactly what an attacker would copy out of an old job, so here security wins
over decoding old payloads (submit again to re-seal).
"""

from __future__ import annotations

import msgspec
from msgspec import Struct

from contracts.jobs import DeployJob, Job
from contracts.rules import repo_clone_url

# The name the GitHub clone token is bound under: never a valid secret (env) name,
# so a secret cannot be moved into the token's place or the token into a secret's.
GITHUB_TOKEN = ":github_token"  # noqa: S105 - a name, not a credential


class BindingError(ValueError):
    """A sealed value that is not bound to the job carrying it; says which part differs."""


class SecretBinding(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    kind: str  # "deploy" | "provision"
    project: str  # DeployJob.project_name; ProvisionJob.server_handle
    repo: str  # DeployJob.repo as its clone URL; "" for a provision job
    name: str  # the secret's name, or GITHUB_TOKEN


class BoundSecret(
    Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="format", tag="bound"
):
    binding: SecretBinding
    value: str


_decoder = msgspec.json.Decoder(BoundSecret)
_encoder = msgspec.json.Encoder()


def deploy_binding(project_name: str, repo: str, name: str) -> SecretBinding:
    """The binding of a deploy job's secret (what the platform seals with, too).

    ``owner/name`` and its GitHub clone URL are the same repository.
    """
    return SecretBinding(kind="deploy", project=project_name, repo=repo_clone_url(repo), name=name)


def provision_binding(server_handle: str, name: str) -> SecretBinding:
    return SecretBinding(kind="provision", project=server_handle, repo="", name=name)


def binding_for(job: Job, name: str) -> SecretBinding:
    """The binding a secret named ``name`` must carry to be used by ``job``."""
    if isinstance(job, DeployJob):
        return deploy_binding(job.project_name, job.repo, name)
    return provision_binding(job.server_handle, name)


def bound_plaintext(binding: SecretBinding, value: str) -> str:
    """The text to seal: the value together with its binding."""
    return _encoder.encode(BoundSecret(binding=binding, value=value)).decode("utf-8")


def unbind(plaintext: str, expected: SecretBinding) -> str:
    """The value of an opened box, if it is bound to ``expected``; else BindingError."""
    try:
        bound = _decoder.decode(plaintext)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BindingError(
            f"{expected.name}: sealed without a binding to its project and repo "
            "(an older format, or a value sealed for no request): seal it again"
        ) from exc
    if bound.binding != expected:
        differ = [
            field
            for field in ("kind", "project", "repo", "name")
            if getattr(bound.binding, field) != getattr(expected, field)
        ]
        raise BindingError(
            f"{expected.name}: sealed for another request ({', '.join(differ)} differ): "
            "a sealed value cannot be moved to another project, repo or name"
        )
    return bound.value
