"""Search requests and results as typed data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image

from search.errors import InvalidQueryError
from search.facets import FacetCounts, FacetRequest, FacetScope
from search.filters import Filter

# The engine's hard limits: api/schemas.py and the CLIs take them from here.
MAX_K = 1000
MAX_DEPTH = 10 * MAX_K  # offset + k: how deep a client may page
MAX_OFFSET = MAX_DEPTH - MAX_K
MAX_TEXT_CHARS = 100_000  # any text: a query's, an item's (the model reads only the start)
MAX_VECTOR_DIM = 4096  # a query vector's length (it must also equal the model's dim)
MAX_QUERY_PARTS = 64  # inputs of one weighted query
MAX_NPROBE = 65536  # IVF lists; more than an index has is clamped to its nlist
MAX_RERANK_FACTOR = 64


class Target(StrEnum):
    IMAGE = "image"
    TEXT = "text"
    ANY = "any"


class SearchMode(StrEnum):
    VECTOR = "vector"  # embeddings only
    KEYWORD = "keyword"  # the lexical index only; never runs the encoder
    HYBRID = "hybrid"  # both, fused; the keyword side reads the query's text parts


class FusionMethod(StrEnum):
    RRF = "rrf"  # reciprocal rank fusion: sum of 1 / (rrf_k + rank)
    WEIGHTED = "weighted"  # alpha * vector + (1 - alpha) * keyword, normalised to [0, 1]


@dataclass(frozen=True)
class QueryPart:
    """One input of a query; exactly one of text / image / vector / item_id is set.

    A negative weight pushes results away from this input."""

    text: str | None = None
    image: bytes | str | Path | Image.Image | None = None
    vector: tuple[float, ...] | None = None
    item_id: str | None = None  # an item's external id: search with its stored vectors
    weight: float = 1.0

    def __post_init__(self) -> None:
        given = [v is not None for v in (self.text, self.image, self.vector, self.item_id)]
        if sum(given) != 1:
            raise InvalidQueryError("each query part needs exactly one of text, image, "
                                    "vector or item_id")
        if self.text is not None and not self.text.strip():
            raise InvalidQueryError("query text is empty")
        if self.text is not None and len(self.text) > MAX_TEXT_CHARS:
            raise InvalidQueryError(f"query text is over {MAX_TEXT_CHARS} characters")
        if self.text is not None:
            _check_unicode(self.text)
        if self.vector is not None and not 1 <= len(self.vector) <= MAX_VECTOR_DIM:
            raise InvalidQueryError(f"a query vector has 1 to {MAX_VECTOR_DIM} values")


def _check_unicode(text: str) -> None:
    """JSON's "\\ud800" escapes give lone surrogates, which no database driver can encode:
    refused here, for every mode, rather than failing deep in the lexical index."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQueryError(
            f"query text is not valid Unicode (lone surrogate at {exc.start})") from None


@dataclass(frozen=True)
class Fusion:
    """How an item's image and text scores combine into one score (late fusion)."""

    image_weight: float = 1.0
    text_weight: float = 1.0

    def __post_init__(self) -> None:
        # Fused ranking stops early on a bound that holds only for non-negative weights.
        for weight in (self.image_weight, self.text_weight):
            if not 0 <= weight < float("inf"):
                raise InvalidQueryError("fusion weights must be finite and >= 0")


@dataclass(frozen=True)
class SearchQuery:
    collection: str
    parts: tuple[QueryPart, ...]
    target: Target = Target.ANY
    k: int = 10
    offset: int = 0
    filters: tuple[Filter, ...] = ()
    min_score: float | None = None
    dedupe: float | None = None  # collapse hits whose vectors' cosine is at least this
    nprobe: int | None = None
    rerank_factor: int | None = None
    fusion: Fusion = field(default_factory=Fusion)
    # False: pictures generated from an item's text are not searched (the item can still
    # be found by its text); real pictures only, e.g. so that drawings never crowd photos.
    include_generated: bool = True
    # None: search.hybrid.DEFAULT_TEXT_MODE for queries with text, vector otherwise.
    mode: SearchMode | None = None
    # Weighted with alpha 0.1 by default: on the judged emoji set (README, "Hybrid search")
    # it never falls behind keyword-only on any query type, RRF (k=60) does.
    fusion_method: FusionMethod = FusionMethod.WEIGHTED
    rrf_k: int = 60
    alpha: float = 0.1  # weighted fusion: the vector side's share
    facets: tuple[FacetRequest, ...] = ()

    def __post_init__(self) -> None:
        if not self.parts:
            raise InvalidQueryError("a query needs at least one text, image, vector or item")
        if len(self.parts) > MAX_QUERY_PARTS:
            raise InvalidQueryError(f"a query has at most {MAX_QUERY_PARTS} inputs")
        if not 1 <= self.rrf_k <= 10_000:
            raise InvalidQueryError("rrf_k must be between 1 and 10000")
        if not 0 <= self.alpha <= 1:
            raise InvalidQueryError("alpha must be between 0 and 1")
        if not 1 <= self.k <= MAX_K:
            raise InvalidQueryError(f"k must be between 1 and {MAX_K}")
        if self.offset < 0 or self.offset + self.k > MAX_DEPTH:
            raise InvalidQueryError(f"offset must be >= 0 and offset + k <= {MAX_DEPTH}")
        if self.nprobe is not None and not 1 <= self.nprobe <= MAX_NPROBE:
            raise InvalidQueryError(f"nprobe must be between 1 and {MAX_NPROBE}")
        if self.rerank_factor is not None and not 1 <= self.rerank_factor <= MAX_RERANK_FACTOR:
            raise InvalidQueryError(f"rerank_factor must be between 1 and {MAX_RERANK_FACTOR}")
        if self.dedupe is not None and not 0 < self.dedupe <= 1:
            raise InvalidQueryError("dedupe must be a cosine threshold in (0, 1]")

    @classmethod
    def text(cls, collection: str, text: str, **options: Any) -> SearchQuery:
        return cls(collection, (QueryPart(text=text),), **options)

    @classmethod
    def image(cls, collection: str, image: Any, **options: Any) -> SearchQuery:
        return cls(collection, (QueryPart(image=image),), **options)


@dataclass(frozen=True)
class Hit:
    item_id: int
    external_id: str
    score: float
    modality: str  # the modality whose vector matched best
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]
    generated: bool
    scores: dict[str, float]  # per-modality exact scores that were fused
    # Which rankers found the item: "vector", "keyword", "exact" -> its rank (1-based) and
    # score there. Empty only for hits made outside `Searcher.search`.
    rankers: dict[str, Ranked] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranked:
    rank: int
    score: float


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    total_considered: int
    timings_ms: dict[str, float]
    facets: tuple[FacetCounts, ...] = ()
    facet_scope: FacetScope | None = None  # what the facet counts were taken over
    mode: SearchMode | None = None  # the mode that ran
