"""Redaction: no secret value reaches an event, a log line or an error text.

A :class:`Redactor` knows one job's secret values (exact matches, also their
base64/URL-encoded forms) plus shapes that are always secret: GitHub tokens and
private key blocks.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"
_ALWAYS = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,255}|github_pat_[A-Za-z0-9_]{20,255})\b"
    r"|(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",  # user:password@ in URLs
    re.DOTALL,
)
# Values this short would mask ordinary words; they are still never logged on purpose.
_MIN_LEN = 4


class Redactor:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        variants: set[str] = set()
        for value in secrets:
            if len(value) < _MIN_LEN:
                continue
            variants.add(value)
            variants.add(quote(value, safe=""))
            variants.add(base64.b64encode(value.encode()).decode())
            # Ansible may echo a value inside JSON with escaped quotes/backslashes.
            variants.add(value.replace("\\", "\\\\").replace('"', '\\"'))
        ordered = sorted(variants, key=len, reverse=True)
        self._exact = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None

    def __call__(self, text: str) -> str:
        if self._exact is not None:
            text = self._exact.sub(MASK, text)
        return _ALWAYS.sub(MASK, text)


DEFAULT = Redactor()
