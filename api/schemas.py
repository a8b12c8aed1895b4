"""Public request and response bodies; the engine's dataclasses never leave the service.

Bounds here are the engine's hard caps, imported from `search` (declared once there),
plus what keeps every value safe for SQL (no NUL characters, which PostgreSQL refuses;
64-bit integers; finite floats). Tunable limits (query text length, number of query
parts...) live in `ApiConfig` and are checked in `api/queries.py`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from search import (
    COLLECTION_NAME_PATTERN,
    MAX_DECLARED_FIELDS,
    MAX_EXTERNAL_ID,
    MAX_FILTER_FIELDS,
    MAX_GENERATED_SIDE,
    MAX_IN_VALUES,
    MAX_K,
    MAX_NPROBE,
    MAX_OFFSET,
    MAX_PROMPT_CHARS,
    MAX_QUERY_PARTS,
    MAX_RERANK_FACTOR,
    MAX_TEXT_CHARS,
    MAX_VECTOR_DIM,
    MIN_GENERATED_SIDE,
    FacetScope,
    FusionMethod,
    LexicalSettings,
    Modality,
    SearchMode,
    Target,
)

MAX_URL_CHARS = 4096  # an image_url the server may fetch (HTTP only: not an engine limit)


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _clean_json(value: Any, depth: int = 0) -> Any:
    """Attributes go into a JSON column: no NUL, no NaN/Infinity, bounded nesting."""
    if depth > 16:
        raise ValueError("attributes are nested too deeply (max 16 levels)")
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        raise ValueError("integers must fit in 64 bits")
    if isinstance(value, list):
        return [_clean_json(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {_no_nul(str(k)): _clean_json(v, depth + 1) for k, v in value.items()}
    return value


SafeStr = Annotated[str, AfterValidator(_no_nul)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Scalar = SafeStr | Int64 | Finite | bool
FilterCondition = Scalar | list[Scalar] | dict[str, Scalar | list[Scalar]]
Attributes = Annotated[dict[str, Any], AfterValidator(_clean_json)]
Base64Image = Annotated[str, Field(description="Image bytes, base64-encoded (standard alphabet; "
                                               "a data: URL prefix is accepted).")]
ExternalId = Annotated[str, Field(min_length=1, max_length=MAX_EXTERNAL_ID),
                       AfterValidator(_no_nul)]
CollectionName = Annotated[str, Field(pattern=COLLECTION_NAME_PATTERN, examples=["shop"])]
QueryText = Annotated[SafeStr, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
QueryVector = Annotated[list[Finite], Field(min_length=1, max_length=MAX_VECTOR_DIM)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_filters(filters: dict[str, Any] | None) -> dict[str, Any] | None:
    if filters is None:
        return None
    if len(filters) > MAX_FILTER_FIELDS:
        raise ValueError(f"at most {MAX_FILTER_FIELDS} filtered attributes")
    for condition in filters.values():
        lists = [condition] if isinstance(condition, list) else (
            [v for v in condition.values() if isinstance(v, list)]
            if isinstance(condition, dict) else [])
        if any(len(values) > MAX_IN_VALUES for values in lists):
            raise ValueError(f"an 'in' list holds at most {MAX_IN_VALUES} values")
    return filters


Filters = Annotated[dict[str, FilterCondition], AfterValidator(_check_filters)]


class QueryInput(Strict):
    """One input of a weighted query: exactly one of text, image, vector, item_id."""

    text: QueryText | None = None
    image: Base64Image | None = None
    vector: QueryVector | None = None
    item_id: ExternalId | None = Field(default=None, description="Search with an item's vectors")
    weight: Finite = Field(default=1.0, ge=-100, le=100,
                           description="Negative: push results away from this input")

    @model_validator(mode="after")
    def _exactly_one(self) -> QueryInput:
        given = [v is not None for v in (self.text, self.image, self.vector, self.item_id)]
        if sum(given) != 1:
            raise ValueError("each query needs exactly one of text, image, vector, item_id")
        return self


class FusionWeights(Strict):
    image_weight: Finite = Field(default=1.0, ge=0, le=100)
    text_weight: Finite = Field(default=1.0, ge=0, le=100)


class RangeFacet(Strict):
    field: SafeStr = Field(max_length=64)
    ranges: list[tuple[Finite | None, Finite | None]] | None = Field(
        default=None, max_length=32, description="[low, high) buckets; null: open end")
    size: int = Field(default=20, ge=1, le=1000, description="Most frequent values returned")


FacetSpec = Annotated[str, Field(max_length=64)] | RangeFacet


class SearchOptions(Strict):
    mode: SearchMode | None = Field(
        default=None, description="vector, keyword (lexical index only) or hybrid (both, "
        "fused); default: hybrid for text, vector otherwise")
    fusion_method: FusionMethod = Field(
        default=FusionMethod.WEIGHTED, description="hybrid: rrf (reciprocal rank fusion) or "
        "weighted (alpha * vector + (1 - alpha) * keyword, normalised scores)")
    rrf_k: int = Field(default=60, ge=1, le=10_000, description="RRF: 1 / (rrf_k + rank)")
    alpha: Finite = Field(default=0.1, ge=0, le=1, description="weighted: vector share")
    facets: list[FacetSpec] | None = Field(
        default=None, max_length=16, description='Value counts, e.g. ["category", {"field": '
        '"price", "ranges": [[0, 10], [10, 50], [50, null]]}]')
    target: Target = Field(default=Target.ANY,
                           description="Modality of the vectors searched: image, text or any")
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    filters: Filters | None = Field(
        default=None, description='On attributes: {"category": "shoes"}, '
        '{"color": ["red", "blue"]}, {"price": {"gte": 10, "lte": 50}}')
    min_score: Finite | None = Field(default=None, ge=-1, le=1)
    dedupe: Finite | None = Field(default=None, gt=0, le=1,
                                  description="Collapse hits whose vectors' cosine >= this")
    nprobe: int | None = Field(default=None, ge=1, le=MAX_NPROBE)
    rerank_factor: int | None = Field(default=None, ge=1, le=MAX_RERANK_FACTOR)
    fusion: FusionWeights | None = None
    include_generated: bool = Field(
        default=True, description="Also match pictures generated from items' texts; false: "
        "real pictures only (such items can still match by their text)")


class SearchRequest(SearchOptions):
    """Give `text`, `image` or `vector`, or a weighted list of `queries`; all given
    inputs are combined (weight 1 each for the top-level ones)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"collection": "shop", "text": "red running shoe", "target": "image", "k": 5,
         "filters": {"price": {"lte": 100}}}]})

    collection: CollectionName
    text: QueryText | None = None
    image: Base64Image | None = None
    image_url: SafeStr | None = Field(
        default=None, max_length=MAX_URL_CHARS,
        description="Fetched by the server only if enabled (XMODAL_API_FETCH_IMAGE_URLS) "
                    "and the host is allow-listed")
    vector: QueryVector | None = None
    queries: list[QueryInput] | None = Field(default=None, min_length=1,
                                             max_length=MAX_QUERY_PARTS)

    @model_validator(mode="after")
    def _some_input(self) -> SearchRequest:
        if not (self.text or self.image or self.image_url or self.vector or self.queries):
            raise ValueError("give text, image, image_url, vector or queries")
        return self


