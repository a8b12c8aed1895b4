"""One settings object for every role (env prefix ``XMODAL_``). Never built at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    media_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Directories media added by reference may be served from "
                    f"({os.pathsep}-separated); none: referenced files are never served.")

    @field_validator("media_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        """`XMODAL_MEDIA_ROOTS=/data/photos:/mnt/shop` (os.pathsep, like PATH)."""
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'catalog.db').resolve()}"

    def collection_dir(self, name: str) -> Path:
        return self.home / "collections" / name

    @property
    def media_dir(self) -> Path:
        return self.home / "media"
