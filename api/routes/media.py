"""`GET /v1/media/{ref}`: item images and thumbnails, only ever from inside the media store.

`MediaStore.resolve` is the only way from a reference to a file; it refuses absolute
paths, `..`, hidden names and symlinks that leave the store (all answered 404).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse, Response

from api.deps import RunnerDep, WorkspaceDep
from api.problems import problem_responses
from search import THUMBNAIL_SIZES

router = APIRouter(prefix="/v1/media", tags=["media"])

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
          ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp",
          ".tif": "image/tiff", ".tiff": "image/tiff"}
# Content-addressed: a reference never changes meaning, so caches may keep it forever.
# nosniff + a sandboxing CSP: a stored file can never run as a page on our origin.
_HEADERS = {"Cache-Control": "public, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox"}
_IMAGE_CONTENT = {"image/*": {"schema": {"type": "string", "format": "binary"}}}


@router.get("/{ref:path}", response_class=Response,
            responses={200: {"content": _IMAGE_CONTENT, "description": "The image"},
                       **problem_responses(404, 422, 503)},
            summary="An item image, or a thumbnail of it with ?size=")
async def get_media(ref: str, workspace: WorkspaceDep, run: RunnerDep,
                    size: Annotated[int | None, Query(ge=THUMBNAIL_SIZES.start,
                                                      le=THUMBNAIL_SIZES.stop - 1,
                                                      description="Thumbnail box, px")] = None,
                    ) -> Response:
    media = workspace.media
    if size is not None:
        data = await run(lambda: media.thumbnail(ref, size))
        return Response(data, media_type="image/jpeg", headers=_HEADERS)
    path = await run(lambda: media.resolve(ref))
    media_type = _TYPES.get(PurePosixPath(path.name).suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media_type, headers=_HEADERS)
