"""A fake Sentinel Hub on 127.0.0.1 that the real `sentinelhub` client talks to over HTTP.

Routes (see /work/shared/data/SENTINELHUB_API.md for the surface the client needs):
    POST /oauth/token                     client_credentials -> a JWT-looking bearer token
    POST /api/v1/catalog/1.0.0/search     STAC search, paged with `context.next` (PAGE_SIZE per page)
    POST /api/v1/process                  one TIFF (one response) or an uncompressed TAR of `<id>.tif`

Pixels are real: Sentinel-2 L1C bands (REFERENCE_SCENES.npy, 5 dates) and the
CLM cloud mask of eo-learn's TestEOPatch, and Sentinel-1 VV backscatter
(`tests/data/s1_vv_db`, dB converted to linear power). The sample has no VH:
VH is served as VV - 7 dB (a typical cross-pol ratio), derived, not real.
Each scene keeps its real georeference; a Process request is answered by
nearest-neighbour sampling of the scene at the centres of the requested
pixels (`sample_scene`), dataMask 0 outside the scene and on S1 nodata.

Faults on demand (`FakeSentinelHub.add_fault`): 429 with Retry-After (ms),
500, 401, truncated bodies ("truncate": the connection closes before
Content-Length bytes; "corrupt": a cut body with a matching Content-Length),
slow responses; each for the next `times`
matching requests (None = always), optionally only when the request body
contains a given text (e.g. one acquisition's time).

    python -m tests.fake_sentinelhub --port 8765     # serves until Ctrl-C (client id/secret: cid/csecret)
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import json
import os
import re
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import numpy as np
import rasterio
import tifffile
from pyproj import Transformer

from rsdt_beam.sample_data import EOLEARN_TEST_EOPATCH as SAMPLE

HERE = os.path.dirname(os.path.abspath(__file__))
S1_DIR = os.path.join(HERE, "data", "s1_vv_db")
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
VH_MINUS_VV_DB = -7.0
PAGE_SIZE = 2
CLIENT_ID, CLIENT_SECRET = "cid", "csecret"


def _token_text(serial: int) -> str:
    """A JWT-looking token whose middle part decodes (length a multiple of 4, as the client needs)."""
    claims = json.dumps({"azp": CLIENT_ID, "n": serial})
    while len(claims) % 3:
        claims += " "
    return f"h.{base64.urlsafe_b64encode(claims.encode()).decode()}.s"


@dataclasses.dataclass
class Scene:
    """One acquisition: collection, time, georeference and per-identifier arrays."""

    collection: str  # "sentinel-2-l1c" | "sentinel-1-grd"
    time: datetime.datetime  # UTC
    crs: str
    transform: tuple[float, float, float, float, float, float]
    arrays: dict[str, np.ndarray]  # identifier -> [h, w]
    orbit: str | None = None  # "ascending" | "descending" for S1
    cloud_cover: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.arrays.values())).shape

    def footprint_wgs84(self) -> tuple[float, float, float, float]:
        h, w = self.shape
        a, _, c, _, e, f = self.transform
        xs, ys = [c, c + a * w], [f, f + e * h]
        to_wgs = Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        lons, lats = to_wgs.transform([xs[0], xs[1], xs[0], xs[1]], [ys[0], ys[0], ys[1], ys[1]])
        return min(lons), min(lats), max(lons), max(lats)


def _utc(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(datetime.timezone.utc)


def s2_scenes() -> list[Scene]:
    """The 5 TestEOPatch dates with all 13 bands, their CLM and dataMask (all 1)."""
    with open(os.path.join(SAMPLE, "reference_scenes_index.json")) as f:
        index = json.load(f)
    with open(os.path.join(SAMPLE, "bbox.geojson")) as f:
        ring = json.load(f)["coordinates"][0]
    bands = np.load(os.path.join(SAMPLE, "REFERENCE_SCENES.npy"))
    clm = np.load(os.path.join(SAMPLE, "mask", "CLM.npy"))[..., 0]
    _, height, width, _ = bands.shape
    left, right = min(p[0] for p in ring), max(p[0] for p in ring)
    bottom, top = min(p[1] for p in ring), max(p[1] for p in ring)
    transform = ((right - left) / width, 0.0, left, 0.0, -(top - bottom) / height, top)
    scenes = []
    for row, (stamp, k) in enumerate(zip(index["timestamps"], index["timestamps_index"])):
        arrays = {name: bands[row, :, :, b] for b, name in enumerate(S2_BANDS)}
        arrays["CLM"] = clm[k].astype(np.uint8)
        arrays["dataMask"] = np.ones((height, width), np.uint8)
        # Tile cloud cover is unknown; TestEOPatch was downloaded with maxcc 0.8 (its meta_info), so it
        # was below 80 %: the patch's CLM fraction stands in, capped at 79 %.
        scenes.append(
            Scene(
                "sentinel-2-l1c",
                _utc(stamp + "Z"),
                "EPSG:32633",
                transform,
                arrays,
                cloud_cover=min(79.0, float(clm[k].mean() * 100)),
            )
        )
    return scenes


def s1_scenes() -> list[Scene]:
    """The ascending and descending VV scenes of tests/data/s1_vv_db, as linear power (+ derived VH)."""
    scenes = []
    for name in sorted(os.listdir(S1_DIR)):
        if not name.endswith(".tif"):
            continue
        with rasterio.open(os.path.join(S1_DIR, name)) as dataset:
            db = dataset.read(1)
            nodata = dataset.nodata
            crs = dataset.crs.to_string()
            transform = tuple(dataset.transform)[:6]
        valid = db != nodata
        vv = np.where(valid, 10.0 ** (db / 10.0), 0.0).astype(np.float32)
        vh = np.where(valid, 10.0 ** ((db + VH_MINUS_VV_DB) / 10.0), 0.0).astype(np.float32)
        stamp = re.search(r"\d{8}T\d{6}", name).group(0)
        orbit = "ascending" if "___A_" in name else "descending"
        scenes.append(
            Scene(
                "sentinel-1-grd",
                datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=datetime.timezone.utc),
                crs,
                transform,
                {"VV": vv, "VH": vh, "dataMask": valid.astype(np.uint8)},
                orbit=orbit,
            )
        )
    return scenes


def sample_scene(
    scene: Scene,
    crs: str,
    bbox: tuple[float, float, float, float],
    width: int,
    height: int,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Nearest-neighbour samples of every array at the centres of a `height x width` grid over `bbox`.

    Returns ({identifier: [h, w]}, inside [h, w]) where `inside` marks pixels within the scene.
    """
    minx, miny, maxx, maxy = bbox
    xs = minx + (np.arange(width) + 0.5) * (maxx - minx) / width
    ys = maxy - (np.arange(height) + 0.5) * (maxy - miny) / height
    gx, gy = np.meshgrid(xs, ys)
    if crs != scene.crs:
        gx, gy = Transformer.from_crs(crs, scene.crs, always_xy=True).transform(gx, gy)
    a, _, c, _, e, f = scene.transform
    cols = np.floor((gx - c) / a).astype(np.int64)
    rows = np.floor((gy - f) / e).astype(np.int64)
    sh, sw = scene.shape
    inside = (rows >= 0) & (rows < sh) & (cols >= 0) & (cols < sw)
    r, q = np.clip(rows, 0, sh - 1), np.clip(cols, 0, sw - 1)
    sampled = {}
    for name, array in scene.arrays.items():
        values = array[r, q]
        sampled[name] = np.where(inside, values, 0).astype(array.dtype)
    return sampled, inside


