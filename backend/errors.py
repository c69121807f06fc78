"""Domain errors raised by CRUD and services; the API maps them to HTTP answers."""

from __future__ import annotations


class NotFound(LookupError):
    def __init__(self, what: str, ident: object) -> None:
        super().__init__(f"{what} {ident} not found")
        self.what = what
        self.ident = ident


class Conflict(Exception):
    """The request is valid but the resource's state forbids it (HTTP 409)."""


class QuotaExceeded(Exception):
    """The caller's key holds as many queued jobs as the operator allows (HTTP 429)."""

    def __init__(self, message: str, *, limit: int) -> None:
        super().__init__(message)
        self.limit = limit


class Forbidden(PermissionError):
    """The key is valid but its role may not do this (HTTP 403); names the role needed."""

    def __init__(self, message: str, *, needed: str) -> None:
        super().__init__(message)
        self.needed = needed


class InvalidParams(ValueError):
    """A kind-specific job parameter is wrong (HTTP 422); names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
