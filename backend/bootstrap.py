"""The embedded deployment's local API key, so a laptop user can submit jobs right away.

The database keeps only the key's hash, so the plaintext lives in one file only the user can
read: data_dir/local-api-key (mode 0600). `treegrpo serve` and `treegrpo up` print it at start;
`treegrpo submit` reads it when no key is given.

    key = ensure_local_key(settings)   # an existing valid key, or a new one named "local"
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from backend import crud
from backend.db import session_scope
from backend.errors import NotFound
from backend.models import KeyRole
from backend.settings import Settings, get_settings

LOCAL_KEY_NAME = "local"
LOCAL_KEY_FILE = "local-api-key"


def local_key_path(settings: Settings | None = None) -> Path:
    settings = settings or get_settings()
    return (settings.data_dir / LOCAL_KEY_FILE).resolve()


def read_local_key(settings: Settings | None = None) -> str | None:
    """The key saved in data_dir/local-api-key, or None (no file, or unreadable)."""
    try:
        text = local_key_path(settings).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only, replacing it atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.chmod(temporary, 0o600)  # whatever the umask said
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise


def ensure_local_key(settings: Settings | None = None) -> str:
    """The local user's API key (an admin: the laptop's one user runs the whole studio): the
    saved one while it is still valid, else a new key named "local" (older "local" keys, whose plaintext is lost, are revoked). The database must be
    migrated. Returns the plaintext, which is also in local_key_path(settings)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    path = local_key_path(settings)
    saved = read_local_key(settings)
    with session_scope(url) as session:
        if saved and crud.verify_api_key(session, key=saved) is not None:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return saved
        # Any active "local" key's plaintext is gone with the file: retire it for a new one.
        with contextlib.suppress(NotFound):
            crud.revoke_api_key(session, name=LOCAL_KEY_NAME)
        _, key = crud.create_api_key(session, name=LOCAL_KEY_NAME, role=KeyRole.admin)
    _write_private(path, key)
    return key
