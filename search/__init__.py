"""xmodal's engine: CLIP encoders, FAISS vector index, SQL catalog and the query engine.

This module is the public face: `api/` and `indexer/` import only the names listed in
`__all__` (tests/test_imports.py checks it). Inside the engine, modules import each other
by their full paths. The map:

- `search.catalog` — the SQL catalog (items, vectors, jobs, failures) and its migrations.
- `search.vectors` — FAISS indexes, the float16 embedding store, index versions on disk.
- `search.models` — encoders (`load_encoder`), image generators, configs, shipped weights.
- `search.collection` — a collection's write path, the write lock, missing-image backfill.
- `search.media` — safe image decoding and the media store.
- `search.query`, `search.engine`, `search.filters` — the query path.
- `search.workspace`, `search.live`, `search.settings`, `search.errors`.
"""

from search import errors
from search.catalog.catalog import migrate_catalog
from search.catalog.lookup import ItemRecord, items_by_id
from search.catalog.models import Modality
from search.catalog.schema import SchemaMigration
from search.collection.backfill import generate_missing, item_seed
from search.collection.collection import AddReport, Collection
from search.collection.preparing import (
    ItemFailure,
    NewItem,
    PrepareContext,
    PreparedItem,
    content_hash,
    embed_prepared,
    prepare_or_fail,
)
from search.engine import Searcher
from search.errors import (
    CorruptImageError,
    ImageTooLargeError,
    InvalidInputError,
    InvalidQueryError,
    UnknownCollectionError,
    UnknownItemError,
    XmodalError,
)
from search.filters import parse_filters
from search.live import Change, CollectionRefresher
from search.media import DecodeLimits, MiB, decode_image
from search.models.encoder import Encoder, load_encoder, resolve_device
from search.models.generator import ImageGenerator, load_generator
from search.query import MAX_K, Fusion, Hit, QueryPart, SearchQuery, SearchResult, Target
from search.settings import Settings
from search.workspace import Workspace

__all__ = [
    "MAX_K", "AddReport", "Change", "Collection", "CollectionRefresher", "CorruptImageError",
    "DecodeLimits", "Encoder", "Fusion", "Hit", "ImageGenerator", "ImageTooLargeError",
    "InvalidInputError", "InvalidQueryError", "ItemFailure", "ItemRecord", "MiB", "Modality",
    "NewItem", "PrepareContext", "PreparedItem", "QueryPart", "SearchQuery", "SearchResult",
    "SchemaMigration", "Searcher", "Settings", "Target", "UnknownCollectionError",
    "UnknownItemError", "Workspace", "XmodalError", "content_hash", "decode_image",
    "embed_prepared", "errors", "generate_missing", "item_seed", "items_by_id", "load_encoder",
    "load_generator", "migrate_catalog", "parse_filters", "prepare_or_fail", "resolve_device",
]
