"""Preparing items for embedding: validate, hash, decode, preprocess, store media.

Module-level functions over a picklable `PrepareContext`, so the same code runs inline,
in indexer worker processes and in Ray actors."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from search.errors import InvalidInputError, RemoteFetchError, XmodalError
from search.files import read_regular_file
from search.media import DEFAULT_LIMITS, MediaStore, decode_image, is_remote_reference
from search.models.encoder import Encoder
from search.remote import RemotePolicy, fetcher_for

_log = logging.getLogger(__name__)

ImageInput = bytes | str | Path | Image.Image
_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp",
             "TIFF": ".tif", "MPO": ".jpg"}


class MediaMode(StrEnum):
    """How an item's image is kept: copied into the media store, or referenced where it
    is (its absolute path or URL is stored; its bytes are still read and hashed)."""

    COPY = "copy"
    REFERENCE = "reference"


@dataclass(frozen=True)
class NewItem:
    """An item as a caller hands it in; `image` is bytes, a file path, a PIL image, or a
    URL string (http(s)://, s3://, gs://) fetched under the context's `RemotePolicy`.

    image_source: where the image lives (a path or URL), stored instead of the bytes when
    the item is added with `MediaMode.REFERENCE`; defaults to `image` when that is a path
    or a URL.
    """

    external_id: str
    text: str | None = None
    image: ImageInput | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    image_source: str | None = None


@dataclass(frozen=True)
class ItemFailure:
    external_id: str | None
    stage: str
    reason: str


@dataclass(frozen=True)
class PrepareContext:
    media_root: Path
    preprocess: Callable[[Image.Image], Any]  # the encoder's image transform
    image_size: int
    model_identity: str
    media: MediaMode = MediaMode.COPY
    remote: RemotePolicy = RemotePolicy()  # what image URLs may be fetched, and how


@dataclass
class PreparedItem:
    external_id: str
    text: str | None
    image_ref: str | None
    attributes: dict[str, Any]
    content_hash: str
    has_image: bool
    pixels: np.ndarray | None = None  # [3, H, W] float32, preprocessed
    skipped_decode: bool = False  # unchanged by content hash: nothing decoded
    text_vector: np.ndarray | None = None  # filled when embedded elsewhere
    image_vector: np.ndarray | None = None


def content_hash(model_identity: str, text: str | None, image_digest: str) -> str:
    """What decides re-embedding: the model, the text and the image bytes."""
    parts = [model_identity, text or "", image_digest]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _image_bytes(image: ImageInput, ctx: PrepareContext) -> bytes:
    if is_remote_image(image):
        return fetcher_for(ctx.remote).fetch(str(image))
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, bytes):
        return image
    # regular files only, never more than the decoder would accept (+1 to tell it so)
    return read_regular_file(Path(image), DEFAULT_LIMITS.max_bytes)


def prepare_item(item: NewItem, ctx: PrepareContext, known_hash: str | None = None
                 ) -> PreparedItem:
    """Raises a typed `XmodalError` saying why an item cannot be indexed."""
    if not isinstance(item.external_id, str) or not item.external_id.strip():
        raise InvalidInputError("missing external id")
    text = item.text.strip() if isinstance(item.text, str) else None
    if not text and item.image is None:
        raise InvalidInputError("item has neither text nor image")
    data = _image_bytes(item.image, ctx) if item.image is not None else None
    digest = hashlib.sha256(data).hexdigest() if data is not None else ""
    chash = content_hash(ctx.model_identity, text, digest)
    prepared = PreparedItem(item.external_id, text or None, None, dict(item.attributes), chash,
                            data is not None)
    if data is None:
        return prepared
    location = _reference(item) if ctx.media is MediaMode.REFERENCE else None
    if chash == known_hash:  # unchanged: skip the costly decode, keep the stored media ref
        prepared.skipped_decode = True
        # put() only stats an already stored file; it writes one that a switch from
        # reference to copy mode has not stored yet
        prepared.image_ref = location or MediaStore(ctx.media_root).put(data,
                                                                        suffix=_suffix(data))
        return prepared
    image = decode_image(data, min_side=ctx.image_size)
    prepared.pixels = np.asarray(ctx.preprocess(image), dtype=np.float32)
    prepared.image_ref = location or MediaStore(ctx.media_root).put(data, suffix=_suffix(data))
    return prepared


def _reference(item: NewItem) -> str:
    """The location stored for a referenced image: `image_source`, else the image's path."""
    if item.image_source is not None:
        source = item.image_source
    elif isinstance(item.image, str | Path):
        source = item.image
    else:
        raise InvalidInputError("media by reference needs the image as a file path, or its "
                                "location in image_source")
    if isinstance(source, str) and not source.strip():
        raise InvalidInputError("empty image_source")
    if isinstance(source, str) and "://" in source and not is_remote_reference(source):
        raise InvalidInputError(f"image_source is not a URL or a path: {source[:80]!r}")
    return MediaStore.reference(source)


def _suffix(data: bytes) -> str:
    try:
        return _SUFFIXES.get(Image.open(io.BytesIO(data)).format or "", ".img")
    except Exception:  # noqa: BLE001 - already decoded once; a suffix is cosmetic
        return ".img"


def is_remote_image(image: object) -> bool:
    """A URL string (any scheme://): fetched, never opened as a path."""
    return isinstance(image, str) and is_remote_reference(image)


def fetch_images(items: Sequence[NewItem], ctx: PrepareContext
                 ) -> list[NewItem | ItemFailure]:
    """The items with their remote images fetched, concurrently (`ctx.remote.threads`), so
    that network latency overlaps; an item whose image cannot be fetched becomes its own
    failure (stage "fetch"). The URL stays the item's `image_source` (what reference mode
    stores). Items without a remote image pass through untouched."""
    remote = [i for i, item in enumerate(items) if is_remote_image(item.image)]
    results: list[NewItem | ItemFailure] = list(items)
    if not remote:
        return results
    fetcher = fetcher_for(ctx.remote)

    def fetch_one(index: int) -> NewItem | ItemFailure:
        item = items[index]
        try:
            data = fetcher.fetch(str(item.image))
        except XmodalError as exc:
            return ItemFailure(_safe_id(item), "fetch", str(exc))
        except Exception as exc:  # noqa: BLE001 - one URL's surprise is one item's failure
            _log.warning("unexpected error fetching %r", item.image, exc_info=True)
            return ItemFailure(_safe_id(item), "fetch", f"unexpected {type(exc).__name__}: {exc}")
        return dataclasses.replace(item, image=data,
                                   image_source=item.image_source or str(item.image))

    threads = max(1, min(ctx.remote.threads, len(remote)))
    with ThreadPoolExecutor(threads, thread_name_prefix="xmodal-fetch") as pool:
        for index, result in zip(remote, pool.map(fetch_one, remote), strict=True):
            results[index] = result
    return results


def prepare_batch(tasks: Sequence[tuple[NewItem, str | None]], ctx: PrepareContext,
                  threads: int = 1) -> list[PreparedItem | ItemFailure]:
    """Prepare (item, known content hash) pairs, in order: remote images are fetched
    concurrently first (`fetch_images`), then each item is decoded and preprocessed, on
    `threads` threads (Pillow's decoders and resizes release the GIL). What the local
    pipeline (its worker processes, or its parent when it has none) and Ray actors call."""
    fetched = fetch_images([item for item, _ in tasks], ctx)

    def prepare(pair: tuple[NewItem | ItemFailure, str | None]) -> PreparedItem | ItemFailure:
        result, known = pair
        return result if isinstance(result, ItemFailure) else prepare_or_fail(result, ctx,
                                                                              known)

    pairs = [(result, known) for result, (_, known) in zip(fetched, tasks, strict=True)]
    if threads <= 1 or len(pairs) <= 1:
        return [prepare(pair) for pair in pairs]
    with ThreadPoolExecutor(min(threads, len(pairs)), thread_name_prefix="xmodal-decode"
                            ) as pool:
        return list(pool.map(prepare, pairs))


def _safe_id(item: NewItem) -> str | None:
    return item.external_id if isinstance(item.external_id, str) and item.external_id else None


def prepare_or_fail(item: NewItem, ctx: PrepareContext, known_hash: str | None
                    ) -> PreparedItem | ItemFailure:
    """One item's outcome; whatever goes wrong with it stays its own failure."""
    external_id = item.external_id if isinstance(item.external_id, str) else None
    try:
        return prepare_item(item, ctx, known_hash)
    except RemoteFetchError as exc:
        return ItemFailure(external_id or None, "fetch", str(exc))
    except XmodalError as exc:
        return ItemFailure(external_id or None, "prepare", str(exc))
    except Exception as exc:  # noqa: BLE001 - a decoder's surprise must not end the batch
        _log.warning("unexpected error preparing %r", external_id, exc_info=True)
        return ItemFailure(external_id or None, "prepare",
                           f"unexpected {type(exc).__name__}: {exc}")


def prepare_items(items: Sequence[NewItem], ctx: PrepareContext, known: dict[str, str]
                  ) -> tuple[list[PreparedItem], list[ItemFailure]]:
    """Prepare a batch inline; a bad item becomes a failure and the rest go on."""
    prepared: list[PreparedItem] = []
    failures: list[ItemFailure] = []
    seen: set[str] = set()
    for item in fetch_images(items, ctx):
        if isinstance(item, ItemFailure):
            failures.append(item)
            continue
        if item.external_id in seen:
            failures.append(ItemFailure(item.external_id, "prepare",
                                        "duplicate external id in the same batch"))
            continue
        result = prepare_or_fail(item, ctx, known.get(item.external_id))
        if isinstance(result, ItemFailure):
            failures.append(result)
        else:
            prepared.append(result)
            seen.add(item.external_id)
    return prepared, failures


def embed_prepared(encoder: Encoder, items: Sequence[PreparedItem]) -> None:
    """Fill in each item's missing vectors, in full batches, and drop the pixels."""
    texts = [p for p in items if p.text and p.text_vector is None]
    images = [p for p in items if p.pixels is not None and p.image_vector is None]
    for p, vector in zip(texts, encoder.encode_texts([p.text for p in texts]), strict=True):
        p.text_vector = vector
    if images:
        pixels = torch.from_numpy(np.stack([p.pixels for p in images]))  # [n, 3, H, W]
        for p, vector in zip(images, encoder.encode_images(pixels), strict=True):
            p.image_vector = vector
    for p in items:
        p.pixels = None
