"""A lean HTTP/1.1 load generator: asyncio streams, keep-alive, one connection per slot.

Raw sockets rather than an HTTP client library, so the load process spends little CPU
per request on the same two cores as the server it measures."""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Sample:
    status: int
    seconds: float
    took_ms: dict[str, float] = field(default_factory=dict)  # server-side stage timings


def _request(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def _slot(host: str, port: int, path: str, todo: deque[bytes],
                samples: list[Sample]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while todo:
            body = todo.popleft()
            started = time.perf_counter()
            writer.write(_request(host, port, path, body))
            status, payload = await _read_response(reader)
            elapsed = time.perf_counter() - started
            took = json.loads(payload).get("took_ms", {}) if status == 200 else {}
            samples.append(Sample(status, elapsed, took))
    finally:
        writer.close()


async def run_load(host: str, port: int, path: str, bodies: list[bytes],
                   concurrency: int) -> list[Sample]:
    """POST every body once, `concurrency` requests in flight; a sample per request."""
    todo: deque[bytes] = deque(bodies)
    samples: list[Sample] = []
    await asyncio.gather(*(_slot(host, port, path, todo, samples)
                           for _ in range(concurrency)))
    return samples