class RankedPublic(BaseModel):
    rank: int
    score: float


class HitPublic(BaseModel):
    item_id: int = Field(description="Internal id (stable; clip-retrieval's `id`)")
    external_id: str
    score: float = Field(description="Cosine similarity (fused over modalities for any)")
    modality: Modality = Field(description="The modality whose vector matched best")
    text: str | None
    image_url: str | None
    thumbnail_url: str | None
    attributes: dict[str, Any]
    generated: bool = Field(description="The image was generated from the text")
    scores: dict[str, float] = Field(description="Per-modality scores that were fused")
    rankers: dict[str, RankedPublic] = Field(
        default_factory=dict, description="The rankers that found the item (vector, keyword, "
        "exact) with its rank and score in each")


class Timings(BaseModel):
    encode_ms: float
    ann_ms: float
    sql_ms: float
    keyword_ms: float = 0.0
    total_ms: float


class FacetBucketPublic(BaseModel):
    value: Any = Field(description="An attribute value, or [low, high] for a range")
    count: int


class FacetPublic(BaseModel):
    field: str
    buckets: list[FacetBucketPublic]


class SearchResponse(BaseModel):
    hits: list[HitPublic]
    total_considered: int
    took_ms: Timings
    mode: SearchMode | None = Field(default=None, description="The mode that ran")
    facets: list[FacetPublic] = Field(default_factory=list)
    facet_scope: FacetScope | None = Field(
        default=None, description="matches: counted over every keyword match; candidates: "
        "over the fused candidate list the hits were ranked from (vector and hybrid)")


