"""Sentinel Hub as a Stage 1 source: collections, evalscripts, requests, credentials, rate limits.

What rsdtlib's `Retrieve` asks Sentinel Hub for, built on the `sentinelhub`
client (3.x):

- Sentinel-1 IW GRD, ascending and descending: VV and VH as linear power,
  orthorectified with the COPERNICUS DEM; valid = `dataMask`.
- Sentinel-2 L1C: the 13 bands B01..B12 (with B8A) as reflectance; valid =
  `dataMask` and `CLM != 1` (not cloud; rsdtlib's rule).

One Process request asks for one chunk of the run's grid (the chunk's exact
bbox and size in pixels) at one acquisition (time range +-`time_difference`
around it, as rsdtlib), with one single-band response per band and mask
(float32 bands, uint8 masks): the reply is a TAR of `<band>.tif` members.

The stock `DataCollection`s carry `https://services.sentinel-hub.com` as their
service URL, which wins over the config's base URL; `data_collection` derives
them with the configured URL so the same code talks to Sentinel Hub, the
Copernicus Data Space Ecosystem or a test server.

Credentials never travel in the job graph: `Credentials` names where the
client id and secret are read (environment variables, a local or gs:// file,
Google Secret Manager, a sentinelhub config profile), and the launcher and
every worker process read them there and get their own OAuth token. Nothing
here prints or logs the values.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import tarfile
import threading
import time
import urllib.parse

import numpy as np
import requests

from rsdt_beam import fs
from rsdt_beam.common.modalities import OPTICAL, SAR_ASCENDING, SAR_DESCENDING
from rsdt_beam.errors import UserError
from rsdt_beam.grid import Grid, PixelWindow

_LOG = logging.getLogger(__name__)

SENTINEL_HUB_URL = "https://services.sentinel-hub.com"
SENTINEL_HUB_TOKEN_URL = "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token"
CDSE_URL = "https://sh.dataspace.copernicus.eu"
CDSE_TOKEN_URL = "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"

MAX_REQUEST_PIXELS = 2500  # Process API limit per side of one request
PROCESSING_UNITS_HEADER = "x-processingunits-spent"

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
S1_BANDS = ("VV", "VH")


@dataclasses.dataclass(frozen=True)
class Collection:
    """One of rsdtlib's three inputs: which Sentinel Hub collection, which bands and masks."""

    modality: str
    stock_name: str  # attribute of sentinelhub.DataCollection
    bands: tuple[str, ...]
    masks: tuple[str, ...]
    units: str
    orthorectify: bool

    @property
    def identifiers(self) -> tuple[str, ...]:
        return self.bands + self.masks


COLLECTIONS = {
    SAR_ASCENDING: Collection(SAR_ASCENDING, "SENTINEL1_IW_ASC", S1_BANDS, ("dataMask",), "LINEAR_POWER", True),
    SAR_DESCENDING: Collection(SAR_DESCENDING, "SENTINEL1_IW_DES", S1_BANDS, ("dataMask",), "LINEAR_POWER", True),
    OPTICAL: Collection(OPTICAL, "SENTINEL2_L1C", S2_BANDS, ("dataMask", "CLM"), "REFLECTANCE", False),
}


def default_token_url(base_url: str) -> str:
    """The OAuth token URL of Sentinel Hub or CDSE; other services need it given."""
    known = {SENTINEL_HUB_URL: SENTINEL_HUB_TOKEN_URL, CDSE_URL: CDSE_TOKEN_URL}
    try:
        return known[base_url.rstrip("/")]
    except KeyError:
        raise ValueError(f"no known token URL for {base_url}; give --sh_token_url") from None


class CredentialsError(RuntimeError):
    """Sentinel Hub credentials are missing or were rejected (the run stops before any work)."""


class FetchError(Exception):
    """One request that failed for good (after the retries), with the reason and what it cost."""

    def __init__(self, reason: str, stats: RequestStats | None = None):
        super().__init__(reason)
        self.stats = stats or RequestStats()


