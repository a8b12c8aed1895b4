"""SQLAlchemy 2 table models of the catalog. Queries live in `search.catalog.catalog`."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a real BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


MAX_EXTERNAL_ID = 512  # characters of an item's external id (a VARCHAR in the schema)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Modality(StrEnum):
    IMAGE = "image"
    TEXT = "text"


class Source(StrEnum):
    ORIGINAL = "original"
    GENERATED = "generated"


class Base(DeclarativeBase):
    pass


class CollectionRow(Base):
    __tablename__ = "collections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    model: Mapped[str] = mapped_column(String(512))
    pretrained: Mapped[str | None] = mapped_column(String(1024))
    weights_identity: Mapped[str] = mapped_column(String(256))
    dim: Mapped[int] = mapped_column(Integer)
    index_spec: Mapped[str | None] = mapped_column(String(128))
    # What the lexical index covers (search.catalog.lexical.LexicalSettings); null: defaults.
    lexical: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bumped by every write that can change which vectors a filter allows: cached
    # allowed-id sets (search.catalog.attributes) are valid while it stays put.
    write_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ItemRow(Base):
    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("collection_id", "external_id"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(MAX_EXTERNAL_ID))
    text: Mapped[str | None] = mapped_column(Text)
    image_ref: Mapped[str | None] = mapped_column(String(2048))
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    content_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class ItemAttributeRow(Base):
    """One scalar attribute of an item, typed, so filters use indexes instead of parsing
    JSON per row. `items.attributes` stays the source of truth; this is kept in step."""

    __tablename__ = "item_attributes"
    __table_args__ = (
        Index("ix_item_attributes_text", "collection_id", "key", "text_value", "item_id"),
        Index("ix_item_attributes_num", "collection_id", "key", "num_value", "item_id"),
        Index("ix_item_attributes_bool", "collection_id", "key", "bool_value", "item_id"),
        Index("ix_item_attributes_item", "item_id"),
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    text_value: Mapped[str | None] = mapped_column(String(1024))
    num_value: Mapped[float | None] = mapped_column(Float)
    bool_value: Mapped[bool | None] = mapped_column(Boolean)


class VectorRow(Base):
    """One embedding of one item; its primary key is its FAISS id."""

    __tablename__ = "vectors"
    __table_args__ = (
        UniqueConstraint("item_id", "modality", "source"),
        Index("ix_vectors_collection", "collection_id"),
        # FAISS ids must never be reused after a delete.
        {"sqlite_autoincrement": True},
    )
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    modality: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(16), default=Source.ORIGINAL.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IndexVersionRow(Base):
    __tablename__ = "index_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(64))
    spec: Mapped[str] = mapped_column(String(128))
    vector_count: Mapped[int] = mapped_column(BigInteger)
    model_identity: Mapped[str] = mapped_column(String(1024))
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class FailureRow(Base):
    __tablename__ = "failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    external_id: Mapped[str | None] = mapped_column(String(MAX_EXTERNAL_ID))
    stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GenerationRow(Base):
    """Provenance of a generated image: at most one per item."""

    __tablename__ = "generations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"),
                                         unique=True)
    generator: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(1024))
    prompt: Mapped[str] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    image_ref: Mapped[str] = mapped_column(String(2048))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LexicalWordRow(Base):
    """A word seen in a collection's lexical documents: the vocabulary typo correction
    draws from. Never shrinks on delete (a stale word only suggests a term that matches
    nothing)."""

    __tablename__ = "lexical_words"
    collection_id: Mapped[int] = mapped_column(
        ForeignKey("collections.id", ondelete="CASCADE"), primary_key=True)
    word: Mapped[str] = mapped_column(String(64), primary_key=True)


class LexicalIdentifierRow(Base):
    """An exact value of an item's identifier attribute (sku, gtin...), normalised."""

    __tablename__ = "lexical_identifiers"
    __table_args__ = (Index("ix_lexical_identifiers_value", "collection_id", "value"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    value: Mapped[str] = mapped_column(String(512))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