class IndexPublic(BaseModel):
    modality: Modality
    spec: str = Field(description="FAISS factory string, e.g. Flat or IVF4096,PQ64")
    vectors: int
    version: str | None = Field(description="Index version on disk (null: not saved yet)")


class CollectionPublic(BaseModel):
    name: str
    model: str
    pretrained: str | None
    dim: int
    items: int
    vectors: int
    indexes: list[IndexPublic]


class CollectionList(BaseModel):
    collections: list[CollectionPublic]


class CollectionCreate(Strict):
    name: CollectionName


class SearchFieldsWrite(Strict):
    """What keyword search reads besides the text, and which attributes are identifiers.
    Replaces both: an omitted `searchable_fields` (or null) means every string and
    list-of-strings attribute; omitted `identifier_fields` means `sku` and `gtin`."""

    searchable_fields: list[str] | None = Field(default=None,
                                                max_length=MAX_DECLARED_FIELDS)
    identifier_fields: list[str] = Field(
        default_factory=lambda: list(LexicalSettings().identifiers),
        max_length=MAX_DECLARED_FIELDS)


class SearchFieldsPublic(BaseModel):
    collection: str
    searchable_fields: list[str] | None  # null: every string and list-of-strings attribute
    identifier_fields: list[str]
    reindexed: int | None = None  # items whose keyword entries were rebuilt (on PUT)


class ItemWrite(Strict):
    text: SafeStr | None = Field(default=None, max_length=MAX_TEXT_CHARS)
    attributes: Attributes = Field(default_factory=dict)
    image: Base64Image | None = None


class ItemBatchEntry(ItemWrite):
    external_id: ExternalId


class ItemBatch(Strict):
    items: list[ItemBatchEntry] = Field(min_length=1)


class VectorPublic(BaseModel):
    modality: Modality
    source: str = Field(description="original, or generated (image made from the text)")


class GenerationPublic(BaseModel):
    """Provenance of a generated image."""

    generator: str = Field(description="Backend name, e.g. house or diffusers")
    model: str = Field(description="Exact weights: hash, hub id or path")
    prompt: str
    seed: int
    created_at: datetime | None


class ItemPublic(BaseModel):
    item_id: int
    external_id: str
    text: str | None
    image_url: str | None = Field(description="The item's image: its own, else a generated one")
    thumbnail_url: str | None
    generated: bool = Field(description="image_url is a generated image")
    generation: GenerationPublic | None = Field(description="How the generated image was made")
    attributes: dict[str, Any]
    status: str
    vectors: list[VectorPublic]
    created_at: datetime | None
    updated_at: datetime | None


class ItemWritten(ItemPublic):
    state: str = Field(description="new, changed or unchanged (content hash equal)")


class ItemFailurePublic(BaseModel):
    external_id: str | None
    stage: str
    reason: str


class BatchReport(BaseModel):
    new: int
    changed: int
    unchanged: int
    failed: int
    failures: list[ItemFailurePublic]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready, or loading while indexes are opened")
    collections: dict[str, str] = Field(description="name -> loaded | loading | failed")


class GenerateRequest(Strict):
    prompt: SafeStr = Field(min_length=1, max_length=MAX_PROMPT_CHARS, examples=["red apple"])
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Same prompt + seed + size "
                                                                "= same image")
    size: int | None = Field(default=None, ge=MIN_GENERATED_SIDE, le=MAX_GENERATED_SIDE,
                             description="Side in pixels (default: the generator's own; "
                                         "capped by the server's XMODAL_API_GENERATE_MAX_SIZE)")