SECRET_VERSION = re.compile(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+")
ENV_CLIENT_ID, ENV_CLIENT_SECRET = "SH_CLIENT_ID", "SH_CLIENT_SECRET"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Where the Sentinel Hub client id and secret are read: a place, never the values (it is pickled).

    At most one of `file` (local or gs:// JSON `{"client_id": ..., "client_secret": ...}`), `secret`
    (a Google Secret Manager version, `projects/P/secrets/S/versions/V`, holding that JSON) or `profile`
    (a sentinelhub config profile on the machine); none: the environment variables SH_CLIENT_ID and
    SH_CLIENT_SECRET. Read on the launcher (to check them and search the catalog) and again in each worker
    process, so a worker needs access to the same place (its environment, the file, the secret).
    """

    file: str | None = None
    secret: str | None = None
    profile: str | None = None

    def __post_init__(self):
        given = [
            flag
            for flag, value in (
                ("--sh_credentials_file", self.file),
                ("--sh_secret", self.secret),
                ("--sh_profile", self.profile),
            )
            if value
        ]
        if len(given) > 1:
            raise CredentialsError(f"give one of {', '.join(given)}, not several")
        if self.secret and not SECRET_VERSION.fullmatch(self.secret):
            raise CredentialsError(
                f"--sh_secret {self.secret} is not a Secret Manager version name (projects/P/secrets/S/versions/V)"
            )

    def describe(self) -> str:
        if self.file:
            return f"credentials file {self.file}"
        if self.secret:
            return f"Secret Manager {self.secret}"
        if self.profile:
            return f"sentinelhub config profile {self.profile!r}"
        return f"environment variables {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET}"

    def resolve(self) -> tuple[str, str]:
        """(client id, secret), read now; file and Secret Manager values are kept for the process.

        Raises CredentialsError naming the place and what is wrong, never a value.
        """
        if self.file or self.secret:
            with _RESOLVED_LOCK:
                if self not in _RESOLVED:
                    _RESOLVED[self] = self._read_json()
                return _RESOLVED[self]
        if self.profile:
            return self._read_profile()
        client_id, secret = os.environ.get(ENV_CLIENT_ID, ""), os.environ.get(ENV_CLIENT_SECRET, "")
        if not (client_id and secret):
            raise CredentialsError(
                f"no Sentinel Hub credentials: set {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} "
                f"(on the workers too), or give --sh_credentials_file, --sh_secret or "
                f"--sh_profile"
            )
        return client_id, secret

    def forget(self) -> None:
        """Drops the values kept for the process (after the service rejected them: read them again)."""
        with _RESOLVED_LOCK:
            _RESOLVED.pop(self, None)

    def _read_json(self) -> tuple[str, str]:
        if self.file:
            if not fs.exists(self.file):
                raise CredentialsError(f"cannot read --sh_credentials_file {self.file}: it does not exist")
            try:
                text = fs.read_bytes(self.file).decode()
            except Exception as error:  # OSError, or the object store's (e.g. 403 Forbidden on a worker)
                raise CredentialsError(
                    f"cannot read --sh_credentials_file {self.file}: {type(error).__name__}"
                ) from None
        else:
            text = _access_secret_version(self.secret)
        try:
            values = json.loads(text)
            client_id, secret = values["client_id"], values["client_secret"]
        except (ValueError, KeyError, TypeError):
            raise CredentialsError(f"{self.describe()} is not JSON with client_id and client_secret") from None
        if not (isinstance(client_id, str) and isinstance(secret, str) and client_id and secret):
            raise CredentialsError(f"{self.describe()} has an empty client_id or client_secret")
        return client_id, secret

    def _read_profile(self) -> tuple[str, str]:
        from sentinelhub import SHConfig

        try:
            config = SHConfig(self.profile)
        except KeyError as error:
            raise CredentialsError(
                f"sentinelhub config profile {self.profile!r} does not exist (see `sentinelhub.config --show`)"
            ) from error
        if config.sh_client_id and config.sh_client_secret:
            return config.sh_client_id, config.sh_client_secret
        raise CredentialsError(f"sentinelhub config profile {self.profile!r} has no sh_client_id/sh_client_secret")


_RESOLVED: dict[Credentials, tuple[str, str]] = {}
_RESOLVED_LOCK = threading.Lock()


def _access_secret_version(name: str, timeout: float = 60.0) -> str:
    """The payload of a Secret Manager secret version (google-cloud-secret-manager, imported only here)."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import secretmanager

    try:
        response = secretmanager.SecretManagerServiceClient().access_secret_version(name=name, timeout=timeout)
    except (exceptions.GoogleAPIError, DefaultCredentialsError) as error:
        raise CredentialsError(
            f"cannot read --sh_secret {name}: {type(error).__name__}: {_first_line(error)}"
        ) from None
    return response.payload.data.decode()


@dataclasses.dataclass(frozen=True)
class SentinelHubSettings:
    """Where and how to talk to Sentinel Hub; picklable, travels to the workers (without any secret).

    `max_download_attempts` and `retry_sleep` bound the retries of 5xx and
    connection errors (back-off `retry_sleep * 3**n`); `max_throttle_retries`
    bounds the 429 answers honoured (each waits the server's Retry-After).
    """

    base_url: str = SENTINEL_HUB_URL
    token_url: str = SENTINEL_HUB_TOKEN_URL
    credentials: Credentials = Credentials()
    maxcc: float | None = None
    time_difference: float = 1.0
    max_download_attempts: int = 4
    retry_sleep: float = 5.0
    request_timeout: float = 120.0
    max_throttle_retries: int | None = 100

    def __post_init__(self):
        if self.maxcc is not None and not 0.0 <= self.maxcc <= 1.0:
            raise UserError(f"--maxcc must be within [0, 1] (or none), got {self.maxcc}")
        for name in ("base_url", "token_url"):
            url = urllib.parse.urlparse(getattr(self, name))
            if url.scheme not in ("http", "https") or not url.netloc:
                raise UserError(f"--sh_{name} {getattr(self, name)!r} is not an http(s) URL")

    def config(self, with_credentials: bool = False):
        """A `SHConfig` that reads no config file (everything comes from here); with the credentials (read now)
        only to get a token or search the catalog: requests of a session need none."""
        from sentinelhub import SHConfig

        if self.token_url.startswith("http://"):
            # oauthlib refuses plain-http token URLs; only a local test server may use one.
            if urllib.parse.urlparse(self.token_url).hostname not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(f"token URL {self.token_url} must be https (plain http only on localhost)")
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
        client_id, client_secret = self.credentials.resolve() if with_credentials else ("", "")
        return SHConfig(
            use_defaults=True,
            sh_base_url=self.base_url.rstrip("/"),
            sh_token_url=self.token_url,
            sh_client_id=client_id,
            sh_client_secret=client_secret,
            max_download_attempts=self.max_download_attempts,
            download_sleep_time=self.retry_sleep,
            download_timeout_seconds=self.request_timeout,
            max_retries=self.max_throttle_retries,
        )


def data_collection(collection: Collection, base_url: str):
    """The stock collection re-derived with `base_url` as its service URL (one name per URL)."""
    from sentinelhub import DataCollection

    base_url = base_url.rstrip("/")
    stock = getattr(DataCollection, collection.stock_name)
    if stock.service_url == base_url:
        return stock
    suffix = hashlib.sha1(base_url.encode()).hexdigest()[:10]
    return stock.define_from(f"RSDT_{collection.stock_name}_{suffix}", service_url=base_url)


def evalscript(collection: Collection) -> str:
    """Evalscript V3 returning each band (float32, `collection.units`) and mask (uint8) as its own response."""
    bands = ", ".join(f'"{b}"' for b in collection.bands)
    masks = ", ".join(f'"{m}"' for m in collection.masks)
    outputs = ", ".join(
        [f'{{id: "{b}", bands: 1, sampleType: "FLOAT32"}}' for b in collection.bands]
        + [f'{{id: "{m}", bands: 1, sampleType: "UINT8"}}' for m in collection.masks]
    )
    values = ", ".join(f"{name}: [sample.{name}]" for name in collection.identifiers)
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        f"  return {{input: [{{bands: [{bands}], units: \"{collection.units}\"}},\n"
        f"                  {{bands: [{masks}], units: \"DN\"}}],\n"
        f"          output: [{outputs}]}};\n"
        "}\n"
        f"function evaluatePixel(sample) {{\n  return {{{values}}};\n}}\n"
    )


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).replace(tzinfo=None)


