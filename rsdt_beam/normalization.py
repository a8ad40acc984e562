"""The feature normalisation a model was trained with, recorded beside the model so `infer` applies it.

    train = training_dataset("win/train", normalize=True, batch_size=32)
    val = training_dataset("win/val", normalize=Normalization.of_folder("win/train"), shuffle_buffer=0)
    model.fit(train, validation_data=val)
    model.save("model.keras")
    save_normalization("model.keras", "win/train")   # -> model.keras.normalization.json

`infer --model model.keras` reads `model.keras.normalization.json` when it is there: it refuses a
model whose recorded bands differ from the windows' or stacks', and the model is called on
`normalization.apply(features)`. `save_normalization(model, None)` records a model trained on raw
features. Without the file infer cannot know and feeds raw features (as before).

The statistics are metadata.json's `band_stats` (`rsdt_beam.stack.stats`): `(x - mean) / std` band by
band, padding untouched (readers normalise a window's real frames before padding it). `apply` is pure
numpy; the file functions go through `rsdt_beam.fs` (local or gs://).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from rsdt_beam import fs
from rsdt_beam.common.modalities import BandCounts
from rsdt_beam.common.names import METADATA_FILE
from rsdt_beam.errors import UserError
from rsdt_beam.stack.stats import normalization

NORMALIZATION_SUFFIX = ".normalization.json"


def _bands(metadata: dict) -> int:
    return BandCounts(int(metadata["bands_sar"]), int(metadata["bands_opt"])).total


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-band `(mean, std)` (std 0 stored as 1) of the frames' bands (SAR asc, desc, optical) and the
    folder they come from."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    @classmethod
    def of_metadata(cls, metadata: dict, source: str) -> Normalization:
        """From a stack or window folder's metadata.json (`band_stats`)."""
        try:
            mean, std = normalization(metadata, _bands(metadata))
        except ValueError as error:
            raise UserError(f"{source}: {error}") from None
        return cls(tuple(float(v) for v in mean), tuple(float(v) for v in std), source)

    @classmethod
    def of_folder(cls, folder: str) -> Normalization:
        """From a Stage 2 or Stage 3 folder's metadata.json."""
        path = fs.join(folder, METADATA_FILE)
        if not fs.exists(path):
            raise UserError(f"{path} not found: {folder} is no complete stack or windows folder")
        return cls.of_metadata(fs.read_json(path), folder)

    @property
    def bands(self) -> int:
        return len(self.mean)

    def scale(self, bands: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """`(mean, std)` float32 `[bands]`, refused when `what` has another number of bands."""
        if bands != self.bands:
            raise UserError(
                f"{what} has {bands} bands but the normalisation from {self.source or 'the model'} covers {self.bands}"
            )
        return np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)

    def check(self, metadata: dict, what: str) -> None:
        """Refuses the stack or window folder `what` (its metadata.json) when its bands are not the recorded ones."""
        self.scale(_bands(metadata), what)

    def apply(self, features: np.ndarray) -> np.ndarray:
        """`(features - mean) / std` over the last (band) axis, in the features' dtype. Any leading axes:
        a window `[n, ty, tx, bands]` or a batch `[B, n, ty, tx, bands]` (pad frames afterwards)."""
        features = np.asarray(features)
        mean, std = self.scale(features.shape[-1], "the features")
        return ((features - mean) / std).astype(features.dtype, copy=False)

    def to_json(self) -> str:
        return json.dumps({"normalize": True, "mean": list(self.mean), "std": list(self.std), "source": self.source})


def parse_normalization(text: str, name: str) -> Normalization | None:
    """A recorded normalisation (None: the model was trained on raw features)."""
    try:
        record = json.loads(text)
        if not record["normalize"]:
            return None
        return Normalization(tuple(map(float, record["mean"])), tuple(map(float, record["std"])), record["source"])
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{name}: not a normalisation record ({type(error).__name__}: {error})") from None


def reader_scale(normalize: bool | Normalization, metadata: dict, bands: int, source: str):
    """The readers' `normalize=` argument as `(mean, std)` or None: True takes the folder's own
    `band_stats`, a `Normalization` those it holds (e.g. validation data scaled as the training data)."""
    if isinstance(normalize, Normalization):
        return normalize.scale(bands, str(source))
    return normalization(metadata, bands) if normalize else None


def normalization_path(model: str) -> str:
    return model.rstrip("/") + NORMALIZATION_SUFFIX


def save_normalization(model: str, source: str | Normalization | None) -> str:
    """Records beside `model` how its features were normalised: as the folder `source` (its `band_stats`),
    as a `Normalization`, or not at all (None). Returns the file written."""
    if source is None:
        text = json.dumps({"normalize": False})
    else:
        text = (source if isinstance(source, Normalization) else Normalization.of_folder(source)).to_json()
    path = normalization_path(model)
    fs.write_bytes(path, text.encode())
    return path


def model_normalization(model: str) -> Normalization | None:
    """The normalisation recorded beside `model` (None: none recorded, or raw features)."""
    path = normalization_path(model)
    if not fs.exists(path):
        return None
    return parse_normalization(fs.read_bytes(path).decode(), path)
