"""A local fake of Google Cloud Storage (JSON listing API + object downloads with Range) on
127.0.0.1, with per-object misbehaviours, for the download tests."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

BUCKET = "sen1floods11"
PREFIX = "v1.1/data/flood_events/HandLabeled/"


@dataclass
class FakeObject:
    data: bytes
    truncate: int = 0  # the first N replies stop after half the body (-1: every reply)
    wrong_md5: bool = False  # the listing advertises a wrong md5Hash
    omit_md5: bool = False  # the listing has no md5Hash
    ignore_range: bool = False  # always reply 200 with the whole body
    fail: int = 0  # the first N requests get a 500
    delay: float = 0.0  # seconds to wait before replying


class FakeGCS:
    """The state behind the handler: objects, their misbehaviours, and a log of requests."""

    def __init__(self) -> None:
        self.objects: dict[str, FakeObject] = {}
        self.requests: list[tuple[str, str | None]] = []  # (object name, Range header)
        self.listings: list[dict[str, list[str]]] = []  # query of each listing request
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        self.page_size = 2
        self.api = ""

    def add(self, name: str, data: bytes, **options) -> bytes:
        self.objects[name] = FakeObject(data, **options)
        return data

    def object_requests(self, name: str | None = None) -> list[tuple[str, str | None]]:
        with self.lock:
            return [r for r in self.requests if name is None or r[0] == name]


def make_handler(gcs: FakeGCS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output quiet
            pass

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == f"/storage/v1/b/{BUCKET}/o":
                return self._list(parse_qs(url.query))
            if not url.path.startswith(f"/{BUCKET}/"):
                return self._reply(404, b"no such bucket")
            name = unquote(url.path[len(f"/{BUCKET}/") :])
            with gcs.lock:
                gcs.requests.append((name, self.headers.get("Range")))
                obj = gcs.objects.get(name)
                if obj is None:
                    return self._reply(404, b"no such object")
                if obj.fail > 0:
                    obj.fail -= 1
                    return self._reply(500, b"backend error")
                truncate = obj.truncate != 0
                obj.truncate -= obj.truncate > 0
                gcs.active += 1
                gcs.max_active = max(gcs.max_active, gcs.active)
            try:
                time.sleep(obj.delay)
                self._send_object(obj, truncate)
            finally:
                with gcs.lock:
                    gcs.active -= 1

        def _send_object(self, obj: FakeObject, truncate: bool) -> None:
            data, start, status, headers = obj.data, 0, 200, {}
            requested = self.headers.get("Range")
            if requested and not obj.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", requested).group(1))
                if start >= len(data):
                    return self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                status, headers = 206, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            body = data[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))  # the full length, even when cut short
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if truncate else body)  # HTTP/1.0: then the connection closes

        def _list(self, query: dict[str, list[str]]) -> None:
            with gcs.lock:
                gcs.listings.append(query)
            prefix = query.get("prefix", [""])[0]
            start = int(query.get("pageToken", ["0"])[0])
            names = sorted(n for n in gcs.objects if n.startswith(prefix))
            items = []
            for name in names[start : start + gcs.page_size]:
                obj = gcs.objects[name]
                digest = hashlib.md5(obj.data + b"x" * obj.wrong_md5).digest()
                item = {"kind": "storage#object", "name": name, "bucket": BUCKET, "size": str(len(obj.data))}
                if not obj.omit_md5:
                    item["md5Hash"] = base64.b64encode(digest).decode()
                items.append(item)
            page: dict = {"kind": "storage#objects", "items": items}
            if start + gcs.page_size < len(names):
                page["nextPageToken"] = str(start + gcs.page_size)
            self._reply(200, json.dumps(page).encode(), {"Content-Type": "application/json"})

    return Handler


@contextlib.contextmanager
def serve_fake_gcs() -> Iterator[FakeGCS]:
    """Run a fake bucket server in a daemon thread; yields its state (``.api`` is its address)."""
    state = FakeGCS()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    state.api = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