def _bbox(grid: Grid, window: PixelWindow):
    from sentinelhub import CRS, BBox

    a, b, c, d, e, f = grid.window_transform(window)
    if b or d:
        raise ValueError(f"grid {grid.describe()} is rotated; Sentinel Hub needs a north-up grid")
    xs = (c, c + a * window.width)
    ys = (f, f + e * window.height)
    return BBox((min(xs), min(ys), max(xs), max(ys)), crs=CRS(grid.crs))


def process_request(
    settings: SentinelHubSettings, collection: Collection, grid: Grid, window: PixelWindow, acquired: float, config=None
):
    """The Process request for one chunk (`window` of `grid`) at one acquisition (epoch seconds)."""
    from sentinelhub import MimeType, SentinelHubRequest

    if window.height > MAX_REQUEST_PIXELS or window.width > MAX_REQUEST_PIXELS:
        raise ValueError(
            f"chunk {window} is {window.height} x {window.width} px; Sentinel Hub takes at most "
            f"{MAX_REQUEST_PIXELS} x {MAX_REQUEST_PIXELS} per request"
        )
    config = config or settings.config()
    other_args = (
        {"processing": {"orthorectify": True, "demInstance": "COPERNICUS"}} if collection.orthorectify else None
    )
    input_data = SentinelHubRequest.input_data(
        data_collection=data_collection(collection, settings.base_url),
        time_interval=(_utc(acquired - settings.time_difference), _utc(acquired + settings.time_difference)),
        maxcc=settings.maxcc if collection.modality == OPTICAL else None,
        other_args=other_args,
    )
    return SentinelHubRequest(
        evalscript=evalscript(collection),
        input_data=[input_data],
        responses=[SentinelHubRequest.output_response(name, MimeType.TIFF) for name in collection.identifiers],
        bbox=_bbox(grid, window),
        size=(window.width, window.height),
        config=config,
    )


