"""The one padding rule of every window reader: the time axis is padded at its end to `frames`.

Pure numpy. `frames` defaults to the windows' `Omega` everywhere (training, inference, online, the
infer pipeline); padded frames hold `pad_value` (-1.0, as rsdtlib's inference example), padded time
stamps hold 0, and the boolean `[frames]` frame mask says which frames are real, since -1.0 is also
a valid value (NDVI, for one).
"""

from __future__ import annotations

import numpy as np

DEFAULT_PAD_VALUE = -1.0
TIMESTAMP_PAD_VALUE = 0.0


def resolve_frames(frames: int | None, omega_max: int | None, what: str) -> int | None:
    """`frames` as given; None -> Omega; 0 -> None (no padding, windows keep their lengths)."""
    if frames is None:
        if omega_max is None:
            raise ValueError(
                f"{what}: Omega unknown (no metadata.json with Omega, rsdtlib's windows?): "
                f"pass frames=N to pad the time axis, or frames=0 for no padding"
            )
        return int(omega_max)
    if frames < 0:
        raise ValueError(f"{what}: frames must be positive (or 0 for no padding), got {frames}")
    return int(frames) or None


def pad_frames(array: np.ndarray, frames: int | None, pad_value: float) -> np.ndarray:
    """`[n, ...]` -> `[frames, ...]`, the added frames filled with `pad_value` (as is when `frames` is None)."""
    array = np.asarray(array)
    if frames is None:
        return array
    if array.shape[0] > frames:
        raise ValueError(f"window has {array.shape[0]} frames, more than frames={frames}")
    padded = np.full((frames, *array.shape[1:]), pad_value, array.dtype)
    padded[: array.shape[0]] = array
    return padded


def frame_mask(count: int, frames: int | None) -> np.ndarray:
    """Boolean `[frames]` (or `[count]` unpadded): True for the window's own frames."""
    return np.arange(count if frames is None else frames) < count


def training_element(
    feature: np.ndarray,
    label: np.ndarray,
    frames: int | None,
    pad_value: float,
    masks: bool = False,
    scale: tuple[np.ndarray, np.ndarray] | None = None,
    observed: np.ndarray | None = None,
):
    """A training pair as every reader yields it: `(feature, label)`, features with a time axis
    (`[n, ty, tx, bands]`) padded to `frames`; with `masks`, `({"Feature", "frame_mask"}, label)`,
    and with an `observed` mask (the current part's `[n, ty, tx, 3]`) also `"observed_mask"`, padded
    with False. With `scale = (mean, std)` per band, the feature's real frames are normalised first."""
    timed = np.ndim(feature) == 4
    if scale is not None:
        feature = ((feature - scale[0]) / scale[1]).astype(np.asarray(feature).dtype, copy=False)
    padded = pad_frames(feature, frames, pad_value) if timed else np.asarray(feature)
    if not masks and observed is None:
        return padded, label
    inputs = {"Feature": padded, "frame_mask": frame_mask(len(feature) if timed else 1, frames if timed else None)}
    if observed is not None:
        inputs["observed_mask"] = pad_frames(np.asarray(observed, bool), frames, False)
    return inputs, label
