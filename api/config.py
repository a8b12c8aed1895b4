"""What the HTTP service adds to the engine's `Settings`: limits, safety switches, tuning.

Read from the environment with the prefix ``XMODAL_API_`` (e.g. ``XMODAL_API_READ_ONLY=1``),
so every `xmodal-serve` worker process builds the same config. Never built at import time.
"""

from __future__ import annotations

import math

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from search import (
    MAX_GENERATED_SIDE,
    MAX_QUERY_PARTS,
    MAX_TEXT_CHARS,
    MIN_GENERATED_SIDE,
    DecodeLimits,
    MiB,
)

# base64 turns 3 bytes into 4; JSON framing and the other fields need a little more.
_BASE64_RATIO = 4 / 3
_JSON_SLACK = 256 * 1024


class ApiConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XMODAL_API_", env_file=".env", extra="ignore")

    read_only: bool = Field(default=False, description="Refuse every write endpoint (403).")
    max_upload_bytes: int = Field(default=16 * MiB, ge=1024,
                                  description="Largest image accepted (upload or base64).")
    max_image_pixels: int = Field(default=40_000_000, ge=1, description="width x height cap.")
    max_image_side: int = Field(default=20_000, ge=1, description="Longest side cap, pixels.")
    max_text_chars: int = Field(default=2_000, ge=1, le=MAX_TEXT_CHARS,
                                description="Longest query text.")
    max_query_parts: int = Field(default=16, ge=1, le=MAX_QUERY_PARTS,
                                 description="Inputs of one weighted query.")
    max_batch_items: int = Field(default=256, ge=1, description="Items per batch write.")
    request_timeout_s: float = Field(default=30.0, gt=0, description="Per search/write call.")
    reload_interval_s: float = Field(default=0.5, gt=0,
                                     description="How often new index versions are looked for.")
    compute_threads: int | None = Field(
        default=None, ge=1,
        description="torch/FAISS threads (process-wide): one query uses one core best, "
                    "concurrency comes from requests. None leaves the libraries' defaults; "
                    "xmodal-serve sets 1.")
    compute_slots: int | None = Field(
        default=None, ge=1,
        description="Requests doing engine work at once per process (default: CPU count); "
                    "the rest wait in the event loop, not in locks")
    write_slots: int = Field(
        default=1, ge=1,
        description="Item writes and deletes running at once per process, in a lane of "
                    "their own: a write waiting for the collection lock or fsync never "
                    "holds a reader's compute slot")
    write_threads: int = Field(
        default=1, ge=1,
        description="Intra-op threads of a write's encoder call: fewer than queries get, "
                    "so a write leaves cores to reads")
    switch_interval_ms: float | None = Field(
        default=None, gt=0, le=100,
        description="Python's GIL switch interval for the server (default: Python's 5 ms; "
                    "xmodal-serve sets 1): how long a query waits for the GIL held by a "
                    "write's Python code")
    fetch_image_urls: bool = Field(default=False,
                                   description="Allow `image_url` queries (SSRF risk).")
    image_url_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts image_url may name: 'cdn.example.com' or '*.example.com'.")
    image_url_allow_private: bool = Field(
        default=False, description="Allow hosts resolving to private/loopback addresses.")
    image_url_timeout_s: float = Field(default=5.0, gt=0)
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the API cross-site (JSON list, e.g. "
                    '\'["https://shop.example"]\'); empty: no CORS headers at all.')
    preload: bool = Field(default=True, description="Open every collection at startup.")
    generator: str = Field(default="house",
                           description="Image generator behind POST /v1/generate.")
    generator_model: str | None = Field(
        default=None, description="Its model: diffusers hub id or local path, house weights "
                                  "file (default: the shipped one).")
    generate_max_size: int = Field(default=512, ge=MIN_GENERATED_SIDE, le=MAX_GENERATED_SIDE,
                                   description="Largest side POST /v1/generate may ask for.")
    generate_per_minute: float = Field(
        default=30, gt=0, description="POST /v1/generate calls per client per minute "
                                      "(bursts up to this many).")

    def decode_limits(self) -> DecodeLimits:
        return DecodeLimits(max_bytes=self.max_upload_bytes, max_pixels=self.max_image_pixels,
                            max_side=self.max_image_side)

    @property
    def max_request_bytes(self) -> int:
        """A whole request body: one base64 image in JSON, or one multipart upload."""
        return math.ceil(self.max_upload_bytes * _BASE64_RATIO) + _JSON_SLACK