def decode_bands(
    collection: Collection,
    members: dict,
    height: int,
    width: int,
) -> tuple[np.ndarray, np.ndarray]:
    """`(float32 [h, w, bands], bool valid [h, w])` of a decoded TAR reply (`{"B01.tif": array, ...}`).

    valid = dataMask, and for Sentinel-2 also CLM != 1 (cloud), rsdtlib's rule.
    Raises FetchError for a missing member or a wrong shape.
    """

    def member(name: str) -> np.ndarray:
        array = members.get(f"{name}.tif")
        if array is None:
            raise FetchError(f"reply has no {name}.tif (members: {', '.join(sorted(members))})")
        array = np.asarray(array)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.shape != (height, width):
            raise FetchError(f"{name}.tif is {array.shape}, requested {height} x {width}")
        return array

    data = np.stack([member(b).astype(np.float32, copy=False) for b in collection.bands], axis=-1)
    valid = member("dataMask") == 1
    if "CLM" in collection.masks:
        valid &= member("CLM") != 1
    return data, valid


def estimate_processing_units(collection: Collection, height: int, width: int) -> float:
    """Sentinel Hub's PU rule: area/512^2 (min 0.01) x input bands/3 x 2 (float32) [x 2 orthorectified], min 0.005.

    dataMask is free; CLM counts as an input band.
    """
    area = max(0.01, height * width / (512 * 512))
    input_bands = len(collection.bands) + sum(m != "dataMask" for m in collection.masks)
    units = area * input_bands / 3 * 2 * (2 if collection.orthorectify else 1)
    return max(0.005, units)


