"""ConfigError, the one exception every setting check raises. Torch-free and imports nothing.

It lives outside the `treegrpo.config` package on purpose: `treegrpo.secrets` raises it and is
itself imported by the config's reward-option check, and importing any `treegrpo.config.*` module
runs the package's `__init__` (which imports that check) first. A leaf module keeps the imports
one way: config -> secrets -> errors.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """An impossible or unknown setting. `field` is the dotted name, `reason` says what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
