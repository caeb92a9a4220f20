"""Test helpers: small images, a decompression bomb, and a threading HTTP server serving every bad case."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

SLOW_S = 3.0  # longer than the tests' fetch timeout
DRIP_S = 1.0  # one byte per DRIP_S on the drip routes


def make_image(seed: int, size: tuple[int, int] = (96, 72), fmt: str = "JPEG") -> bytes:
    """A small, distinct, decodable image (smooth colour field plus noise) as encoded bytes."""
    rng = np.random.default_rng(seed)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [(xx * (seed % 7 + 1)) % 256, (yy * (seed % 5 + 2)) % 256, (xx + yy + 31 * seed) % 256], -1
    )
    pixels = np.clip(base + rng.integers(0, 40, size=base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, quality=90)
    return buffer.getvalue()


def make_bomb(side: int = 3000) -> bytes:
    """A tiny PNG that decodes to ``side``² pixels (a decompression bomb for a small max_pixels)."""
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass
class ImageServer:
    """Routes of the test server and what it has served.

    ``/img/<name>``: good images; ``/slowok/<name>``: good images after ``delay_s``; ``/gated/<name>``: good
    images once ``gate`` is set; ``/missing.jpg``: 404;
    ``/slow.jpg``: no answer for SLOW_S; ``/truncated.jpg``: half a JPEG (complete transfer);
    ``/cut.jpg``: Content-Length of a full JPEG, connection closed halfway; ``/page.html``: text/html;
    ``/fake.jpg``: image/jpeg that is HTML; ``/huge.jpg``: Content-Length above any test limit;
    ``/bomb.png``: a decompression bomb; ``/flaky.jpg``: 503 once, then a good image; ``/empty.jpg``: 0 bytes;
    ``/redirect.jpg``: a redirect to ``file:///etc/passwd``; ``/drip.jpg``: headers at once, then a good image
    one byte per DRIP_S; ``/driphead.jpg``: even the status line and headers one byte per DRIP_S;
    ``/recovering/<name>``: 503 until ``recovered`` is set, then the good image.
    """

    images: dict[str, bytes]
    host: str = "127.0.0.1"
    port: int = 0
    delay_s: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)
    stopping: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)
    recovered: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"


def _handler(server: ImageServer) -> type[BaseHTTPRequestHandler]:
    truncated_source = make_image(999, (160, 120))
    bomb = make_bomb()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests assert on ``server.requests`` instead."""

        def _send(self, status: int, body: bytes, content_type: str, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            # The client may have given up already (a timeout test): that is the point, not an error.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(body)

        def _wait(self, seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not server.stopping.is_set():
                time.sleep(0.02)

        def _drip(self, data: bytes) -> None:
            """Send ``data`` one byte per DRIP_S until the client gives up or the server stops."""
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for k in range(len(data)):
                    if server.stopping.is_set():
                        return
                    self.wfile.write(data[k : k + 1])
                    self.wfile.flush()
                    self._wait(DRIP_S)

        def do_GET(self) -> None:
            path = self.path
            server.requests[path] += 1
            name = path.rsplit("/", 1)[-1]
            if path.startswith("/img/") and name in server.images:
                self._send(200, server.images[name], "image/png" if name.endswith(".png") else "image/jpeg")
            elif path.startswith("/slowok/") and name in server.images:
                self._wait(server.delay_s)
                self._send(200, server.images[name], "image/jpeg")
            elif path.startswith("/gated/") and name in server.images:
                while not server.gate.wait(0.05) and not server.stopping.is_set():
                    pass
                self._send(200, server.images[name], "image/jpeg")
            elif path == "/slow.jpg":
                self._wait(SLOW_S)
                self._send(200, truncated_source, "image/jpeg")
            elif path == "/truncated.jpg":
                self._send(200, truncated_source[: len(truncated_source) // 2], "image/jpeg")
            elif path == "/cut.jpg":
                self.close_connection = True
                self._send(200, truncated_source[:200], "image/jpeg", length=len(truncated_source))
            elif path == "/page.html":
                self._send(200, b"<html><body>hello</body></html>", "text/html; charset=utf-8")
            elif path == "/fake.jpg":
                self._send(200, b"<html><body>not really a jpeg</body></html>", "image/jpeg")
            elif path == "/huge.jpg":
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(50_000_000))
                self.end_headers()
            elif path == "/bomb.png":
                self._send(200, bomb, "image/png")
            elif path == "/flaky.jpg":
                if server.requests[path] == 1:
                    self._send(503, b"busy", "text/plain")
                else:
                    self._send(200, server.images["flaky-ok.jpg"], "image/jpeg")
            elif path == "/redirect.jpg":
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/drip.jpg":
                self.close_connection = True
                body = server.images["a.jpg"]
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                self._drip(body)
            elif path == "/driphead.jpg":
                self.close_connection = True
                body = server.images["a.jpg"]
                head = f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {len(body)}\r\n\r\n"
                self._drip(head.encode() + body)
            elif path.startswith("/recovering/") and name in server.images:
                if server.recovered.is_set():
                    self._send(200, server.images[name], "image/jpeg")
                else:
                    self._send(503, b"busy", "text/plain")
            elif path == "/empty.jpg":
                self._send(200, b"", "image/jpeg")
            else:
                self._send(404, b"not found", "text/plain")

    return Handler


def serve_images() -> tuple[ImageServer, ThreadingHTTPServer, threading.Thread]:
    """Start the server on 127.0.0.1 (free port) with good images ``a``..``l`` (JPEG), ``m.png``, ``a-copy.jpg``
    (same bytes as ``a.jpg``), ``a-v2.jpg`` (other bytes) and ``flaky-ok.jpg``."""
    images = {f"{c}.jpg": make_image(i) for i, c in enumerate("abcdefghijkl")}
    images["m.png"] = make_image(50, (80, 80), "PNG")
    images["a-copy.jpg"] = images["a.jpg"]
    images["a-v2.jpg"] = make_image(77)
    images["flaky-ok.jpg"] = make_image(88)
    state = ImageServer(images=images)
    httpd = ThreadingHTTPServer((state.host, 0), _handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return state, httpd, thread


def stop_serving(state: ImageServer, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
    """Release waiting handlers, stop the server and wait for its thread."""
    state.stopping.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