def search_acquisitions(
    settings: SentinelHubSettings, collection: Collection, grid: Grid, start: float, end: float
) -> list[float]:
    """Acquisition times (epoch seconds, sorted) of `collection` over the grid in `[start, end)`.

    Catalog API, paged; `maxcc` filters Sentinel-2, the derived S1 collections
    filter the orbit direction; acquisitions closer than `time_difference`
    are one, and so are those of the same second (one observation name).
    """
    from sentinelhub.api.catalog import get_available_timestamps
    from sentinelhub.exceptions import DownloadFailedException

    try:
        times = get_available_timestamps(
            bbox=_bbox(grid, PixelWindow(0, grid.height, 0, grid.width)),
            time_interval=(_utc(start), _utc(end)),
            data_collection=data_collection(collection, settings.base_url),
            time_difference=datetime.timedelta(seconds=settings.time_difference),
            maxcc=settings.maxcc if collection.modality == OPTICAL else None,
            config=settings.config(with_credentials=True),
        )
    except (DownloadFailedException, requests.RequestException) as error:
        raise UserError(
            f"--sh_base_url: the catalog search at {settings.base_url}/api/v1/catalog failed: {network_reason(error)}"
        ) from None
    by_name: dict[int, float] = {}
    for moment in times:
        seconds = moment.replace(tzinfo=datetime.timezone.utc).timestamp()
        if start <= seconds < end:
            by_name.setdefault(int(seconds // 1), seconds)
    return sorted(by_name.values())


# One session (one OAuth token) per worker process and settings, shared by every DoFn instance and thread.
_SESSIONS: dict[tuple, object] = {}
_SESSIONS_LOCK = threading.Lock()


def _session_key(settings: SentinelHubSettings) -> tuple:
    client_id, secret = settings.credentials.resolve()
    secret = hashlib.sha256(secret.encode()).hexdigest()  # other secret, other session
    return settings.token_url, settings.base_url, client_id, secret


def open_session(settings: SentinelHubSettings):
    """The process's shared `SentinelHubSession`: one OAuth token per process and credentials, got here.

    The session refreshes its token 2 minutes before expiry. Missing or
    rejected credentials raise CredentialsError.
    """
    from oauthlib.oauth2.rfc6749.errors import OAuth2Error
    from sentinelhub import SentinelHubSession
    from sentinelhub.exceptions import DownloadFailedException

    key = _session_key(settings)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(key)
        if session is not None:
            return session
        try:
            session = SentinelHubSession(settings.config(with_credentials=True))
        except OAuth2Error as error:
            raise CredentialsError(
                f"Sentinel Hub rejected the credentials ({settings.credentials.describe()}) "
                f"at {settings.token_url}: {error.error}"
            ) from None
        except (DownloadFailedException, requests.RequestException) as error:
            status = getattr(getattr(error, "request_exception", None), "response", None)
            status = getattr(status, "status_code", None)
            if status in (400, 401, 403):
                raise CredentialsError(
                    f"Sentinel Hub rejected the credentials ({settings.credentials.describe()}) "
                    f"at {settings.token_url} (HTTP {status})"
                ) from None
            raise CredentialsError(
                f"cannot get a Sentinel Hub token from {settings.token_url}: {network_reason(error)}"
            ) from None
        _SESSIONS[key] = session
        return session


def forget_session(settings: SentinelHubSettings) -> None:
    """Drops the process's session and kept credentials (after a 401: read them again, get a new token)."""
    with _SESSIONS_LOCK:
        _SESSIONS.pop(_session_key(settings), None)
    settings.credentials.forget()


@dataclasses.dataclass
class RequestStats:
    """What one chunk's fetch cost: HTTP requests sent, 429s, 5xx/connection errors, processing units."""

    requests: int = 0
    throttled: int = 0
    server_errors: int = 0
    processing_units: float = 0.0


def _counting_client(config, session, stats: RequestStats):
    """A SentinelHubDownloadClient that counts each HTTP attempt into `stats`."""
    from sentinelhub import SentinelHubDownloadClient

    class CountingClient(SentinelHubDownloadClient):
        def _do_download(self, request):
            stats.requests += 1
            try:
                response = super()._do_download(request)
            except requests.RequestException:
                stats.server_errors += 1
                raise
            if response.status_code == 429:
                stats.throttled += 1
            elif response.status_code >= 500:
                stats.server_errors += 1
            return response

    return CountingClient(config=config, session=session)


def fetch_chunk(
    settings: SentinelHubSettings, collection: Collection, grid: Grid, window: PixelWindow, acquired: float
) -> tuple[np.ndarray, np.ndarray, RequestStats]:
    """Downloads one chunk at one acquisition: `(float32 [h, w, bands], bool valid [h, w], stats)`.

    The client retries 5xx/connection errors with back-off and honours 429
    Retry-After; on top of that a reply that cannot be decoded (truncated)
    is retried `max_download_attempts` times and a 401 gets one new token
    (the credentials read again).
    Raises FetchError with the reason when the chunk cannot be had.
    """
    from sentinelhub.exceptions import DownloadFailedException, ImageDecodingError, OutOfRequestsException

    stats = RequestStats()
    config = settings.config()
    request = process_request(settings, collection, grid, window, acquired, config)
    renewed_token = False
    attempt = 0
    while True:
        attempt += 1
        session = open_session(settings)
        client = _counting_client(config, session, stats)
        try:
            response = client.download(request.download_list, max_threads=1, decode_data=False)[0]
            members = response.decode()
            if not isinstance(members, dict):
                raise FetchError(
                    f"expected a TAR of {len(collection.identifiers)} members, got {type(members).__name__}"
                )
            data, valid = decode_bands(collection, members, window.height, window.width)
        except OutOfRequestsException:
            raise FetchError(
                f"still throttled (HTTP 429) after {settings.max_throttle_retries} retries", stats
            ) from None
        except DownloadFailedException as error:
            status = getattr(getattr(error.request_exception, "response", None), "status_code", None)
            if status == 401 and not renewed_token:
                renewed_token = True  # the shared token was revoked or expired early: one new token
                forget_session(settings)
                continue
            raise FetchError(
                f"HTTP {status}: {_first_line(error)}"
                if status
                else f"gave up after {settings.max_download_attempts} attempts at "
                f"{request.download_list[0].url}: {network_reason(error)}",
                stats,
            ) from None
        except (FetchError, ImageDecodingError, tarfile.TarError, ValueError, OSError, EOFError) as error:
            # A body that does not decode (truncated TAR/TIFF, wrong members): ask again, then give up.
            if attempt >= settings.max_download_attempts:
                raise FetchError(f"unusable reply after {attempt} attempts: {error}", stats) from None
            time.sleep(settings.retry_sleep * 3 ** (attempt - 1))
            continue
        spent = response.headers.get(PROCESSING_UNITS_HEADER)
        stats.processing_units += (
            float(spent) if spent is not None else estimate_processing_units(collection, window.height, window.width)
        )
        return data, valid, stats


def network_reason(error: Exception) -> str:
    """The underlying cause of a failed request in a few words (e.g. `[Errno 111] Connection refused`),
    not the client's wrapper (`DownloadFailedException`)."""
    cause = getattr(error, "request_exception", None) or error.__cause__ or error.__context__ or error
    text = str(cause)
    errno = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if errno:
        return errno.group(0).strip()
    return f"{type(cause).__name__}: {_first_line(cause)}"


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip() and not line.startswith("http")]
    return " ".join(lines[-2:])[:300] if lines else type(error).__name__
