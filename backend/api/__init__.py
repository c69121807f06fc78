"""The REST API (docs/API.md): `create_app(settings)` builds it; backend.main serves it."""

from backend.api.app import create_app

__all__ = ["create_app"]
