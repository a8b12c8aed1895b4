"""`xmodal-serve`: run the HTTP API and search page with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from api.config import ApiConfig
from search import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xmodal-serve",
        description="Serve the search API (/v1, OpenAPI at /docs) and the search page (/).")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (default 1); each serves one query at a "
                             "time and loads the indexes: use one per core")
    parser.add_argument("--home", type=Path, help="XMODAL_HOME (default from settings)")
    parser.add_argument("--read-only", action="store_true",
                        help="a replica: refuse every write endpoint, never migrate the "
                             "catalog (run `xmodal-index migrate` first), map indexes")
    parser.add_argument("--insecure", action="store_true",
                        help="allow writes without XMODAL_API_KEY on a non-loopback address")
    parser.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])
    return parser


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: we cannot know what it binds to


def refusal(host: str, read_only: bool, has_key: bool, insecure: bool) -> str | None:
    """Why the server must not start with these options, or None."""
    if is_loopback(host) or read_only or has_key or insecure:
        return None
    return (f"refusing to serve writes on {host} without an API key: set XMODAL_API_KEY, "
            "or pass --read-only, or --insecure if the network is trusted")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 1:
        print("xmodal-serve: --workers must be at least 1", file=sys.stderr)
        return 2
    # Worker processes build their own settings from the environment: pass flags there.
    if args.home:
        os.environ["XMODAL_HOME"] = str(args.home)
    if args.read_only:
        os.environ["XMODAL_API_READ_ONLY"] = "true"
    # One thread per query and one engine call at a time per process: concurrency comes
    # from worker processes. Two engine calls in one process fight over the GIL (each
    # torch call returns to wait a switch interval): measured at concurrency 8 on 2 cores,
    # 2 workers x 1 slot served 224 QPS on 1.87 cores, 2 workers x 2 slots 132 on 1.33.
    os.environ.setdefault("XMODAL_API_COMPUTE_THREADS", "1")
    os.environ.setdefault("XMODAL_API_COMPUTE_SLOTS", "1")
    os.environ.setdefault("XMODAL_API_SWITCH_INTERVAL_MS", "1")
    # Serving maps IVF index versions: workers and replicas on a host share the page cache.
    os.environ.setdefault("XMODAL_MMAP_INDEX", "true")
    settings, config = Settings(), ApiConfig()
    reason = refusal(args.host, config.read_only, settings.api_key is not None, args.insecure)
    if reason:
        print(f"xmodal-serve: {reason}", file=sys.stderr)
        return 2
    import uvicorn  # only when serving: `--help` stays fast

    uvicorn.run("api.app:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, proxy_headers=False,
                timeout_graceful_shutdown=10,
                # A worker answers the supervisor's ping from a Python thread; while it
                # imports torch on a busy machine that can take far over uvicorn's 5 s
                # default, and the worker would be killed and respawned in a loop.
                timeout_worker_healthcheck=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
