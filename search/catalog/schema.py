"""The catalog's schema: Alembic migrations run once, and a check for processes that must
not migrate (read-only replicas: `xmodal-index migrate` or a Kubernetes Job does it)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from search.errors import CatalogSchemaError

# pg_advisory_xact_lock key (any bigint agreed by every process): "xmodal" in ASCII.
MIGRATION_LOCK_KEY = 0x786D6F64616C


@dataclass(frozen=True)
class SchemaRevision:
    current: str | None  # None: an empty database
    head: str  # the newest revision this code ships

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


@dataclass(frozen=True)
class SchemaMigration:
    """What `xmodal-index migrate` did: the revision before and after."""

    before: str | None
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_dict(self) -> dict[str, str | bool | None]:
        return {"before": self.before, "after": self.after, "changed": self.changed}


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("search.catalog") / "migrations"))
    return config


def schema_revision(engine: Engine) -> SchemaRevision:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    return SchemaRevision(current, str(head))


def migrate(engine: Engine) -> SchemaMigration:
    """Bring the schema to the newest Alembic revision shipped in the package.

    On PostgreSQL the whole upgrade runs under a transaction-scoped advisory lock, so N
    processes starting at once (replicas, a Job and an init step) never race: one
    migrates, the others wait for its commit and then find nothing to do."""
    config = _alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return SchemaMigration(before, schema_revision(engine).head)


def require_current_schema(engine: Engine) -> SchemaRevision:
    """Refuse a catalog whose schema is not the one this code was written for."""
    revision = schema_revision(engine)
    if not revision.up_to_date:
        raise CatalogSchemaError(
            f"catalog schema is at revision {revision.current or '(empty database)'}, this "
            f"code needs {revision.head}: run `xmodal-index migrate` (or open the catalog "
            "with XMODAL_MIGRATE_ON_OPEN=true)")
    return revision
