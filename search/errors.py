"""Typed errors of the engine. The API maps each class to one HTTP problem, once."""

from __future__ import annotations

from enum import StrEnum


class XmodalError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidInputError(XmodalError, ValueError):
    """The caller's input is wrong (a client mistake, never a server fault)."""


class CorruptImageError(InvalidInputError):
    """Image bytes could not be decoded: truncated, not an image, unsupported."""


class ImageTooLargeError(InvalidInputError):
    """Image exceeds the byte or pixel limits (decompression-bomb guard)."""


class InvalidQueryError(InvalidInputError):
    """A search query is malformed (no inputs, wrong vector size, bad filter...)."""


class UnknownFieldError(InvalidInputError):
    """Fields declared for a collection that none of its items has (most likely a typo)."""

    def __init__(self, collection: str, fields: list[str]) -> None:
        names = ", ".join(repr(f) for f in fields)
        super().__init__(f"no item of collection {collection!r} has the attribute(s) {names}")
        self.collection, self.fields = collection, fields


class NotFoundError(XmodalError, LookupError):
    """Something named by the caller does not exist."""


class UnknownCollectionError(NotFoundError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown collection {name!r}")
        self.name = name


class UnknownItemError(NotFoundError):
    def __init__(self, collection: str, external_id: str) -> None:
        super().__init__(f"no item {external_id!r} in collection {collection!r}")


class MediaNotFoundError(NotFoundError):
    """A media reference points at nothing inside the media store."""


class CollectionExistsError(XmodalError):
    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} already exists")


class ModelError(XmodalError):
    """An encoder could not be built."""


class UnknownModelError(ModelError, InvalidInputError):
    """The model name is neither an open_clip architecture nor a local checkpoint."""


class WeightsUnavailableError(ModelError):
    """Pretrained weights could not be obtained (offline hub, missing file)."""


class IndexError_(XmodalError):
    """Base for vector-index problems (underscore: do not shadow the builtin)."""


class NoIndexError(IndexError_):
    """A collection has no index version on disk yet."""


class ManifestMismatchError(IndexError_):
    """An index version was built for another model/dimension than the one loaded."""


class ImageNotFoundError(CorruptImageError, FileNotFoundError):
    """An image path names no file (also a FileNotFoundError, for plain `except OSError`)."""


class InvalidMediaRefError(MediaNotFoundError):
    """A media reference would leave the store (absolute, `..`, NUL...); reported as not found."""


class CorruptIndexError(IndexError_):
    """Index or embedding files on disk are damaged: bad checksum, shape or manifest."""


class IndexNotTrainedError(IndexError_):
    """Vectors were added to an index that needs training before it was trained."""


class StoreHistoryCompactedError(IndexError_):
    """Operations asked for were folded into a compacted shard; rebuild from live()."""


class GeneratorError(XmodalError):
    """An image generator could not be built or run."""


class UnknownGeneratorError(GeneratorError, InvalidInputError):
    """No generator backend is registered under the name asked for."""


class GeneratorUnavailableError(GeneratorError):
    """A generator's weights or optional dependency (the `[generate]` extra) are missing,
    or its weights do not belong to the encoder it needs."""


class InvalidPromptError(InvalidInputError):
    """A generation prompt is empty, not a string, or longer than the limit."""


class StorageError(XmodalError, OSError):
    """The disk refused a write (full, read-only, quota); what was on disk before is intact."""


class CatalogUnavailableError(XmodalError):
    """The catalog database cannot be reached (down, restarting, locked past the timeout)."""
class CatalogSchemaError(XmodalError):
    """The catalog's schema is not the revision this code needs (run `xmodal-index migrate`)."""


class FetchFailure(StrEnum):
    """Why a remote image could not be fetched (the API maps each to one problem)."""

    INVALID_URL = "invalid-url"  # malformed, credentials, scheme not allowed
    HOST_NOT_ALLOWED = "host-not-allowed"  # off the policy's allow-list
    UNRESOLVABLE = "unresolvable"  # DNS gave no address
    PRIVATE_ADDRESS = "private-address"  # resolves to loopback/private/link-local...
    HTTP_STATUS = "http-status"  # not 200 (or not found), too many redirects
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # refused, reset, TLS failure...
    UNAVAILABLE = "unavailable"  # no filesystem for this object-store scheme here


class RemoteFetchError(InvalidInputError):
    """A remote image (URL or object-store URI) could not be fetched; `kind` says why."""

    def __init__(self, kind: FetchFailure, message: str) -> None:
        super().__init__(message)
        self.kind = FetchFailure(kind)

    def __reduce__(self) -> tuple:  # picklable across worker processes
        return (type(self), (self.kind, str(self)))
