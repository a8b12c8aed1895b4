"""One settings object for every role (env prefix ``XMODAL_``). Never built at import time."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("xmodal-home"), description="Root of files: index, media, db.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default is SQLite at HOME/catalog.db."
    )
    model: str = Field(default="house", description="Default encoder architecture or path.")
    pretrained: str | None = Field(default=None, description="Weights tag or local file.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N.")
    offline: bool = Field(default=False, description="Never contact a model hub.")
    api_key: SecretStr | None = Field(default=None, description="Key for write endpoints.")
    migrate_on_open: bool = Field(
        default=True, description="Migrate the catalog schema when a process opens it. "
        "Read-only replicas turn it off and refuse a schema behind the code: run "
        "`xmodal-index migrate` once per release instead.")
    mmap_index: bool = Field(
        default=False, description="Load IVF index versions memory-mapped (processes on a "
        "host share one page-cache copy); the first write copies the index into memory. "
        "xmodal-serve turns it on.")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'catalog.db').resolve()}"

    def collection_dir(self, name: str) -> Path:
        return self.home / "collections" / name

    @property
    def media_dir(self) -> Path:
        return self.home / "media"
