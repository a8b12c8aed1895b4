"""The search page: plain static files from api/web (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
# Scripts and styles only from us; images also from anywhere over https (items may
# point at external image URLs) and from blob: (the preview of a dropped file).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' https: data: blob:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)
