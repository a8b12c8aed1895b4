"""A loopback HTTP image server for fetcher tests: it counts every connection and request,
and serves good, redirecting, oversized, slow and missing images. Loopback only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.utils.corpus import png_bytes

IMAGE = png_bytes(11, size=16)  # small: under every test's byte limit
BIG = 5000  # bytes of /big and /big-chunked (tests set limits below this)


class ImageServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections = 0
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.images: dict[str, bytes] = {"/ok.png": IMAGE}

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def verify_request(self, request, client_address) -> bool:  # noqa: ANN001
        self.connections += 1
        return True


class _Handler(BaseHTTPRequestHandler):
    server: ImageServer

    def do_HEAD(self) -> None:  # noqa: N802 - S3's HeadObject (objects under /bucket/)
        self.server.requests.append((f"HEAD {self.path}", self.headers.get("Host", "")))
        body = self.server.images.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.send_header("Last-Modified", "Wed, 02 Dec 2026 00:00:00 GMT")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        path, _, query = self.path.partition("?")
        if path in self.server.images and self.headers.get("Range"):  # S3's ranged reads
            self._send_range(self.server.images[path], self.headers["Range"])
        elif path in self.server.images:
            self._send(self.server.images[path])
        elif path == "/redirect":  # to the same host
            self._redirect("/ok.png")
        elif path == "/redirect-out":  # to a host under .invalid (refused before DNS)
            self._redirect("http://refused.invalid/ok.png")
        elif path == "/redirect-to":  # to whatever the query names
            self._redirect(query)
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/big":
            self._send(b"\0" * BIG)
        elif path == "/big-chunked":  # no Content-Length: the limit holds while reading
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(BIG // 1000):
                self.wfile.write(b"3e8\r\n" + b"\0" * 1000 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":  # a trickle: every read succeeds, the whole takes 5 s
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_range(self, body: bytes, header: str) -> None:
        first, _, last = header.removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last or len(body) - 1), len(body) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(body[start:end + 1])

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@contextmanager
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
