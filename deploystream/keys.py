"""Key material: executors' sealing pair, the orchestrator's and the executors' signing pairs.

Secrets are sealed to the executors' public key (NaCl ``SealedBox``), so only an
executor can read them. Job entries and cancels are signed by the orchestrator
(Ed25519) over the target stream's name and the payload, so an entry cannot be
forged, altered or moved to another stream. What executors write -- events, results,
dead letters, presence -- is signed with the executors' own Ed25519 key (see
:mod:`deploystream.proofs`), so the orchestrator's Redis credential cannot forge it.

Files in a key directory (``deployctl keys init --dir DIR`` writes all six)::

    executor.key       box private key      0600   executors only
    executor.pub       box public key       0644   orchestrator side (and the platform)
    orchestrator.key   signing private key  0600   orchestrator side only
    orchestrator.pub   verify key           0644   executors
    executor-sign.key  signing private key  0600   executors only
    executor-sign.pub  verify key           0644   orchestrator side, readers (tail, dlq)
    trusted.d/*.pub    more orchestrator verify keys an executor accepts (key rotation,
                       several orchestrators)
    executors.d/*.pub  more executor verify keys the orchestrator side accepts (an
                       executor, or a group of them, with an identity of its own)

Each side needs only what it must hold:

- orchestrator side (``deploy``, ``retry``, ``cancel``, the orchestrator service):
  ``orchestrator.key`` + ``executor.pub`` + ``executor-sign.pub``
  (:meth:`OrchestratorKeys.load`);
- executor: ``executor.key`` + ``executor-sign.key`` + ``orchestrator.pub``
  (:meth:`ExecutorKeys.load`);
- a reader (``tail``, ``dlq list``, ``status``): the public halves (:meth:`Trust.load`).

One executor identity is shared by default (one pair, made by ``keys init``): simple,
and what a compose replica set needs. Executors that should not be able to speak for
each other get pairs of their own (``keys init`` in a separate directory, its
``executor-sign.pub`` copied into ``executors.d/NAME.pub`` on the orchestrator side);
a reader then binds every event of an attempt to the key that signed its
``accepted``, so one executor's key cannot finish another executor's run.

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
from dataclasses import dataclass, field
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
EXEC_SIGN_PRIVATE = "executor-sign.key"
EXEC_SIGN_PUBLIC = "executor-sign.pub"
EXECUTORS_DIR = "executors.d"  # extra executor verify keys the orchestrator side accepts


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
    if not (directory / EXEC_SIGN_PRIVATE).exists() and not (directory / EXEC_SIGN_PUBLIC).exists():
        signing = SigningKey.generate()
        _write(directory / EXEC_SIGN_PRIVATE, _b64(bytes(signing)), 0o600)
        _write(directory / EXEC_SIGN_PUBLIC, _b64(bytes(signing.verify_key)), 0o644)
        created += [directory / EXEC_SIGN_PRIVATE, directory / EXEC_SIGN_PUBLIC]
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


def _verify_keys(
    directory: Path, main: str, extra_dir: str, first: VerifyKey | None = None
) -> dict[str, VerifyKey]:
    """``main`` (if there) plus ``extra_dir/*.pub``, by key id."""
    found: dict[str, VerifyKey] = {}
    if first is not None:
        found[key_id(first)] = first
    candidates = [directory / main]
    extra = directory / extra_dir
    if extra.is_dir():
        candidates += sorted(extra.glob("*.pub"))
    for path in candidates:
        if path.exists():
            vk = VerifyKey(_read(path))
            found[key_id(vk)] = vk
    return found


def _check(
    keys: dict[str, VerifyKey], signed: bytes, signature: bytes | str, kid: bytes | str
) -> str:
    """The key id that made ``signature`` over ``signed``; raise :class:`KeyMaterialError`."""
    sig = signature.decode("ascii", "replace") if isinstance(signature, bytes) else signature
    k = kid.decode("ascii", "replace") if isinstance(kid, bytes) else kid
    if not sig or not k:
        raise KeyMaterialError("unsigned")
    vk = keys.get(k)
    if vk is None:
        shown = k if len(k) <= 32 else k[:32] + "…"  # attacker-controlled: keep it short
        raise KeyMaterialError(f"signed by unknown key {shown!r}")
    try:
        vk.verify(signed, base64.b64decode(sig, validate=True))
    except (BadSignatureError, ValueError) as exc:
        raise KeyMaterialError("bad signature (forged, altered or moved)") from exc
    return k


@dataclass(frozen=True)
class Signer:
    """One Ed25519 signing key, with its id (what a verifier looks it up by)."""

    key: SigningKey

    @property
    def kid(self) -> str:
        return key_id(self.key.verify_key)

    def sign(self, message: bytes) -> str:
        return _b64(self.key.sign(message).signature)


@dataclass(frozen=True)
class Trust:
    """The verify keys a reader believes: executors' (events, results, dead letters,
    presence) and orchestrators' (cancels). Public halves only."""

    executors: dict[str, VerifyKey]
    orchestrators: dict[str, VerifyKey]

    @classmethod
    def load(cls, directory: Path, orchestrator: VerifyKey | None = None) -> Trust:
        executors = _verify_keys(directory, EXEC_SIGN_PUBLIC, EXECUTORS_DIR)
        if not executors:
            _read(directory / EXEC_SIGN_PUBLIC)  # raises, naming the missing file
        if orchestrator is None and (directory / SIGN_PRIVATE).exists():
            orchestrator = SigningKey(_read(directory / SIGN_PRIVATE)).verify_key
        orchestrators = _verify_keys(directory, SIGN_PUBLIC, TRUSTED_DIR, orchestrator)
        return cls(executors=executors, orchestrators=orchestrators)

    @classmethod
    def empty(cls) -> Trust:
        """Believes nothing: every signed claim reads as unverified."""
        return cls(executors={}, orchestrators={})

    def executor_signed(self, signed: bytes, signature: bytes | str, kid: bytes | str) -> str:
        """The executor key id that signed ``signed``; raise :class:`KeyMaterialError`."""
        return _check(self.executors, signed, signature, kid)

    def orchestrator_signed(self, signed: bytes, signature: bytes | str, kid: bytes | str) -> str:
        return _check(self.orchestrators, signed, signature, kid)


@dataclass(frozen=True)
class OrchestratorKeys:
    """What the orchestrator side holds: the signing key, the executors' public key,
    and the executors' verify keys."""

    signing: SigningKey
    executor_public: PublicKey
    trust: Trust = field(default_factory=Trust.empty)

    @classmethod
    def load(cls, directory: Path) -> OrchestratorKeys:
        signing = SigningKey(_read(directory / SIGN_PRIVATE))
        return cls(
            signing=signing,
            executor_public=PublicKey(_read(directory / BOX_PUBLIC)),
            trust=Trust.load(directory, orchestrator=signing.verify_key),
        )

    @property
    def kid(self) -> str:
        return key_id(self.signing.verify_key)

    @property
    def signer(self) -> Signer:
        return Signer(self.signing)

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
    # Signs what this executor writes (events, results, dead letters, presence).
    signer: Signer
    peers: Trust = field(default_factory=Trust.empty)

    @classmethod
    def load(cls, directory: Path) -> ExecutorKeys:
        box = PrivateKey(_read(directory / BOX_PRIVATE))
        trusted = _verify_keys(directory, SIGN_PUBLIC, TRUSTED_DIR)
        if not trusted:
            raise KeyMaterialError(f"no orchestrator verify key in {directory}")
        signer = Signer(SigningKey(_read(directory / EXEC_SIGN_PRIVATE)))
        # Whose results it believes before skipping a request as done: its own key, and
        # with identities of their own, the other executors' (executors.d/*.pub).
        own = signer.key.verify_key
        peers = Trust(_verify_keys(directory, EXEC_SIGN_PUBLIC, EXECUTORS_DIR, own), {})
        return cls(box=box, trusted=trusted, signer=signer, peers=peers)

    def open(self, sealed: str) -> str:
        try:
            raw = base64.b64decode(sealed, validate=True)
            return SealedBox(self.box).decrypt(raw).decode("utf-8")
        except (ValueError, CryptoError) as exc:
            raise KeyMaterialError(
                "a sealed value cannot be opened with this executor's key"
            ) from exc

    def verify(self, stream: str, payload: bytes, signature: str, kid: str) -> None:
        """Raise :class:`KeyMaterialError` with a precise reason unless the entry (a job,
        a cancel) is genuine: signed by a trusted orchestrator for this stream."""
        _verify(self.trusted, stream, payload, signature, kid)


def signed_bytes(stream: str, payload: bytes) -> bytes:
    """What the orchestrator signs for an entry of ``stream`` (a job, a cancel)."""
    return _signed_bytes(stream, payload)


def _signed_bytes(stream: str, payload: bytes) -> bytes:
    return stream.encode("utf-8") + b"\n" + payload


def _verify(
    trusted: dict[str, VerifyKey], stream: str, payload: bytes, signature: str, kid: str
) -> None:
    if not signature or not kid:
        raise KeyMaterialError("unsigned entry")
    try:
        _check(trusted, _signed_bytes(stream, payload), signature, kid)
    except KeyMaterialError as exc:
        if "bad signature" in str(exc):
            raise KeyMaterialError("bad signature (entry forged, altered or moved)") from exc
        raise


_KEY_FILES = (
    BOX_PRIVATE,
    BOX_PUBLIC,
    SIGN_PRIVATE,
    SIGN_PUBLIC,
    TRUSTED_DIR,
    EXEC_SIGN_PRIVATE,
    EXEC_SIGN_PUBLIC,
    EXECUTORS_DIR,
)


def ensure_local_keys(directory: Path) -> list[Path]:
    """One-machine path: create both pairs on first use; the caller says where.

    Only a directory with no key material at all is initialised. One that holds any
    key file was set up on purpose (possibly split across machines, possibly
    read-only) and is left alone: loading then names whatever is missing. The one
    exception: a one-machine directory made before executors signed (both private
    halves there, no executor signing pair) gets that pair.
    """
    try:
        if any((directory / name).exists() for name in _KEY_FILES):
            one_machine = all((directory / name).exists() for name in (BOX_PRIVATE, SIGN_PRIVATE))
            executor_pair = (directory / EXEC_SIGN_PRIVATE).exists() or (
                directory / EXEC_SIGN_PUBLIC
            ).exists()
            if one_machine and not executor_pair:
                return init_keys(directory)
            return []
    except OSError:
        return []  # unreadable: loading reports it precisely
    return init_keys(directory)
