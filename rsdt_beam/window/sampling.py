"""Which windows are used: all, every k-th, a seeded random fraction, or a user weight (class balance).

Pure numpy. Each window is decided on its own, from its tile, id and (for a weight) its training
pair, so Stage 3's `--sample` and the online training datasets keep exactly the same windows, whatever
the order or the sharding. On the command line:

* `all`
* `every:K`: windows whose id is a multiple of K (rsdtlib's examples keep every 10th window)
* `fraction:F:SEED`: each window with probability F, drawn from (SEED, tile, window id)
* `weight:module:function[:SEED]`: each window with probability `function(feature, label)` in [0, 1],
  e.g. higher for rare classes

`window_pairs` is the one place that turns windows into what is written or fed to a model: window
filter, label function (whose label shape must not change from window to window: `LabelShape`;
across tiles, checked where their summaries meet: `check_label_shapes`), then the sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from rsdt_beam.common.times import iso_time
from rsdt_beam.common.user_code import callable_name, load_callable
from rsdt_beam.errors import UserError
from rsdt_beam.window.rules import Window


@dataclasses.dataclass(frozen=True)
class Sample:
    """Keep windows with `window_id % every == 0`, then each with probability `fraction` or `weight(f, l)`."""

    every: int = 1
    fraction: float = 1.0
    seed: int = 0
    weight: Callable[[np.ndarray, np.ndarray | None], float] | None = None
    spec: str = "all"

    def __post_init__(self):
        if self.every < 1:
            raise ValueError(f"sample every:K needs K >= 1, got {self.every}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"sample fraction must be in (0, 1], got {self.fraction}")
        if self.seed < 0:
            raise ValueError(f"sample seed must be >= 0, got {self.seed}")
        if self.weight is not None and self.fraction != 1.0:
            raise ValueError("sample with a weight function takes no fraction (the weight is the probability)")

    @property
    def keeps_everything(self) -> bool:
        return self.every == 1 and self.fraction == 1.0 and self.weight is None

    @property
    def needs_pairs(self) -> bool:
        """Whether the decision needs the window's (feature, label), not only its id."""
        return self.weight is not None

    def keeps_id(self, tile: tuple[int, int], window_id: int) -> bool:
        """The decision as far as the id goes (all of it without a weight function)."""
        if window_id % self.every:
            return False
        return self.fraction >= 1.0 or _uniform(self.seed, tile, window_id) < self.fraction

    def keeps_pair(self, tile: tuple[int, int], window_id: int, feature, label) -> bool:
        """The weight function's part of the decision (True without one)."""
        if self.weight is None:
            return True
        probability = float(self.weight(feature, label))
        return probability >= 1.0 or _uniform(self.seed, tile, window_id) < probability


def _uniform(seed: int, tile: tuple[int, int], window_id: int) -> float:
    """A uniform [0, 1) number fixed by (seed, tile, window id): the same in every process and order."""
    return float(np.random.default_rng((seed, int(tile[0]), int(tile[1]), int(window_id))).random())


def parse_sample(spec: str | Sample | Callable | None) -> Sample:
    """A Sample from a command-line spec (see the module docstring), a Sample, or a weight function."""
    if spec is None or isinstance(spec, Sample):
        return spec or Sample()
    if callable(spec):
        return Sample(weight=spec, spec=f"weight:{callable_name(spec)}")
    kind, _, rest = str(spec).strip().partition(":")
    try:
        if kind == "all" and not rest:
            return Sample()
        if kind == "every":
            return Sample(every=int(rest), spec=spec)
        if kind == "fraction":
            fraction, _, seed = rest.partition(":")
            return Sample(fraction=float(fraction), seed=int(seed or 0), spec=spec)
        if kind == "weight":
            parts = rest.split(":")
            seed = int(parts.pop()) if len(parts) == 3 else 0
            return Sample(weight=load_callable(":".join(parts)), seed=seed, spec=spec)
    except ValueError as error:
        raise ValueError(f"{spec!r}: {error}") from None
    raise ValueError(f"{spec!r}: expected all | every:K | fraction:F:SEED | weight:module:function[:SEED]")


@dataclasses.dataclass(frozen=True)
class WindowLabel:
    """A window's label shape, with what names the window: its tile, id, and its current part's first and
    last time stamps (epoch seconds), as in windows.csv."""

    tile: tuple[int, int]
    window_id: int
    start: float
    end: float
    shape: tuple[int, ...]

    @classmethod
    def of(cls, window: Window, label: np.ndarray) -> WindowLabel:
        times = window.current.timestamps
        tile = (int(window.tile[0]), int(window.tile[1]))
        return cls(tile, int(window.window_id), float(times[0]), float(times[-1]), tuple(np.shape(label)))

    def __str__(self) -> str:
        return f"window {self.window_id} of tile {self.tile} ({iso_time(self.start)} .. {iso_time(self.end)})"

    def refuse_other(self, other: WindowLabel) -> None:
        """UserError naming `other` when its label shape is not this window's."""
        if other.shape != self.shape:
            raise UserError(
                f"label function: {other} has a label of shape {other.shape}, {self} one of shape {self.shape}; "
                f"every window's label must have the same shape"
            )


@dataclasses.dataclass
class LabelShape:
    """The label of the first window seen; `check` refuses, naming the window, a label of another shape (a
    reader stacks labels into batches, so it would fail only at training time). Across tiles (each checked
    on its own, in parallel): `check_label_shapes` over each tile's `first`."""

    first: WindowLabel | None = None

    def check(self, window: Window, label: np.ndarray) -> None:
        seen = WindowLabel.of(window, label)
        if self.first is None:
            self.first = seen
        else:
            self.first.refuse_other(seen)


def check_label_shapes(firsts: Iterable[WindowLabel]) -> WindowLabel | None:
    """The first tile's first window label (tiles in row-major order) of the tiles' first window labels;
    UserError naming the first of them whose label shape is not the first tile's."""
    ordered = sorted(firsts, key=lambda label: (label.tile, label.window_id))
    for other in ordered[1:]:
        ordered[0].refuse_other(other)
    return ordered[0] if ordered else None


def window_pairs(
    windows: Iterable[Window],
    gen_label: Callable | None = None,
    label_args: Any = None,
    win_filter: Callable | None = None,
    sample: Sample | None = None,
    labels: LabelShape | None = None,
) -> Iterator[tuple[Window, np.ndarray, np.ndarray | None]]:
    """`(window, feature, label)` of each window that passes the filter and the sample.

    With `gen_label(window, label_args) -> (feature, label)` (rsdtlib's signature) these are training
    pairs; without, the feature is the current part's frames `[n, ty, tx, bands]` and the label None.
    Labels of another shape than the first window's are refused (`labels`, a `LabelShape`: after the
    windows, its `first` is the first window's label).
    """
    sample = sample or Sample()
    labels = labels if labels is not None else LabelShape()
    for window in windows:
        tile = window.tile
        if not sample.keeps_id(tile, window.window_id):
            continue
        if win_filter is not None and not win_filter(*window):
            continue
        if gen_label is not None:
            feature, label = gen_label(window, label_args)
            feature, label = np.asarray(feature), np.asarray(label)
            labels.check(window, label)
        else:
            feature, label = window.current.frames, None
        if sample.keeps_pair(tile, window.window_id, feature, label):
            yield window, feature, label
