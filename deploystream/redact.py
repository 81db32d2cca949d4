"""Redaction: no secret value reaches an event, a log line or an error text.

A :class:`Redactor` knows one job's secret values and masks each wherever it
appears, in the forms a value takes on its way through tools:

- as is, and each line of a multi-line value (output is published line by line);
- URL-encoded (``quote``/``quote_plus``), JSON-escaped, Python-``repr``-escaped;
- base64 (standard and URL-safe alphabets), also *inside* a longer base64 text
  (e.g. ``Authorization: Basic base64("x-access-token:" + token)``): for each of
  the three byte alignments the characters that depend on the value alone are
  masked.

Shapes that are always secret are masked whatever the job: GitHub tokens, private
key blocks, ``user:password@`` in URLs, ``Authorization`` header values, AWS access
key ids, Slack tokens.

:data:`DEFAULT` is what log processors use. It masks the always-secret shapes plus
every value registered with :func:`active` (process-wide, thread-safe), so a service
that holds a job's secrets while it runs can make its log lines safe too::

    with redact.active(secret_values):
        run_the_job()

Values shorter than 4 characters are not masked (they would mask ordinary words);
no code path logs a secret on purpose, this is the safety net.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import quote, quote_plus

MASK = "***"
_ALWAYS = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255})\b"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"  # user:password@ in URLs
    r"|(?<=[Aa]uthorization: )(?:Basic|Bearer|token) [A-Za-z0-9+/=._~-]+"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}",  # Slack tokens
    re.DOTALL,
)
# Values this short would mask ordinary words; they are still never logged on purpose.
_MIN_LEN = 4
# A base64 core shorter than this is too likely to occur by chance.
_MIN_B64_CORE = 8


def _b64_cores(raw: bytes) -> Iterator[str]:
    """The base64 text of ``raw`` at each byte alignment, minus edge characters that
    also depend on the bytes around it (so it matches inside any longer base64)."""
    for shift in range(3):
        padded = b"\0" * shift + raw
        n = len(padded)
        keep = 4 * (n // 3) + (0, 1, 2)[n % 3]
        skip = (0, 2, 3)[shift]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            core = encode(padded).decode("ascii")[skip:keep]
            if len(core) >= _MIN_B64_CORE:
                yield core


def variants(value: str) -> set[str]:
    """Every form of ``value`` that is masked (see the module docstring)."""
    if len(value) < _MIN_LEN:
        return set()
    out = {value}
    if "\n" in value or "\r" in value:
        out.update(
            line.strip() for line in value.splitlines() if len(line.strip()) >= _MIN_B64_CORE
        )
    raw = value.encode("utf-8")
    out.add(quote(value, safe=""))
    out.add(quote_plus(value, safe=""))
    out.add(base64.b64encode(raw).decode("ascii"))
    out.add(base64.urlsafe_b64encode(raw).decode("ascii"))
    out.update(_b64_cores(raw))
    # Tools echo a value inside JSON or a Python repr, escaped.
    out.add(json.dumps(value)[1:-1])
    out.add(json.dumps(value, ensure_ascii=False)[1:-1])
    out.add(repr(value)[1:-1])
    out.add(value.replace("\\", "\\\\").replace('"', '\\"'))
    return {v for v in out if len(v) >= _MIN_LEN}


def _compile(values: Iterable[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for value in values:
        forms |= variants(value)
    ordered = sorted(forms, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None


class Redactor:
    """Masks one job's secret values (all their forms) and the always-secret shapes."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._exact = _compile(secrets)

    def __call__(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(MASK, text)
        return _ALWAYS.sub(MASK, text)


class _ActiveSecrets:
    """Secret values currently held by this process (reference-counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Counter[str] = Counter()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> list[str]:
        added = [v for v in values if len(v) >= _MIN_LEN]
        with self._lock:
            self._values.update(added)
            self._pattern = _compile(self._values)
        return added

    def remove(self, values: list[str]) -> None:
        with self._lock:
            self._values.subtract(values)
            self._values = Counter({v: n for v, n in self._values.items() if n > 0})
            self._pattern = _compile(self._values)

    def __call__(self, text: str) -> str:
        pattern = self._pattern  # one atomic read; rebuilt, never mutated
        if pattern is not None:
            text = pattern.sub(MASK, text)
        return _ALWAYS.sub(MASK, text)


DEFAULT = _ActiveSecrets()
"""Always-secret shapes plus every value registered with :func:`active`."""


@contextmanager
def active(values: Iterable[str]) -> Iterator[None]:
    """Mask ``values`` in everything :data:`DEFAULT` redacts while the block runs."""
    added = DEFAULT.add(values)
    try:
        yield
    finally:
        DEFAULT.remove(added)
