"""Declared extra vars: the only variables a job may set for a playbook.

Extra vars have the highest precedence in Ansible, so a job that could name any
variable could override any of the playbook's internals (its app dir, the command it
starts, ...). So every playbook ``NAME.yml`` of an executor's project dir declares
what a job may set in ``NAME.vars.toml`` next to it; everything else is refused (at
submit, and again by the executor). No file, or an empty one: no extra vars.

```toml
# sleep.vars.toml
[vars.sleep_s]
type = "float"          # str | int | float | bool | list (a list of strings)
min = 0                 # int, float
max = 3600
description = "Seconds to sleep."

[vars.color]
type = "str"
choices = ["red", "blue"]   # or: pattern = "^[a-z]+$" (full match), max-length = 64
```

Decoded strictly (an unknown key is an error naming it). A declaration may not name
a variable the executor sets itself or that steers connection, interpreter or
privilege (:func:`contracts.rules.reserved_var`). Executors advertise their
declarations in their presence hash (``deploystream.executor:<name>``, field
``vars``: :func:`encode_offers`), which is how the submit side learns them.
"""

from __future__ import annotations

import math
import re
import tomllib
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from contracts.rules import RuleError, reserved_var, shown

DECLARATION_SUFFIX = ".vars.toml"

VarName = Annotated[str, Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
VarType = Literal["str", "int", "float", "bool", "list"]

# Caps when a declaration sets none: a string of any length is never wanted.
DEFAULT_MAX_LENGTH = 1024
DEFAULT_MAX_ITEMS = 100

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class DeclarationError(ValueError):
    """A declaration file is not valid; the message names the file and the key."""


class VarSpec(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, rename="kebab"):
    """One variable a job may set: its type and limits."""

    type: VarType
    description: Annotated[str, Meta(max_length=500)] = ""
    min: int | float | None = None
    max: int | float | None = None
    pattern: Annotated[str, Meta(max_length=500)] | None = None
    max_length: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    max_items: Annotated[int, Meta(ge=1, le=10_000)] | None = None
    choices: list[str | int] | None = None

    def __post_init__(self) -> None:
        numeric = self.type in ("int", "float")
        textual = self.type in ("str", "list")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to int and float, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        if (self.pattern is not None or self.max_length is not None) and not textual:
            raise ValueError(f"pattern/max-length apply to str and list, not {self.type}")
        if self.max_items is not None and self.type != "list":
            raise ValueError("max-items applies to list only")
        if self.choices is not None:
            want = str if self.type == "str" else int if self.type == "int" else None
            if want is None:
                raise ValueError(f"choices apply to str and int, not {self.type}")
            if not self.choices or any(type(c) is not want for c in self.choices):
                raise ValueError(f"choices must be a non-empty list of {self.type} values")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern is not a valid regular expression: {exc}") from exc

    @property
    def summary(self) -> str:
        """``sleep_s: float 0..3600``: what the CLI lists as allowed."""
        parts: list[str] = [self.type]
        if self.choices is not None:
            parts.append("one of " + "|".join(str(c) for c in self.choices))
        elif self.min is not None or self.max is not None:
            lo = "" if self.min is None else self.min
            hi = "" if self.max is None else self.max
            parts.append(f"{lo}..{hi}")
        return " ".join(parts)

    # ------------------------------------------------------------ checks
    def _check_text(self, where: str, value: str) -> None:
        cap = self.max_length or DEFAULT_MAX_LENGTH
        if len(value) > cap:
            raise RuleError(f"{where}: longer than {cap} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise RuleError(f"{where}: {shown(value)} does not match {self.pattern}")

    def check(self, where: str, value: object) -> None:
        """Raise :class:`RuleError` unless ``value`` (as decoded from JSON) fits."""
        if self.type == "bool":
            if not isinstance(value, bool):
                raise RuleError(f"{where}: expected a bool, got {type(value).__name__}")
            return
        if self.type == "list":
            if not isinstance(value, list):
                raise RuleError(f"{where}: expected a list of strings, got {type(value).__name__}")
            cap = self.max_items or DEFAULT_MAX_ITEMS
            if len(value) > cap:
                raise RuleError(f"{where}: more than {cap} items")
            for i, item in enumerate(value):
                if not isinstance(item, str):
                    raise RuleError(f"{where}[{i}]: expected a string")
                self._check_text(f"{where}[{i}]", item)
            return
        if self.type == "str":
            if not isinstance(value, str):
                raise RuleError(f"{where}: expected a string, got {type(value).__name__}")
            self._check_text(where, value)
        elif self.type == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise RuleError(f"{where}: expected an int, got {type(value).__name__}")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleError(f"{where}: expected a number, got {type(value).__name__}")
        elif not math.isfinite(value):
            raise RuleError(f"{where}: {value} is not a finite number")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise RuleError(f"{where}: {shown(value)} is not one of {allowed}")
        if isinstance(value, int | float):
            if self.min is not None and value < self.min:
                raise RuleError(f"{where}: {value} is below the minimum {self.min}")
            if self.max is not None and value > self.max:
                raise RuleError(f"{where}: {value} is above the maximum {self.max}")

    def from_text(self, where: str, text: str) -> Any:
        """The typed value of a command-line ``K=V`` (then checked)."""
        value: Any = text
        try:
            if self.type == "int":
                value = int(text.strip())
            elif self.type == "float":
                value = float(text.strip())
                if value.is_integer() and "." not in text and "e" not in text.lower():
                    value = int(value)
        except ValueError:
            raise RuleError(f"{where}: {shown(text)} is not {self.type}") from None
        if self.type == "bool":
            word = text.strip().lower()
            if word not in _TRUE | _FALSE:
                raise RuleError(f"{where}: {shown(text)} is not true or false")
            value = word in _TRUE
        elif self.type == "list":
            value = [item.strip() for item in text.split(",")] if text.strip() else []
        self.check(where, value)
        return value


class PlaybookVars(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A playbook's declaration: the variables a job may set, by name."""

    vars: dict[VarName, VarSpec] = {}

    def __post_init__(self) -> None:
        reserved = sorted(name for name in self.vars if reserved_var(name))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)}: set by the executor or steering connection, "
                "interpreter or privilege; a job may never set them"
            )

    def allowed(self) -> str:
        if not self.vars:
            return "it accepts no extra vars"
        return "allowed: " + ", ".join(f"{n} ({s.summary})" for n, s in sorted(self.vars.items()))

    def check(self, playbook: str, extra_vars: dict[str, Any], *, label: str = "extra var") -> None:
        """Raise :class:`RuleError` naming the first variable that is not declared or
        does not fit, and listing what is allowed."""
        for name in sorted(extra_vars):
            spec = self.vars.get(name)
            if spec is None:
                raise RuleError(
                    f"{label} {shown(name)} is not declared by playbook {playbook!r} "
                    f"({self.allowed()}; see {playbook}{DECLARATION_SUFFIX})"
                )
            spec.check(f"{label} {name}", extra_vars[name])

    def from_texts(
        self, playbook: str, texts: dict[str, str], *, label: str = "extra var"
    ) -> dict[str, Any]:
        """Command-line ``K=V`` texts as typed, checked values."""
        out: dict[str, Any] = {}
        for name in sorted(texts):
            spec = self.vars.get(name)
            if spec is None:
                self.check(playbook, {name: texts[name]}, label=label)  # raises: undeclared
                continue
            out[name] = spec.from_text(f"{label} {name}", texts[name])
        return out


NO_VARS = PlaybookVars()


def parse_declaration(text: str, source: str) -> PlaybookVars:
    """A ``NAME.vars.toml`` file's text, strictly decoded."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeclarationError(f"{source}: not valid TOML: {exc}") from exc
    specs = raw.get("vars")
    if isinstance(specs, dict):  # name the variable, which msgspec's path cannot
        for name, spec in specs.items():
            try:
                msgspec.convert(spec, VarSpec)
            except msgspec.ValidationError as exc:
                raise DeclarationError(f"{source}: vars.{name}: {exc}") from exc
    try:
        return msgspec.convert(raw, PlaybookVars)
    except msgspec.ValidationError as exc:
        raise DeclarationError(f"{source}: {exc}") from exc


# What an executor advertises: playbook name -> its declaration.
Offers = dict[str, PlaybookVars]
_OFFERS_DECODER = msgspec.json.Decoder(Offers)


def encode_offers(offers: Offers) -> bytes:
    return msgspec.json.encode(offers)


def decode_offers(payload: bytes) -> Offers:
    """Raises :class:`msgspec.DecodeError` (or ValidationError) on a bad payload."""
    return _OFFERS_DECODER.decode(payload)
