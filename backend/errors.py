"""Domain errors raised by CRUD and services; the API maps them to HTTP answers."""

from __future__ import annotations


class NotFound(LookupError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} not found")
        self.what = what
        self.ident = ident


class Conflict(Exception):
    """The request is valid but the resource's state forbids it (HTTP 409)."""


class InvalidParams(ValueError):
    """A kind-specific job parameter is wrong (HTTP 422); names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
