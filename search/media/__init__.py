"""Media: safe image decoding (`decode.py`) and the content-addressed store (`store.py`)."""

from search.media.decode import (
    ALLOWED_FORMATS,
    DEFAULT_LIMITS,
    DecodeLimits,
    ImageSource,
    MiB,
    decode_image,
)
from search.media.store import (
    THUMBNAIL_SIZES,
    MediaStore,
    ThumbnailFormat,
    is_reference,
    is_remote_reference,
    touch,
)

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "THUMBNAIL_SIZES",
    "DecodeLimits",
    "ImageSource",
    "MediaStore",
    "MiB",
    "ThumbnailFormat",
    "decode_image",
    "is_reference",
    "is_remote_reference",
    "touch",
]
