"""Key material: executors' sealing key pair and the orchestrator's signing pair.

Secrets are sealed to the executors' public key (NaCl ``SealedBox``), so only an
executor can read them. Job entries are signed by the orchestrator (Ed25519) over
the target stream's name and the payload, so an entry cannot be forged, altered or
moved to another stream.

Files in a key directory (``deployctl keys init --dir DIR`` writes all four)::

    executor.key      box private key      0600   executors only
    executor.pub      box public key       0644   orchestrator side (and the platform)
    orchestrator.key  signing private key  0600   orchestrator side only
    orchestrator.pub  verify key           0644   executors
    trusted.d/*.pub   more verify keys an executor accepts (key rotation, several
                      orchestrators)

Each side needs only what it must hold:

- orchestrator side (``deploy``, ``retry``, the orchestrator service):
  ``orchestrator.key`` + ``executor.pub`` (:meth:`OrchestratorKeys.load`);
- executor: ``executor.key`` + ``orchestrator.pub`` (:meth:`ExecutorKeys.load`).

One machine: the first ``deploy``/``executor`` finds an empty (or missing) key
directory and creates both pairs there (:func:`ensure_local_keys`). Several machines:
run ``keys init`` once, give the executors ``executor.key`` + ``orchestrator.pub`` and
the orchestrators ``orchestrator.key`` + ``executor.pub``; a private half never leaves
the side that uses it. A directory that already holds any key file is never written
by the automatic path, so a split (possibly read-only) directory stays as it is, and
a missing file is reported by name.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.signing import SigningKey, VerifyKey

from deploystream.errors import KeyMaterialError

BOX_PRIVATE = "executor.key"
BOX_PUBLIC = "executor.pub"
SIGN_PRIVATE = "orchestrator.key"
SIGN_PUBLIC = "orchestrator.pub"
TRUSTED_DIR = "trusted.d"  # extra orchestrator verify keys an executor accepts


def default_keys_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "deploystream" / "keys"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def key_id(verify_key: VerifyKey) -> str:
    return hashlib.sha256(bytes(verify_key)).hexdigest()[:16]


def _write(path: Path, data: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(data + "\n")
    os.chmod(path, mode)


def init_keys(directory: Path) -> list[Path]:
    """Create whichever key pairs are missing; return the files created.

    A pair counts as present when either half is there: a directory holding only a
    distributed public half (``executor.pub`` on an orchestrator machine,
    ``orchestrator.pub`` on an executor) keeps it, and no new pair replaces it.
    Idempotent: a second call creates nothing.
    """
    try:
        return _init_keys(directory)
    except OSError as exc:
        raise KeyMaterialError(f"cannot create keys in {directory}: {exc}") from exc


def _init_keys(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    created: list[Path] = []
    if not (directory / BOX_PRIVATE).exists() and not (directory / BOX_PUBLIC).exists():
        box = PrivateKey.generate()
        _write(directory / BOX_PRIVATE, _b64(bytes(box)), 0o600)
        _write(directory / BOX_PUBLIC, _b64(bytes(box.public_key)), 0o644)
        created += [directory / BOX_PRIVATE, directory / BOX_PUBLIC]
    if not (directory / SIGN_PRIVATE).exists() and not (directory / SIGN_PUBLIC).exists():
        signing = SigningKey.generate()
        _write(directory / SIGN_PRIVATE, _b64(bytes(signing)), 0o600)
        _write(directory / SIGN_PUBLIC, _b64(bytes(signing.verify_key)), 0o644)
        created += [directory / SIGN_PRIVATE, directory / SIGN_PUBLIC]
    return created


def _read(path: Path) -> bytes:
    try:
        raw = base64.b64decode(path.read_text(encoding="ascii").strip(), validate=True)
    except FileNotFoundError as exc:
        raise KeyMaterialError(
            f"key file {path} not found: copy it from the machine that ran "
            f"`deployctl keys init`, or run `deployctl keys init --dir {path.parent}` "
            "on a single machine"
        ) from exc
    except (OSError, ValueError) as exc:
        raise KeyMaterialError(f"key file {path} is unreadable: {exc}") from exc
    if len(raw) != 32:
        raise KeyMaterialError(f"key file {path} does not hold a 32-byte key")
    return raw


@dataclass(frozen=True)
class OrchestratorKeys:
    """What the orchestrator side holds: the signing key and the executors' public key."""

    signing: SigningKey
    executor_public: PublicKey

    @classmethod
    def load(cls, directory: Path) -> OrchestratorKeys:
        return cls(
            signing=SigningKey(_read(directory / SIGN_PRIVATE)),
            executor_public=PublicKey(_read(directory / BOX_PUBLIC)),
        )

    @property
    def kid(self) -> str:
        return key_id(self.signing.verify_key)

    def seal(self, plaintext: str) -> str:
        return _b64(SealedBox(self.executor_public).encrypt(plaintext.encode("utf-8")))

    def sign(self, stream: str, payload: bytes) -> str:
        return _b64(self.signing.sign(_signed_bytes(stream, payload)).signature)

    def verify(self, stream: str, payload: bytes, signature: str, kid: str) -> None:
        """Check an entry signed with this side's own key (``retry`` re-signs only that)."""
        _verify({self.kid: self.signing.verify_key}, stream, payload, signature, kid)


