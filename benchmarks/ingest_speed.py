"""Ingestion speed: images/s from a local HTTP server into the object store (a real SeaweedFS on 127.0.0.1).

Serves N synthetic JPEG photos (default 640x480, ~100 KB, like GLDv2 thumbnails) from a threading HTTP server,
ingests a CSV of their URLs with ``landmark.stages.ingest`` (download, full decode check, SHA-1, content-addressed
upload, journal, manifest commit), then ingests the same CSV again (everything known: nothing fetched).

    python benchmarks/ingest_speed.py [--images 400] [--workers 8] [--size 640] [--store s3]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

from landmark.config import Config, IngestConfig
from landmark.platform.infra import start_seaweed, stop_seaweed
from landmark.platform.storage import ObjectStore, S3Settings, read_credentials_file
from landmark.stages.ingest import ingest

REPO = Path(__file__).resolve().parents[1]


def photo(seed: int, width: int) -> bytes:
    """A JPEG (quality 90) with smooth structure plus noise, so it compresses like a photo."""
    height = width * 3 // 4
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    freq = rng.uniform(0.01, 0.05, size=3)
    base = np.stack([127 + 100 * np.sin(xx * f + yy * f * 0.7 + seed) for f in freq], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, size=base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def serve(images: dict[str, bytes]) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet."""

        def do_GET(self) -> None:
            body = images.get(self.path.rsplit("/", 1)[-1])
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "image/jpeg" if body is not None else "text/plain")
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--size", type=int, default=640, help="image width in pixels (height = 3/4)")
    parser.add_argument("--store", choices=("s3", "local", "both"), default="s3")
    args = parser.parse_args()

    images = {f"{k:06d}.jpg": photo(k, args.size) for k in range(args.images)}
    total_bytes = sum(len(v) for v in images.values())
    (REPO / "build").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir=REPO / "build"))
    httpd, thread = serve(images)
    server = start_seaweed(work / "s3")
    try:
        port = httpd.server_address[1]
        csv = work / "batch.csv"
        csv.write_text(
            "id,url,landmark_id\n"
            + "".join(
                f"img{name[:-4]},http://127.0.0.1:{port}/{name},{k % 50}\n" for k, name in enumerate(images)
            )
        )
        settings = S3Settings(
            server.endpoint, "bench", "us-east-1", read_credentials_file(server.credentials_file)
        )
        store = ObjectStore(settings)
        cfg = dataclasses.replace(Config(), ingest=IngestConfig(store=args.store, workers=args.workers))

        start = time.perf_counter()
        first = ingest(cfg, str(csv), work / "out", object_store=store, progress=False)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        again = ingest(cfg, str(csv), work / "out", object_store=store, progress=False)
        rerun_seconds = time.perf_counter() - start
    finally:
        stop_seaweed(work / "s3")
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
        shutil.rmtree(work, ignore_errors=True)
    if first.added != args.images or first.quarantined_total or again.added:
        raise SystemExit(f"unexpected ingest result: {first.to_dict()} / rerun {again.to_dict()}")
    write_result(
        "ingest_speed",
        {
            "source": "local threading HTTP server (127.0.0.1)",
            "store": args.store,
            "object_store": "SeaweedFS (weed mini) on 127.0.0.1" if args.store != "local" else None,
            "images": args.images,
            "image_size": [args.size, args.size * 3 // 4],
            "mean_image_kb": round(total_bytes / args.images / 1024, 1),
            "workers": args.workers,
            "seconds": round(seconds, 2),
            "images_per_s": round(args.images / seconds, 1),
            "mb_per_s": round(total_bytes / seconds / 1e6, 2),
            "rerun_seconds_nothing_new": round(rerun_seconds, 2),
            "steps": "download, full decode check, sha1, content-addressed upload, fsync'ed journal, manifest commit",
        },
    )


if __name__ == "__main__":
    main()
