"""Training windows built online from Stage 2 stacks: no window files (tf.data here, PyTorch in `torch_data`).

    windows = StackTrainingWindows("tf_stack", WindowParams(30 * 86400, 1, 10, 16), tiles="rsdtlib-train",
                                   sample="every:10")
    len(windows)                                             # windows per epoch, known up front
    train = training_dataset_from_stacks("tf_stack", params, tiles="rsdtlib-train", batch_size=32, seed=1)
    model.fit(train, epochs=10)                              # Keras knows the steps per epoch

Each element is what the written-window reader (`rsdt_beam.datasets.training_dataset`) yields for
the same window: `(feature, label)` from the same label function, window filter and sample
(`rsdt_beam.window.sampling.window_pairs`), the feature's time axis padded to `frames` (default Omega,
`rsdt_beam.window.padding`); with `masks=True` the feature is a dict `{"Feature", "frame_mask"}`.

Epochs: a shard's tiles are visited in a seeded random order (a new order each epoch), `cycle_tiles`
tiles at a time, and the windows of those tiles are shuffled together, so consecutive elements come
from several tiles while only `cycle_tiles` stacks are held in memory. Sharding over hosts and data
loader workers (readers) is by tile, balanced by window count: every window is read exactly once per
epoch, and each host's length does not depend on how many workers it runs.

No TensorFlow apart from the tf.data wrapper (imported inside it), so PyTorch users do not pay for it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from rsdt_beam.stack.files import band_counts, list_tiles, read_stack_metadata, read_tile_stack, tile_timestamps
from rsdt_beam.stack.stats import normalization
from rsdt_beam.window.padding import DEFAULT_PAD_VALUE, resolve_frames, training_element
from rsdt_beam.window.rules import Window, WindowParams, window_spans, windows
from rsdt_beam.window.sampling import Sample, parse_sample, window_pairs
from rsdt_beam.window.selection import TileSelector, TileSet, rsdtlib_example_label, tile_selector

Tile = tuple[int, int]


def balanced_shards(counts: dict[Tile, int], count: int) -> list[list[Tile]]:
    """Tiles split into `count` shards of about equal window totals (largest first), each in row-major order."""
    if count < 1:
        raise ValueError(f"shard count must be at least 1, got {count}")
    heap = [(0, index) for index in range(count)]
    shards: list[list[Tile]] = [[] for _ in range(count)]
    for tile in sorted(counts, key=lambda t: (-counts[t], t)):
        total, index = heapq.heappop(heap)
        shards[index].append(tile)
        heapq.heappush(heap, (total + counts[tile], index))
    return [sorted(shard) for shard in shards]


class StackTrainingWindows:
    """The training pairs of a Stage 2 folder (rsdt_beam's or rsdtlib's), built on the fly.

    `gen_label(window, label_args) -> (feature, label)` and `win_filter(*window) -> bool` are
    Stage 3's (`--label_fn`, `--window_filter`); `tiles` a tile selector or its spec (`--tiles`);
    `sample` a `Sample`, its spec (`every:10`, `fraction:0.1:SEED`) or a weight function
    `weight(feature, label) -> probability`. `normalize=True` scales features band by band with
    the stacks' `band_stats` (`(x - mean) / std`, padding untouched). `observed=True` adds the
    current part's per-pixel `observed_mask` `[frames, ty, tx, 3]` (stacks written with
    `--record_observed`).
    """

    def __init__(
        self,
        stack_dir: str,
        params: WindowParams,
        *,
        gen_label: Callable = rsdtlib_example_label,
        label_args: Any = None,
        win_filter: Callable | None = None,
        tiles: str | TileSelector | Sequence[Tile] | None = None,
        sample: str | Sample | Callable | None = None,
        frames: int | None = None,
        pad_value: float = DEFAULT_PAD_VALUE,
        masks: bool = False,
        normalize: bool = False,
        observed: bool = False,
        metadata: dict | None = None,
    ):
        self.stack_dir = stack_dir
        self.params = params
        self.gen_label = gen_label
        self.label_args = label_args
        self.win_filter = win_filter
        self.sample = parse_sample(sample)
        self.frames = resolve_frames(frames, params.Omega, stack_dir)
        self.pad_value = pad_value
        self.masks = masks
        self.observed = observed
        self.metadata = metadata or read_stack_metadata(stack_dir)
        self.scale = normalization(self.metadata, band_counts(self.metadata).total) if normalize else None
        if tiles is not None and not isinstance(tiles, str) and not callable(tiles):
            selector: TileSelector = TileSet(frozenset((int(j), int(i)) for j, i in tiles))
        else:
            selector = tile_selector(tiles)
        self.tiles: list[Tile] = [t for t in list_tiles(stack_dir) if selector(*t)]
        if not self.tiles:
            raise FileNotFoundError(f"{stack_dir}: no selected {{j}}_{{i}}.tfrecords (tiles={tiles!r})")
        self._counts: dict[Tile, int] | None = None

    # --- what an epoch holds ------------------------------------------------------------------

    def window_counts(self) -> dict[Tile, int]:
        """Windows per tile and epoch. Without a filter or weight only time stamps are read; with
        one, every stack is read once (the result is kept)."""
        if self._counts is None:
            if self.win_filter is None and not self.sample.needs_pairs:
                self._counts = {
                    tile: sum(
                        self.sample.keeps_id(tile, span.window_id)
                        for span in window_spans(tile_timestamps(self.stack_dir, tile), self.params)
                    )
                    for tile in self.tiles
                }
            else:
                self._counts = {tile: sum(1 for _ in self._pairs(tile)) for tile in self.tiles}
        return self._counts

    def __len__(self) -> int:
        return sum(self.window_counts().values())

    def shard_tiles(self, index: int = 0, count: int = 1, sub_index: int = 0, sub_count: int = 1) -> list[Tile]:
        """The tiles of shard `index` of `count` (hosts), then of `sub_index` of `sub_count` (workers)."""
        if not (0 <= index < count and 0 <= sub_index < sub_count):
            raise ValueError(f"shard {index} of {count}, worker {sub_index} of {sub_count}: out of range")
        counts = self.window_counts()
        host = balanced_shards(counts, count)[index]
        return balanced_shards({tile: counts[tile] for tile in host}, sub_count)[sub_index]

    def shard_length(self, index: int = 0, count: int = 1) -> int:
        counts = self.window_counts()
        return sum(counts[tile] for tile in self.shard_tiles(index, count))

    # --- elements -----------------------------------------------------------------------------

    def _pairs(self, tile: Tile, stack=None):
        stack = stack if stack is not None else read_tile_stack(self.stack_dir, tile, self.metadata)
        return window_pairs(windows(stack, self.params), self.gen_label, self.label_args, self.win_filter, self.sample)

    def element(self, window: Window, feature: np.ndarray, label: np.ndarray):
        """The reader's element of a training pair (`rsdt_beam.window.padding.training_element`)."""
        observed = None
        if self.observed:
            observed = window.current.observed
            if observed is None:
                raise ValueError(
                    f"{self.stack_dir}: the stacks carry no observed mask (write them with "
                    f"--record_observed), so observed=True cannot be served"
                )
        return training_element(feature, label, self.frames, self.pad_value, self.masks, self.scale, observed)

    def tile_elements(self, tile: Tile) -> Iterator[tuple[int, Any]]:
        """`(window id, element)` of one tile, in time order."""
        for window, feature, label in self._pairs(tile):
            yield window.window_id, self.element(window, feature, label)

    def elements(
        self,
        shard: int = 0,
        num_shards: int = 1,
        worker: int = 0,
        num_workers: int = 1,
        *,
        epoch: int = 0,
        seed: int | None = 0,
        shuffle: bool = True,
        cycle_tiles: int = 4,
    ) -> Iterator:
        """One epoch of a shard's (and worker's) elements; `shuffle=False`: tiles row-major, windows in order.

        With `shuffle`, the order is fixed by `(seed, epoch)` (`seed=None`: a fresh random order).
        """
        tiles = self.shard_tiles(shard, num_shards, worker, num_workers)
        if not shuffle:
            for tile in tiles:
                for _, element in self.tile_elements(tile):
                    yield element
            return
        rng = np.random.default_rng(None if seed is None else (seed, epoch))
        order = [tiles[k] for k in rng.permutation(len(tiles))]
        for start in range(0, len(order), max(1, cycle_tiles)):
            # Windows stay views into their tile's stack until they are yielded: memory is the stacks'.
            pending = [pair for tile in order[start : start + max(1, cycle_tiles)] for pair in self._pairs(tile)]
            for k in rng.permutation(len(pending)):
                yield self.element(*pending[k])

    def first_element(self):
        """An element of the first tile that has one (for shapes and dtypes)."""
        for tile in self.tiles:
            for _, element in self.tile_elements(tile):
                return element
        raise ValueError(
            f"{self.stack_dir}: no training window in {len(self.tiles)} tiles "
            f"(Omega={self.params.Omega}, omega={self.params.omega}, sample {self.sample.spec})"
        )