def _tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _crs_of(url: str) -> str:
    code = url.rstrip("/").split("/")[-1]
    return "EPSG:4326" if code in ("4326", "CRS84") else f"EPSG:{code}"


@dataclasses.dataclass
class Fault:
    """`kind` in {"429", "500", "401", "truncate", "corrupt", "slow"} for the next `times` matching
    requests (None: all)."""

    kind: str
    path: str = "/api/v1/process"
    times: int | None = 1
    when: str | None = None  # only requests whose raw body contains this text
    skip: int = 0  # let this many matching requests through first
    retry_after_ms: int = 50
    delay: float = 1.0


@dataclasses.dataclass
class LoggedRequest:
    path: str
    status: int
    body: dict
    fault: str | None = None


class FakeSentinelHub:
    """The server: `start()` on a free port of 127.0.0.1, `stop()`; `url`, `token_url`, `log`, `add_fault`."""

    def __init__(
        self,
        scenes: list[Scene] | None = None,
        client_id: str = CLIENT_ID,
        client_secret: str = CLIENT_SECRET,
        page_size: int = PAGE_SIZE,
        port: int = 0,
    ):
        self.scenes = scenes if scenes is not None else s2_scenes() + s1_scenes()
        self.client_id, self.client_secret = client_id, client_secret
        self.page_size = page_size
        self.faults: list[Fault] = []
        self.log: list[LoggedRequest] = []
        self.tokens_issued: list[str] = []
        self.in_flight = 0  # requests being answered right now
        self.process_in_flight = 0
        self.peak_process_in_flight = 0  # most Process requests answered at once since reset()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def token_url(self) -> str:
        return self.url + "/oauth/token"

    def start(self) -> FakeSentinelHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-sentinelhub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.log.clear()
            self.peak_process_in_flight = 0

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Returns once no request is being answered (e.g. slow replies to a killed client)."""
        deadline = time.monotonic() + timeout
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)

    def add_fault(self, kind: str, **kwargs) -> Fault:
        fault = Fault(kind, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests_to(self, path: str, status: int | None = None) -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.path == path and (status is None or r.status == status)]

    def _take_fault(self, path: str, raw: bytes) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path != path or (fault.when and fault.when.encode() not in raw):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault
        return None

    def _record(self, path: str, status: int, body: dict, fault: str | None = None) -> None:
        with self._lock:
            self.log.append(LoggedRequest(path, status, body, fault))

    # --- routes -------------------------------------------------------------------------------------

    def token(self, form: dict) -> tuple[int, dict]:
        if form.get("client_id", [""])[0] != self.client_id or form.get("client_secret", [""])[0] != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Invalid client or Invalid client credentials"}
        with self._lock:
            token = _token_text(len(self.tokens_issued))
            self.tokens_issued.append(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600}

    def authorized(self, header: str | None) -> bool:
        with self._lock:
            return bool(header) and header.startswith("Bearer ") and header[7:] in self.tokens_issued

    def _matching(
        self,
        collection: str,
        start: datetime.datetime,
        end: datetime.datetime,
        orbit: str | None,
        max_cloud: float | None,
    ) -> list[Scene]:
        return sorted(
            (
                s
                for s in self.scenes
                if s.collection == collection
                and start <= s.time <= end
                and (orbit is None or s.orbit == orbit)
                and (max_cloud is None or s.cloud_cover < max_cloud)
            ),
            key=lambda s: s.time,
        )

    def search(self, body: dict) -> tuple[int, dict]:
        start, end = (_utc(t) for t in body["datetime"].split("/"))
        text = body.get("filter") or ""
        orbit = "ascending" if "'ascending'" in text else "descending" if "'descending'" in text else None
        max_cloud = float(text.split("eo:cloud_cover <")[1].split()[0]) if "eo:cloud_cover <" in text else None
        lon0, lat0, lon1, lat1 = body["bbox"]
        found = [
            s
            for s in self._matching(body["collections"][0], start, end, orbit, max_cloud)
            if not (
                s.footprint_wgs84()[2] < lon0
                or s.footprint_wgs84()[0] > lon1
                or s.footprint_wgs84()[3] < lat0
                or s.footprint_wgs84()[1] > lat1
            )
        ]
        offset = int(body.get("next", 0))
        limit = min(int(body.get("limit", 100)), self.page_size)
        page = found[offset : offset + limit]
        context = {"limit": limit, "returned": len(page)}
        if offset + limit < len(found):
            context["next"] = offset + limit
        features = [
            {
                "type": "Feature",
                "id": f"{s.collection}_{s.time:%Y%m%dT%H%M%S}",
                "properties": {"datetime": s.time.strftime("%Y-%m-%dT%H:%M:%SZ"), "eo:cloud_cover": s.cloud_cover},
            }
            for s in page
        ]
        return 200, {"type": "FeatureCollection", "features": features, "links": [], "context": context}

    def process(self, body: dict) -> tuple[int, bytes, str, float]:
        """(status, body, content type, processing units)."""
        data = body["input"]["data"][0]
        data_filter = data.get("dataFilter", {})
        time_range = data_filter["timeRange"]
        orbit = data_filter.get("orbitDirection")
        scenes = self._matching(
            data["type"],
            _utc(time_range["from"]),
            _utc(time_range["to"]),
            orbit.lower() if orbit else None,
            data_filter.get("maxCloudCoverage"),
        )
        bounds = body["input"]["bounds"]
        crs = _crs_of(bounds["properties"]["crs"])
        bbox = tuple(bounds["bbox"])
        output = body["output"]
        width, height = int(output["width"]), int(output["height"])
        identifiers = [r["identifier"] for r in output["responses"]]
        if scenes:
            arrays, _ = sample_scene(scenes[0], crs, bbox, width, height)
        else:
            arrays = {}
        members = {}
        for name in identifiers:
            if name in arrays:
                members[name] = arrays[name]
            elif name in ("dataMask", "CLM"):
                members[name] = np.zeros((height, width), np.uint8) + (255 if name == "CLM" else 0)
            elif scenes:
                return (
                    400,
                    json.dumps(
                        {"error": {"status": 400, "reason": "Bad Request", "message": f"unknown band {name}"}}
                    ).encode(),
                    "application/json",
                    0,
                )
            else:
                members[name] = np.zeros((height, width), np.float32)
        units = max(0.005, max(0.01, width * height / 512**2) * max(1, len(identifiers) - 1) / 3 * 2)
        if len(members) == 1:
            return 200, _tiff(next(iter(members.values()))), "image/tiff", units
        return 200, _tar({f"{k}.tif": _tiff(v) for k, v in members.items()}), "application/x-tar", units

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(
                self,
                status: int,
                payload: bytes,
                content_type: str,
                headers: dict | None = None,
                truncate: str | None = None,
            ):
                try:
                    self._write(status, payload, content_type, headers, truncate)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up (timeout): nothing to answer

            def _write(self, status, payload, content_type, headers, truncate):
                if truncate == "corrupt":
                    payload = payload[: len(payload) // 3]
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                if truncate == "truncate":
                    self.wfile.write(payload[: len(payload) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            def do_POST(self):
                with fake._lock:
                    fake.in_flight += 1
                    if self.path.startswith("/api/v1/process"):
                        fake.process_in_flight += 1
                        fake.peak_process_in_flight = max(fake.peak_process_in_flight, fake.process_in_flight)
                try:
                    self._handle()
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                        if self.path.startswith("/api/v1/process"):
                            fake.process_in_flight -= 1

            def _handle(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                path = self.path.split("?")[0]
                if path == "/oauth/token":
                    form = parse_qs(raw.decode())
                    status, reply = fake.token(form)
                    fake._record(path, status, {"client_id": form.get("client_id", [""])[0]})
                    return self._send(status, json.dumps(reply).encode(), "application/json")
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, b'{"error": "not JSON"}', "application/json")
                fault = fake._take_fault(path, raw)
                if fault and fault.kind == "slow":
                    time.sleep(fault.delay)
                if fault and fault.kind in ("429", "500", "401"):
                    status = int(fault.kind)
                    fake._record(path, status, body, fault.kind)
                    headers = {"Retry-After": str(fault.retry_after_ms)} if status == 429 else {}
                    error = {"error": {"status": status, "reason": "fault injected by the fake server"}}
                    return self._send(status, json.dumps(error).encode(), "application/json", headers)
                if not fake.authorized(self.headers.get("Authorization")):
                    fake._record(path, 401, body)
                    return self._send(401, b'{"error": {"status": 401, "reason": "Unauthorized"}}', "application/json")
                if path == "/api/v1/catalog/1.0.0/search":
                    status, reply = fake.search(body)
                    fake._record(path, status, body)
                    return self._send(status, json.dumps(reply).encode(), "application/geo+json")
                if path == "/api/v1/process":
                    status, payload, content_type, units = fake.process(body)
                    truncate = fault.kind if fault and fault.kind in ("truncate", "corrupt") else None
                    fake._record(path, status, body, fault.kind if fault else None)
                    return self._send(
                        status, payload, content_type, {"x-processingunits-spent": f"{units:.6f}"}, truncate=truncate
                    )
                fake._record(path, 404, body)
                return self._send(404, b'{"error": "no such route"}', "application/json")

        return Handler


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Fake Sentinel Hub on 127.0.0.1 (real sample pixels)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    server = FakeSentinelHub(port=args.port).start()
    print(f"fake Sentinel Hub at {server.url} (token URL {server.token_url}, client id {CLIENT_ID})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
