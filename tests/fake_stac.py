"""A local STAC API and an HTTP file server with Range support, on 127.0.0.1, for pystac-client and GDAL.

    StacApi(items, conformance="query" | "filter" | None, page_size=2, port=0)   # port 0: a free one
        GET  /                      landing page: conformsTo, links to search (GET and POST), collections
        GET  /conformance, /collections, /collections/<id>
        POST /search, GET /search   ItemCollection filtered by collections, bbox, datetime and the
                                    `eo:cloud_cover` condition of the `query` extension or a CQL2-JSON
                                    `filter` (whichever `conformance` names; the other is refused with
                                    400, as a real API does); `page_size` items per page with a `next`
                                    link (POST: a body with a token, merged into the next request)
    FileServer(root)
        HEAD, GET /<path>           the file under `root`: 200 whole, 206 with Content-Range for one
                                    range, 206 multipart/byteranges for several; Accept-Ranges: bytes

Both log every request (`.log`: method, path, Range, status, body bytes sent). `FileServer.add_fault(path,
status, times, retry_after)` answers the next `times` requests of a path with `status` (429 with a
Retry-After in seconds); `latency` (s) delays every answer, as a distant server would.

The catalog items are built by `tests.stac_catalog` from the real files of tests/data.

    python -m tests.fake_stac ROOT [--latency 0.05]   # serves ROOT's files, prints the URL; GET /__log
                                                      # returns (and clears) the request log as JSON
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

QUERY = "https://api.stacspec.org/v1.0.0-rc.1/item-search#query"
FILTER = "https://api.stacspec.org/v1.0.0-rc.1/item-search#filter"
CORE = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/collections",
)


@dataclasses.dataclass
class Logged:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes
    body: dict | None = None  # a JSON request body (STAC search)
    authorization: str | None = None  # the request's Authorization header


class _Server:
    """A ThreadingHTTPServer in a daemon thread; `url` is its root."""

    def __init__(self, handler, port: int = 0):
        self.log: list[Logged] = []
        self.latency = 0.0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._httpd.shutdown()
        self._httpd.server_close()

    def record(self, entry: Logged) -> None:
        with self._lock:
            self.log.append(entry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers (GDAL reuses its connections)

    def log_message(self, *args):
        pass

    @property
    def owner(self):
        return self.server.owner

    def reply(self, status: int, body: bytes, content_type: str, headers=None, head=False, asked=None, json_body=None):
        """Logs the request (before answering: a client may act on the answer at once), then answers."""
        self.owner.record(
            Logged(
                self.command,
                urllib.parse.urlsplit(self.path).path,
                asked,
                status,
                0 if head else len(body),
                json_body,
                self.headers.get("Authorization"),
            )
        )
        if self.owner.latency:
            time.sleep(self.owner.latency)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


# --- STAC API -------------------------------------------------------------------------------------


def _bbox_intersects(a, b) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def _parse_datetime(text: str) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    def one(part):
        if part in ("", ".."):
            return None
        return datetime.datetime.fromisoformat(part.replace("Z", "+00:00"))

    start, _, end = text.partition("/")
    return one(start), one(end) if end else one(start)


_OPS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "="}


def _compare(value, op: str, limit) -> bool:
    return {
        "<": value < limit,
        "<=": value <= limit,
        ">": value > limit,
        ">=": value >= limit,
        "=": value == limit,
    }[op]


def _cql2(expression: dict, properties: dict) -> bool:
    """The subset of CQL2-JSON a cloud filter needs: and, comparisons of a property with a number."""
    op, args = expression["op"], expression["args"]
    if op == "and":
        return all(_cql2(arg, properties) for arg in args)
    name, limit = args[0]["property"], args[1]
    return name in properties and _compare(properties[name], op, limit)


class StacApi(_Server):
    def __init__(self, items: list[dict], conformance: str | None = "query", page_size: int = 2, port: int = 0):
        self.items = items
        self.conformance = conformance
        self.page_size = page_size
        super().__init__(_StacHandler, port)

    def collections(self) -> list[str]:
        return sorted({item["collection"] for item in self.items})

    def conforms_to(self) -> list[str]:
        extra = {"query": [QUERY], "filter": [FILTER, "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"]}
        return [*CORE, *extra.get(self.conformance, [])]

    def search(self, params: dict) -> tuple[int, dict]:
        if "query" in params and self.conformance != "query":
            return 400, {"code": "BadRequest", "description": "query extension not supported"}
        if "filter" in params and self.conformance != "filter":
            return 400, {"code": "BadRequest", "description": "filter extension not supported"}
        found = []
        start, end = _parse_datetime(params["datetime"]) if params.get("datetime") else (None, None)
        for item in self.items:
            props = item["properties"]
            if params.get("collections") and item["collection"] not in params["collections"]:
                continue
            if params.get("bbox") and not _bbox_intersects(item["bbox"], [float(v) for v in params["bbox"]]):
                continue
            moment = datetime.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
            if (start and moment < start) or (end and moment > end):
                continue
            conditions = params.get("query") or {}
            if not all(
                name in props and _compare(props[name], _OPS[op], limit)
                for name, ops in conditions.items()
                for op, limit in ops.items()
            ):
                continue
            if params.get("filter") and not _cql2(params["filter"], props):
                continue
            found.append(item)
        limit = min(int(params.get("limit") or self.page_size), self.page_size)
        offset = int(params.get("token") or 0)
        page = found[offset : offset + limit]
        links = [{"rel": "root", "href": self.url + "/"}]
        if offset + limit < len(found):
            links.append(
                {
                    "rel": "next",
                    "href": self.url + "/search",
                    "method": "POST",
                    "body": {"token": str(offset + limit)},
                    "merge": True,
                }
            )
        return 200, {"type": "FeatureCollection", "features": page, "links": links, "numberMatched": len(found)}


class _StacHandler(_Handler):
    def _json(self, status: int, payload: dict, body=None):
        self.reply(status, json.dumps(payload).encode(), "application/json", json_body=body)

    def do_GET(self):
        api: StacApi = self.owner
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rstrip("/")
        if path == "":
            links = [
                {"rel": "self", "href": api.url + "/", "type": "application/json"},
                {"rel": "root", "href": api.url + "/", "type": "application/json"},
                {"rel": "conformance", "href": api.url + "/conformance"},
                {"rel": "data", "href": api.url + "/collections", "type": "application/json"},
                {"rel": "search", "href": api.url + "/search", "method": "GET", "type": "application/geo+json"},
                {"rel": "search", "href": api.url + "/search", "method": "POST", "type": "application/geo+json"},
            ]
            self._json(
                200,
                {
                    "type": "Catalog",
                    "stac_version": "1.0.0",
                    "id": "local",
                    "description": "a local STAC API for tests",
                    "conformsTo": api.conforms_to(),
                    "links": links,
                },
            )
        elif path == "/conformance":
            self._json(200, {"conformsTo": api.conforms_to()})
        elif path == "/collections":
            self._json(200, {"collections": [self._collection(c) for c in api.collections()], "links": []})
        elif path.startswith("/collections/"):
            self._json(200, self._collection(path.rsplit("/", 1)[1]))
        elif path.startswith("/sas/token/"):  # Planetary Computer's SAS token API: /token/<account>/<container>
            account, container = path.split("/")[3:5]
            expiry = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)).isoformat()
            self._json(200, {"msft:expiry": expiry.replace("+00:00", "Z"), "token": f"sig={account}-{container}"})
        elif path == "/search":
            query = dict(urllib.parse.parse_qsl(url.query))
            params = {key: value for key, value in query.items()}
            for key in ("collections", "bbox"):
                if key in params:
                    params[key] = params[key].split(",")
            for key in ("query", "filter"):
                if key in params:
                    params[key] = json.loads(params[key])
            self._json(*api.search(params))
        else:
            self._json(404, {"code": "NotFound"})

    def _collection(self, name: str) -> dict:
        return {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": name,
            "description": name,
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            "links": [],
        }

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if urllib.parse.urlsplit(self.path).path.rstrip("/") != "/search":
            self._json(404, {"code": "NotFound"}, body)
            return
        self._json(*self.owner.search(body), body)


# --- files with Range -----------------------------------------------------------------------------

_RANGE = re.compile(r"(\d*)-(\d*)")


class FileServer(_Server):
    def __init__(self, root: str):
        self.root = root
        self.faults: dict[str, list] = {}
        super().__init__(_FileHandler)

    def href(self, relative: str) -> str:
        return f"{self.url}/{relative}"

    def add_fault(self, path: str, status: int, times: int | None = 1, retry_after: float | None = None) -> None:
        """The next `times` requests of `/path` (None: all) are answered with `status`."""
        self.faults["/" + path.lstrip("/")] = [status, times, retry_after]

    def take_fault(self, path: str):
        with self._lock:
            fault = self.faults.get(path)
            if fault is None:
                return None
            status, times, retry_after = fault
            if times is not None:
                if times <= 0:
                    return None
                fault[1] = times - 1
            return status, retry_after

    def requests_of(self, path: str) -> list[Logged]:
        return [entry for entry in self.log if entry.path == "/" + path.lstrip("/")]


class _FileHandler(_Handler):
    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _serve(self, head: bool):
        server: FileServer = self.owner
        path = urllib.parse.urlsplit(self.path).path
        if path == "/__log":  # the log so far, taken (a server in another process, e.g. for benchmarks)
            with server._lock:
                taken, server.log[:] = list(server.log), []
            body = json.dumps([dataclasses.asdict(e) for e in taken]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        asked = self.headers.get("Range")
        fault = server.take_fault(path)
        if fault is not None:
            status, retry_after = fault
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            self.reply(status, b"fault", "text/plain", headers, head, asked)
            return
        local = os.path.join(server.root, urllib.parse.unquote(path.lstrip("/")))
        if not os.path.isfile(local):
            self.reply(404, b"not found", "text/plain", head=head, asked=asked)
            return
        with open(local, "rb") as f:
            data = f.read()
        size = len(data)
        common = {"Accept-Ranges": "bytes"}
        if not asked:
            self.reply(200, data, "image/tiff", common, head, asked)
            return
        ranges = []
        for part in asked.split("=", 1)[1].split(","):
            first, last = _RANGE.match(part.strip()).groups()
            if first == "":
                first, last = max(0, size - int(last)), size - 1
            first, last = int(first), min(int(last) if last else size - 1, size - 1)
            ranges.append((first, last))
        if any(first >= size for first, _ in ranges):
            self.reply(416, b"", "text/plain", {"Content-Range": f"bytes */{size}", **common}, head, asked)
            return
        if len(ranges) == 1:
            first, last = ranges[0]
            headers = {"Content-Range": f"bytes {first}-{last}/{size}", **common}
            self.reply(206, data[first : last + 1], "image/tiff", headers, head, asked)
        else:
            boundary = "rsdtboundary"
            parts = []
            for first, last in ranges:
                parts.append(
                    f"--{boundary}\r\nContent-Type: image/tiff\r\nContent-Range: bytes {first}-{last}/{size}"
                    f"\r\n\r\n".encode()
                    + data[first : last + 1]
                    + b"\r\n"
                )
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            self.reply(206, body, f"multipart/byteranges; boundary={boundary}", common, head, asked)


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="serve a folder with Range support")
    parser.add_argument("root")
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args(argv)
    with FileServer(args.root) as files:
        files.latency = args.latency
        print(files.url, flush=True)
        serve_until_interrupted()


def serve_until_interrupted() -> None:
    """Keeps the servers started in this process running until Ctrl-C."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
