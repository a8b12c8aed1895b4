"""Between the public schemas and the engine: requests -> `SearchQuery`, hits -> `HitPublic`.

Images always reach the engine as bytes or decoded images, never as strings: a string
would be read as a server-side file path.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from PIL import Image

from api.config import ApiConfig
from api.schemas import (
    FacetBucketPublic,
    FacetPublic,
    HitPublic,
    RankedPublic,
    SearchOptions,
    SearchRequest,
    SearchResponse,
    Timings,
)
from search import (
    Collection,
    CorruptImageError,
    Fusion,
    Hit,
    ImageTooLargeError,
    InvalidQueryError,
    Modality,
    QueryPart,
    SearchQuery,
    SearchResult,
    decode_image,
    is_reference,
    is_remote_reference,
    parse_facets,
    parse_filters,
)

THUMBNAIL_SIZE = 256
_DATA_URL = re.compile(r"^data:[\w/+.\-]*(;[\w=\-]+)*;base64,", re.IGNORECASE)


def decode_base64(text: str, config: ApiConfig) -> bytes:
    """base64 (whitespace and a data: URL prefix tolerated) -> bytes, size-checked."""
    compact = "".join(_DATA_URL.sub("", text.strip(), count=1).split())
    if len(compact) > config.max_upload_bytes * 4 // 3 + 4:
        raise ImageTooLargeError(f"image is over the {config.max_upload_bytes} byte limit")
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise CorruptImageError("image is not valid base64") from None


def query_image(data: bytes, config: ApiConfig, collection: Collection) -> Image.Image:
    """Decode once under the API's limits; JPEGs decode straight at the model's size."""
    return decode_image(data, limits=config.decode_limits(),
                        min_side=collection.encoder.image_size)


def check_text(text: str | None, config: ApiConfig) -> None:
    if text is not None and len(text) > config.max_text_chars:
        raise InvalidQueryError(f"text is {len(text)} characters; the limit is "
                                f"{config.max_text_chars}")


def query_parts(request: SearchRequest, config: ApiConfig, collection: Collection,
                fetch: Callable[[str], bytes]) -> tuple[QueryPart, ...]:
    """Every input of the request as a weighted part (top-level ones weigh 1).

    Counted before anything is decoded or fetched."""
    inputs: list[dict[str, Any]] = [
        {"text": request.text, "image": request.image, "vector": request.vector,
         "item_id": None, "weight": 1.0}]
    inputs += [q.model_dump() for q in request.queries or []]
    given = [(kind, i[kind], i["weight"]) for i in inputs
             for kind in ("text", "image", "vector", "item_id") if i[kind] is not None]
    count = len(given) + (request.image_url is not None)
    if count > config.max_query_parts:
        raise InvalidQueryError(f"{count} query inputs; the limit is {config.max_query_parts}")
    parts = [_part(kind, value, weight, config, collection) for kind, value, weight in given]
    if request.image_url is not None:
        image = query_image(fetch(request.image_url), config, collection)
        parts.append(QueryPart(image=image))
    return tuple(parts)


def _part(kind: str, value: Any, weight: float, config: ApiConfig,
          collection: Collection) -> QueryPart:
    if kind == "text":
        check_text(value, config)
        return QueryPart(text=value, weight=weight)
    if kind == "image":
        image = query_image(decode_base64(value, config), config, collection)
        return QueryPart(image=image, weight=weight)
    if kind == "vector":
        return QueryPart(vector=tuple(value), weight=weight)
    return QueryPart(item_id=value, weight=weight)


def search_query(collection: Collection, parts: tuple[QueryPart, ...],
                 options: SearchOptions) -> SearchQuery:
    fusion = options.fusion
    return SearchQuery(
        collection.name, parts, target=options.target, k=options.k, offset=options.offset,
        filters=tuple(parse_filters(options.filters)), min_score=options.min_score,
        dedupe=options.dedupe, nprobe=options.nprobe, rerank_factor=options.rerank_factor,
        fusion=Fusion(fusion.image_weight, fusion.text_weight) if fusion else Fusion(),
        include_generated=options.include_generated, mode=options.mode,
        fusion_method=options.fusion_method, rrf_k=options.rrf_k, alpha=options.alpha,
        facets=tuple(parse_facets(_facet_specs(options))))


def _facet_specs(options: SearchOptions) -> list[Any]:
    return [f if isinstance(f, str) else f.model_dump(exclude_none=True)
            for f in options.facets or []]


def media_urls(ref: str | None, root_path: str = "") -> tuple[str | None, str | None]:
    """(image URL, thumbnail URL) of a stored image; external URLs pass through (the
    service never fetches them: an s3:// or gs:// reference is the client's to sign)."""
    if not ref:
        return None, None
    if ref.startswith(("http://", "https://")):
        return ref, ref
    if is_remote_reference(ref):
        return ref, None
    # a referenced file's absolute path travels as one encoded segment: no "//" in URLs
    url = f"{root_path}/v1/media/{quote(ref, safe='' if is_reference(ref) else '/')}"
    return url, f"{url}?size={THUMBNAIL_SIZE}"


def hit_public(hit: Hit, root_path: str = "") -> HitPublic:
    image_url, thumbnail_url = media_urls(hit.image_ref, root_path)
    return HitPublic(item_id=hit.item_id, external_id=hit.external_id, score=hit.score,
                     modality=Modality(hit.modality), text=hit.text, image_url=image_url,
                     thumbnail_url=thumbnail_url, attributes=hit.attributes,
                     generated=hit.generated, scores=hit.scores,
                     rankers={name: RankedPublic(rank=r.rank, score=r.score)
                              for name, r in hit.rankers.items()})


def search_response(result: SearchResult, total_ms: float, root_path: str) -> SearchResponse:
    timings = result.timings_ms
    return SearchResponse(
        hits=[hit_public(h, root_path) for h in result.hits],
        total_considered=result.total_considered,
        took_ms=Timings(encode_ms=timings.get("encode_ms", 0.0),
                        ann_ms=timings.get("ann_ms", 0.0), sql_ms=timings.get("sql_ms", 0.0),
                        keyword_ms=timings.get("keyword_ms", 0.0),
                        total_ms=round(total_ms, 3)),
        mode=result.mode, facet_scope=result.facet_scope,
        facets=[FacetPublic(field=f.field, buckets=[FacetBucketPublic(value=b.value,
                                                                      count=b.count)
                                                    for b in f.buckets])
                for f in result.facets])
