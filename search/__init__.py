"""xmodal's engine: CLIP encoders, FAISS vector index, SQL catalog and the query engine.

This module is the public face: `api/` and `indexer/` import only the names listed in
`__all__` (tests/test_imports.py checks it). Inside the engine, modules import each other
by their full paths. The map:

- `search.catalog` — the SQL catalog (items, vectors, jobs, failures) and its migrations.
- `search.vectors` — FAISS indexes, the float16 embedding store, index versions on disk.
- `search.models` — encoders (`load_encoder`), image generators, configs, shipped weights.
- `search.collection` — a collection's write path, the write lock, missing-image backfill.
- `search.media` — safe image decoding and the media store.
- `search.files` — reading user-named files: regular files only, bounded.
- `search.remote` — fetching remote images (http(s), s3://, gs://) behind the SSRF guard.
- `search.query`, `search.engine`, `search.filters` — the query path.
- `search.workspace`, `search.live`, `search.settings`, `search.errors`.
"""

from search import errors
from search.catalog.catalog import migrate_catalog
from search.catalog.lexical import LexicalSettings
from search.catalog.lookup import ItemRecord, items_by_id
from search.catalog.models import MAX_EXTERNAL_ID, Modality
from search.catalog.records import (
    CollectionCounts,
    FailureRecord,
    Generation,
    IndexVersionRecord,
    ItemDetail,
    JobRecord,
    StoredItem,
    VectorRef,
)
from search.catalog.schema import SchemaMigration
from search.collection.backfill import generate_missing, item_seed
from search.collection.collection import (
    AddReport,
    Collection,
    CollectionStats,
    IndexStats,
    index_stats,
)
from search.collection.preparing import (
    ItemFailure,
    MediaMode,
    NewItem,
    PrepareContext,
    PreparedItem,
    content_hash,
    embed_prepared,
    fetch_images,
    prepare_batch,
    prepare_or_fail,
)
from search.collection.search_fields import MAX_DECLARED_FIELDS
from search.engine import Searcher
from search.errors import (
    CorruptImageError,
    FetchFailure,
    ImageTooLargeError,
    InvalidInputError,
    InvalidQueryError,
    RemoteFetchError,
    UnknownCollectionError,
    UnknownFieldError,
    UnknownItemError,
    XmodalError,
)
from search.facets import FacetBucket, FacetCounts, FacetScope, parse_facets
from search.files import read_regular_file
from search.filters import MAX_FILTER_FIELDS, MAX_IN_VALUES, parse_filters
from search.lifecycle import MaintenanceReport, StoragePolicy, maintain, tidy_lexical
from search.live import Change, CollectionRefresher
from search.media import (
    THUMBNAIL_SIZES,
    DecodeLimits,
    MiB,
    decode_image,
    is_reference,
    is_remote_reference,
)
from search.models.encoder import Encoder, load_encoder, resolve_device
from search.models.generator import MAX_PROMPT_CHARS, ImageGenerator, load_generator
from search.models.generator import MAX_SIZE as MAX_GENERATED_SIDE
from search.models.generator import MIN_SIZE as MIN_GENERATED_SIDE
from search.models.query_cache import QueryEmbeddingCache
from search.query import (
    MAX_DEPTH,
    MAX_K,
    MAX_NPROBE,
    MAX_OFFSET,
    MAX_QUERY_PARTS,
    MAX_RERANK_FACTOR,
    MAX_TEXT_CHARS,
    MAX_VECTOR_DIM,
    Fusion,
    FusionMethod,
    Hit,
    QueryPart,
    Ranked,
    SearchMode,
    SearchQuery,
    SearchResult,
    Target,
)
from search.remote import (
    RemoteFetcher,
    RemotePolicy,
    Resolver,
    fetcher_for,
    host_allowed,
    resolve_host,
)
from search.settings import Settings
from search.workspace import COLLECTION_NAME_PATTERN, Workspace

__all__ = [
    "COLLECTION_NAME_PATTERN", "MAX_DEPTH", "MAX_EXTERNAL_ID", "MAX_FILTER_FIELDS",
    "MAX_GENERATED_SIDE", "MAX_IN_VALUES", "MAX_K", "MAX_NPROBE", "MAX_OFFSET",
    "MAX_PROMPT_CHARS", "MAX_QUERY_PARTS", "MAX_RERANK_FACTOR", "MAX_TEXT_CHARS",
    "MAX_VECTOR_DIM", "MIN_GENERATED_SIDE", "THUMBNAIL_SIZES", "AddReport", "Change",
    "Collection", "CollectionCounts", "CollectionRefresher", "CollectionStats",
    "CorruptImageError", "DecodeLimits", "Encoder", "FacetBucket", "FacetCounts", "FacetScope",
    "FailureRecord", "Fusion", "FusionMethod", "Generation", "Hit", "ImageGenerator",
    "ImageTooLargeError", "IndexStats", "IndexVersionRecord", "InvalidInputError",
    "InvalidQueryError", "ItemDetail", "ItemFailure", "ItemRecord", "JobRecord",
    "MaintenanceReport", "MediaMode", "MiB", "Modality", "NewItem", "PrepareContext",
    "PreparedItem", "QueryEmbeddingCache", "QueryPart", "Ranked", "SchemaMigration", "SearchMode",
    "SearchQuery", "SearchResult", "Searcher", "Settings", "StoragePolicy", "StoredItem",
    "Target", "UnknownCollectionError", "UnknownItemError", "VectorRef", "Workspace",
    "XmodalError", "content_hash", "decode_image", "embed_prepared", "errors", "generate_missing",
    "index_stats", "is_reference", "is_remote_reference", "item_seed", "items_by_id",
    "load_encoder", "load_generator", "maintain", "migrate_catalog", "parse_facets",
    "parse_filters", "prepare_or_fail", "read_regular_file", "resolve_device",
    "FetchFailure", "RemoteFetchError", "RemoteFetcher", "RemotePolicy", "Resolver",
    "fetch_images", "fetcher_for", "host_allowed", "prepare_batch", "resolve_host",
    "LexicalSettings", "MAX_DECLARED_FIELDS", "UnknownFieldError", "tidy_lexical",
]