def training_dataset_from_stacks(
    stack_dir: str,
    params: WindowParams,
    *,
    gen_label: Callable = rsdtlib_example_label,
    label_args: Any = None,
    win_filter: Callable | None = None,
    tiles=None,
    sample=None,
    batch_size: int | None = None,
    seed: int | None = 0,
    shuffle: bool = True,
    frames: int | None = None,
    pad_value: float = DEFAULT_PAD_VALUE,
    masks: bool = False,
    normalize: bool = False,
    observed: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
    readers: int = 1,
    cycle_tiles: int = 4,
    repeat: bool = False,
    drop_remainder: bool = False,
):
    """tf.data `(feature, label)` pairs built from stacks, with static shapes and a known cardinality.

    Arguments as `StackTrainingWindows`; `num_shards`/`shard_index` split the windows between hosts
    (e.g. `tf.distribute` input contexts), `readers` Python generators build this host's windows in
    parallel (each its own tiles). Each pass over the dataset is a new epoch (a new order).
    """
    import tensorflow as tf

    plan = StackTrainingWindows(
        stack_dir,
        params,
        gen_label=gen_label,
        label_args=label_args,
        win_filter=win_filter,
        tiles=tiles,
        sample=sample,
        frames=frames,
        pad_value=pad_value,
        masks=masks,
        normalize=normalize,
        observed=observed,
    )
    length = plan.shard_length(shard_index, num_shards)
    signature = tf.nest.map_structure(
        lambda a: tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)), plan.first_element()
    )
    epochs = [itertools.count() for _ in range(readers)]

    def generate(reader):
        reader = int(reader)
        yield from plan.elements(
            shard_index,
            num_shards,
            reader,
            readers,
            epoch=next(epochs[reader]),
            seed=seed,
            shuffle=shuffle,
            cycle_tiles=cycle_tiles,
        )

    if readers == 1:
        dataset = tf.data.Dataset.from_generator(generate, args=(0,), output_signature=signature)
    else:
        dataset = tf.data.Dataset.range(readers).interleave(
            lambda reader: tf.data.Dataset.from_generator(generate, args=(reader,), output_signature=signature),
            cycle_length=readers,
            num_parallel_calls=readers,
            deterministic=seed is not None,
        )
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(length))
    if repeat:
        dataset = dataset.repeat()
    if batch_size:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
