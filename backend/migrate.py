"""Alembic, driven from code: the only path by which the schema is made (`treegrpo migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from backend.db import engine_for
from backend.private_files import make_private_database
from backend.settings import get_settings

# alembic.ini and migrations/ sit at the top of the source tree, beside this package, so they are
# found from any working directory. The project is installed editable (`make install`, and the
# Docker images), which keeps `backend` importing from that tree.
ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"


def alembic_config(url: str | None = None) -> Config:
    if not ALEMBIC_INI.is_file():
        raise FileNotFoundError(
            f"{ALEMBIC_INI} not found: migrations ship with the source tree; install the project "
            "from it with `pip install -e .`"
        )
    url = url or get_settings().resolved_database_url
    # Config(file_=...) resolves %(here)s in alembic.ini to the file's folder, so script_location
    # does not depend on the working directory.
    config = Config(file_=str(ALEMBIC_INI))
    # ConfigParser interpolation would read a '%' in a password as a placeholder.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _prepare(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def upgrade(url: str | None = None, revision: str = "head") -> None:
    url = url or get_settings().resolved_database_url
    _prepare(url)
    command.upgrade(alembic_config(url), revision)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # Alembic's own engine made the file with the umask's mode: the user's alone.
        make_private_database(parsed.database)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine_for(url or get_settings().resolved_database_url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def tables(url: str | None = None) -> set[str]:
    with engine_for(url or get_settings().resolved_database_url).connect() as connection:
        return set(inspect(connection).get_table_names())
