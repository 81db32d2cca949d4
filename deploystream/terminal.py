"""Text for a terminal: no control characters from services, hosts or other writers.

Service output (task output, health-check bodies, failure messages) reaches the
operator's terminal through events. Raw, ``ESC[2K`` erases lines, an OSC sequence
sets the window title or writes a hyperlink, and other C0/C1 controls move the cursor
or ring the bell. :func:`clean` removes every escape sequence and every C0/C1 control
character except newline and tab; :func:`clean_event` does so for each string of an
event. JSON output keeps the text exact: :func:`json_safe` escapes what JSON
encoders leave raw (DEL and the C1 range; C0 is escaped by the encoder already).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

_SEQUENCE = re.compile(
    r"""
      \x1b\[[0-?]*[ -/]*[@-~]?                # CSI: ESC [ params intermediates final
    | \x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?   # OSC, up to BEL or ST
    | \x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?  # DCS, SOS, PM, APC, up to ST
    | \x1b[ -/]*[0-~]?                        # any other escape (nF, Fp, Fe, Fs)
    | \x9b[0-?]*[ -/]*[@-~]?                  # 8-bit CSI
    | [\x90\x98\x9d\x9e\x9f][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?  # 8-bit DCS/SOS/OSC/PM/APC
    """,
    re.VERBOSE,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_RAW_IN_JSON = re.compile(rb"\x7f|\xc2[\x80-\x9f]")

T = TypeVar("T")


def json_safe(encoded: bytes) -> bytes:
    """UTF-8 JSON with DEL and C1 characters written as ``\\u00XX`` escapes (outside
    strings JSON is ASCII, so every match is inside a string)."""
    if not _RAW_IN_JSON.search(encoded):
        return encoded
    return _RAW_IN_JSON.sub(lambda m: b"\\u%04x" % ord(m.group().decode("utf-8")), encoded)


def clean(text: str) -> str:
    """``text`` without escape sequences and C0/C1 controls (newline and tab stay)."""
    if text.isprintable():
        return text
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, list):
        return [_walk(v) for v in value]
    if isinstance(value, dict):
        return {_walk(k): _walk(v) for k, v in value.items()}
    return value


def clean_event(event: T) -> T:
    """A copy of ``event`` (any msgspec Struct) with every string cleaned."""
    raw = msgspec.to_builtins(event)
    cleaned = _walk(raw)
    if cleaned == raw:
        return event
    return msgspec.convert(cleaned, type(event))
