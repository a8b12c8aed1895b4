"""One settings object for every role (env prefix ``XMODAL_``). Never built at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from search.models.query_runtime import QueryBackend, QueryRuntime


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
    query_threads: int | None = Field(
        default=None, ge=1, description="Intra-op threads per query encode; unset: by load.")
    query_text_int8: bool = Field(
        default=True, description="Encode text queries with the int8 text tower (CPU).")
    query_image_int8: bool = Field(
        default=False, description="Encode image queries with an int8 image tower (CPU).")
    query_backend: QueryBackend = Field(
        default=QueryBackend.ONNX, description="What runs the query towers (CPU): torch, "
        "or onnx (ONNX Runtime on copies exported once into HOME/cache/onnx).")

    hybrid_overlap: bool = Field(
        default=True, description="Run a hybrid query's vector side (encoder, ANN) on a "
        "second thread while its keyword side runs (the database): they overlap on a second "
        "core. Off: one after the other.")
    keyword_score_cap: int | None = Field(
        default=None, ge=10, le=100_000, description="Matches a keyword query's every-word stage "
        "scores at most (the newest on SQLite); more is closer to BM25 over every match "
        "and slower. Default: search.catalog.keyword.SCORE_CAP (300).")

    def query_runtime(self) -> QueryRuntime:
        return QueryRuntime(self.query_threads, self.query_text_int8, self.query_image_int8,
                            text_backend=self.query_backend, image_backend=self.query_backend,
                            onnx_cache=self.home / "cache" / "onnx")

    # storage lifecycle (search/lifecycle.py)
    compact_max_ops: int = Field(default=256, ge=1, description=(
        "Compact a space's embedding log once this many operation files follow its snapshot."))
    compact_min_ops: int = Field(default=16, ge=1, description=(
        "Below this many operation files, dead rows alone never trigger a compaction."))
    compact_dead_ratio: float = Field(default=0.5, gt=0, le=1, description=(
        "Compact when this share of the stored rows is dead (superseded or deleted)."))
    keep_index_versions: int = Field(default=2, ge=1, description=(
        "Index versions kept per space; older ones are pruned when a new one is saved."))
    media_gc_grace_s: float = Field(default=3600.0, ge=0, description=(
        "Unreferenced media younger than this are kept (a writer may be about to use them)."))
    model_gc_grace_s: float = Field(default=3600.0, ge=0, description=(
        "Embeddings and indexes of a model the collection no longer serves (left by "
        "`reindex --model`) are removed once untouched this long (a killed reindex "
        "resumes from them meanwhile)."))
    thumbnail_cache_mb: int = Field(default=256, ge=0, description=(
        "Size cap of the thumbnail cache; least recently used thumbnails go first."))
    maintenance_interval_s: float = Field(default=300.0, gt=0, description=(
        "How often a server compacts, collects media and trims thumbnails."))
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