@dataclass(frozen=True)
class ExecutorKeys:
    """What an executor holds: the box private key and the trusted verify keys."""

    box: PrivateKey
    trusted: dict[str, VerifyKey]

    @classmethod
    def load(cls, directory: Path) -> ExecutorKeys:
        box = PrivateKey(_read(directory / BOX_PRIVATE))
        trusted: dict[str, VerifyKey] = {}
        candidates = [directory / SIGN_PUBLIC]
        extra = directory / TRUSTED_DIR
        if extra.is_dir():
            candidates += sorted(extra.glob("*.pub"))
        for path in candidates:
            if path.exists():
                vk = VerifyKey(_read(path))
                trusted[key_id(vk)] = vk
        if not trusted:
            raise KeyMaterialError(f"no orchestrator verify key in {directory}")
        return cls(box=box, trusted=trusted)

    def open(self, sealed: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return SealedBox(self.box).decrypt(raw).decode("utf-8")
        except (ValueError, CryptoError) as exc:
            raise KeyMaterialError(
                "a sealed value cannot be opened with this executor's key"
            ) from exc

    def verify(self, stream: str, payload: bytes, signature: str, kid: str) -> None:
        """Raise :class:`KeyMaterialError` with a precise reason unless the entry is genuine."""
        _verify(self.trusted, stream, payload, signature, kid)


def _signed_bytes(stream: str, payload: bytes) -> bytes:
    return stream.encode("utf-8") + b"\n" + payload


def _verify(
    trusted: dict[str, VerifyKey], stream: str, payload: bytes, signature: str, kid: str
) -> None:
    if not signature or not kid:
        raise KeyMaterialError("unsigned entry")
    vk = trusted.get(kid)
    if vk is None:
        # The kid is attacker-controlled: keep the reason short.
        shown = kid if len(kid) <= 32 else kid[:32] + "…"
        raise KeyMaterialError(f"signed by unknown key {shown!r}")
    try:
        vk.verify(_signed_bytes(stream, payload), base64.b64decode(signature, validate=True))
    except (BadSignatureError, ValueError) as exc:
        raise KeyMaterialError("bad signature (entry forged, altered or moved)") from exc


_KEY_FILES = (BOX_PRIVATE, BOX_PUBLIC, SIGN_PRIVATE, SIGN_PUBLIC, TRUSTED_DIR)


def ensure_local_keys(directory: Path) -> list[Path]:
    """One-machine path: create both pairs on first use; the caller says where.

    Only a directory with no key material at all is initialised. One that holds any
    key file was set up on purpose (possibly split across machines, possibly
    read-only) and is left alone: loading then names whatever is missing.
    """
    try:
        if any((directory / name).exists() for name in _KEY_FILES):
            return []
    except OSError:
        return []  # unreadable: loading reports it precisely
    return init_keys(directory)
