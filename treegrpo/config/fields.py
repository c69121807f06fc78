"""How a setting is declared: once, with its default, its help text and its check.

A check object both validates a value (raising ConfigError that names the dotted field) and
says in words what it accepts, which is the "allowed" column of docs/CONFIG.md. So the docs
cannot drift from the validation: they are rendered from the same object.

    steps: int = setting(10, "T: denoising steps (NFE) per image.", Int(1, 500))

A `Section` checks each declared setting after construction, then the rules that tie several
settings together (`check_together`), each rule written once.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, ClassVar

from treegrpo.errors import ConfigError

MAX_NAME_CHARS = 200


def number_text(value: float) -> str:
    """1e6 -> "1e6", 10.0 -> "10", 2**31 - 1 -> "2^31-1", 10_000_000 -> "10^7" (docs)."""
    if isinstance(value, int) and value >= 2**16:
        if (value + 1) & value == 0:
            return f"2^{(value + 1).bit_length() - 1}-1"
        exponent = round(math.log10(value))
        if 10**exponent == value:
            return f"10^{exponent}"
    mantissa, marker, exponent_text = f"{value:g}".partition("e")
    return f"{mantissa}e{int(exponent_text)}" if marker else mantissa


class Check(ABC):
    """Validates one setting's value and says what the setting accepts."""

    @abstractmethod
    def __call__(self, name: str, value: Any) -> Any:
        """The value as stored (numbers become floats, lists tuples); ConfigError if invalid."""

    @abstractmethod
    def allowed(self) -> str:
        """What the setting accepts, in words (docs/CONFIG.md's "allowed" column)."""


@dataclasses.dataclass(frozen=True)
class Int(Check):
    """An integer (never a bool) in lo..hi; either bound may be open-ended (None)."""

    lo: int | None = None
    hi: int | None = None

    def __call__(self, name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(name, f"expected an integer, got {value!r}")
        if self.lo is not None and value < self.lo:
            raise ConfigError(name, f"must be >= {self.lo}, got {value}")
        if self.hi is not None and value > self.hi:
            raise ConfigError(name, f"must be <= {self.hi}, got {value}")
        return value

    def allowed(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{number_text(self.lo)}..{number_text(self.hi)}"
        if self.lo is not None:
            return f">= {number_text(self.lo)}"
        if self.hi is not None:
            return f"<= {number_text(self.hi)}"
        return "an integer"


@dataclasses.dataclass(frozen=True)
class Float(Check):
    """A finite number between lo and hi, each bound closed unless marked open; stored as float."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __call__(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(name, f"must be finite, got {value}")
        lo, hi = self.lo, self.hi
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            raise ConfigError(name, f"must be {'>' if self.lo_open else '>='} {lo}, got {value}")
        if hi is not None and (value >= hi if self.hi_open else value > hi):
            raise ConfigError(name, f"must be {'<' if self.hi_open else '<='} {hi}, got {value}")
        return value

    def allowed(self) -> str:
        if self.lo is not None and self.hi is not None:
            left = "(" if self.lo_open else "["
            right = ")" if self.hi_open else "]"
            return f"{left}{number_text(self.lo)}, {number_text(self.hi)}{right}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {number_text(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {number_text(self.hi)}"
        return "a number"


@dataclasses.dataclass(frozen=True)
class Choice(Check):
    """One of a fixed set of names."""

    options: tuple[str, ...]

    def __call__(self, name: str, value: Any) -> Any:
        if value not in self.options:
            raise ConfigError(name, f"must be one of {', '.join(self.options)}; got {value!r}")
        return value

    def allowed(self) -> str:
        return " | ".join(self.options)


@dataclasses.dataclass(frozen=True)
class Bool(Check):
    def __call__(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ConfigError(name, f"expected true or false, got {value!r}")
        return value

    def allowed(self) -> str:
        return "true | false"


@dataclasses.dataclass(frozen=True)
class Text(Check):
    """A non-empty string of at most `max_chars`; `what` names it in the docs."""

    what: str = "a name"
    max_chars: int = MAX_NAME_CHARS

    def __call__(self, name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ConfigError(name, f"expected a string, got {value!r}")
        if not value.strip():
            raise ConfigError(name, "must not be empty")
        if len(value) > self.max_chars:
            raise ConfigError(
                name, f"must be at most {self.max_chars} characters, got {len(value)}"
            )
        return value

    def allowed(self) -> str:
        return f"{self.what} (<= {self.max_chars} chars)"


@dataclasses.dataclass(frozen=True)
class Nullable(Check):
    """null, meaning "the algorithm's or the model's own", or a value `inner` accepts."""

    inner: Check

    def __call__(self, name: str, value: Any) -> Any:
        return None if value is None else self.inner(name, value)

    def allowed(self) -> str:
        return f"null | {self.inner.allowed()}"


def setting(default: Any, help: str, check: Check, *, note: str = "") -> Any:
    """A dataclass field declared once: default, help text and check. `note` adds, for the docs,
    a limit that another setting sets (the rule itself lives in `check_together`)."""
    metadata = {"help": help, "check": check, "note": note}
    if isinstance(default, dict | list | set):
        # A fresh copy per instance, as dataclasses require of mutable defaults.
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type[Section]) -> Any:
    """A nested group of settings (`tree.*`, `train.*`, ...), default-constructed."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


def allowed_text(spec: dataclasses.Field[Any]) -> str:
    """The "allowed" text of a declared setting: its check's words plus any note."""
    text = spec.metadata["check"].allowed()
    note = spec.metadata["note"]
    return f"{text}; {note}" if note else text


class Section:
    """Base of the frozen config dataclasses: each declared setting is checked (and stored as
    its check returns it), then `check_together` runs the rules between settings."""

    PREFIX: ClassVar[str] = ""  # "tree" for tree.*; "" for the top level

    def __post_init__(self) -> None:
        for spec in dataclasses.fields(self):  # type: ignore[arg-type]
            name = f"{self.PREFIX}.{spec.name}" if self.PREFIX else spec.name
            value = getattr(self, spec.name)
            if "section" in spec.metadata:
                if not isinstance(value, spec.metadata["section"]):
                    raise ConfigError(name, f"expected a {name} section")
                continue
            object.__setattr__(self, spec.name, spec.metadata["check"](name, value))
        self.check_together()

    def check_together(self) -> None:
        """Rules that involve more than one setting; raise ConfigError naming one of them."""


# The checks as functions, for option parsers outside the schema (treegrpo/rewards/).


def _int(name: str, value: Any, lo: int | None = None, hi: int | None = None) -> int:
    return Int(lo, hi)(name, value)


def _float(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    return Float(lo, hi, lo_open=lo_open)(name, value)


def _choice(name: str, value: Any, choices: Iterable[str]) -> str:
    return str(Choice(tuple(choices))(name, value))


def _text(name: str, value: Any, max_chars: int = MAX_NAME_CHARS) -> str:
    return Text(max_chars=max_chars)(name, value)


def _bool(name: str, value: Any) -> bool:
    return Bool()(name, value)
