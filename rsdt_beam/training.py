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
from several tiles while only `cycle_tiles` stacks are held in memory.

Hosts (`num_shards`, torch's `num_replicas`) get equal shares, padded as torch's `DistributedSampler`
pads: the epoch's windows in tile order are repeated from their start until every host has
`ceil(windows / hosts)`, so every host runs the same number of steps (a DDP run does not wait on a
host that ran out) and a few windows are seen twice per epoch. A host's data loader workers (readers)
split its share in whole batches, so only its last batch can be short (`window_share`).

No TensorFlow apart from the tf.data wrapper (imported inside it), so PyTorch users do not pay for it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from rsdt_beam.datasets import dataset_from_generator
from rsdt_beam.normalization import Normalization, reader_scale
from rsdt_beam.stack.files import band_counts, list_tiles, read_stack_metadata, read_tile_stack, tile_timestamps
from rsdt_beam.stack.stats import BAND_STATS_KEY, select_band_stats
from rsdt_beam.window.padding import DEFAULT_PAD_VALUE, resolve_frames, training_element
from rsdt_beam.window.rules import Window, WindowParams, window_spans, windows
from rsdt_beam.window.sampling import LabelShape, Sample, parse_sample, window_pairs
from rsdt_beam.window.selection import TileSelector, TileSet, rsdtlib_example_label, tile_selector

Tile = tuple[int, int]


def host_length(total: int, hosts: int) -> int:
    """Windows per host and epoch: `ceil(total / hosts)`, the same on every host (DistributedSampler's)."""
    if hosts < 1:
        raise ValueError(f"host count must be at least 1, got {hosts}")
    return -(-total // hosts)


def window_share(
    counts: Sequence[tuple[Tile, int]], host: int, hosts: int, worker: int = 0, workers: int = 1, batch_size: int = 1
) -> list[tuple[Tile, int, int]]:
    """`(tile, first, stop)` ranges of the kept windows (by their order in the tile) one worker of one host reads.

    The windows of `counts` (tiles in this order) form one sequence, padded as torch's
    `DistributedSampler` pads: by repeating windows from its start until every host gets
    `host_length(total, hosts)`. Host `h` takes the `h`-th slice of that length. Its workers take
    whole `batch_size` batches of it (as evenly as the batches go), so only the host's last batch
    can be short and `len(DataLoader)` holds with any worker count and `drop_last`. Tiles cut
    between hosts or workers are read by both (each its own windows).
    """
    if not (0 <= host < hosts and 0 <= worker < workers):
        raise ValueError(f"host {host} of {hosts}, worker {worker} of {workers}: out of range")
    total = sum(count for _, count in counts)
    length = host_length(total, hosts)
    batches = -(-length // max(1, batch_size))
    first_batch = worker * (batches // workers) + min(worker, batches % workers)
    own = batches // workers + (worker < batches % workers)
    start = host * length + min(length, first_batch * batch_size)
    stop = host * length + min(length, (first_batch + own) * batch_size)
    ranges: list[tuple[Tile, int, int]] = []
    while start < stop:  # the padded sequence wraps to its start
        offset, begin = 0, start % total
        for tile, count in counts:
            if begin < offset + count:
                take = min(offset + count - begin, stop - start)
                ranges.append((tile, begin - offset, begin - offset + take))
                start += take
                break
            offset += count
    return ranges


class StackTrainingWindows:
    """The training pairs of a Stage 2 folder (rsdt_beam's or rsdtlib's), built on the fly.

    `gen_label(window, label_args) -> (feature, label)` and `win_filter(*window) -> bool` are
    Stage 3's (`--label_fn`, `--window_filter`); `tiles` a tile selector or its spec (`--tiles`);
    `sample` a `Sample`, its spec (`every:10`, `fraction:0.1:SEED`) or a weight function
    `weight(feature, label) -> probability`. `normalize=True` scales features band by band with
    the `band_stats` of the selected tiles (`(x - mean) / std`, padding untouched); a
    `rsdt_beam.normalization.Normalization` scales them with its statistics instead (e.g. validation
    tiles scaled as the training tiles). `observed=True` adds the
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
        normalize: bool | Normalization = False,
        observed: bool = False,
        metadata: dict | None = None,
    ):
        self.stack_dir = stack_dir
        self.metadata = metadata or read_stack_metadata(stack_dir)
        self.params = params
        self.gen_label = gen_label
        self.label_args = label_args
        self.win_filter = win_filter
        self.sample = parse_sample(sample)
        self.frames = resolve_frames(frames, params.Omega, stack_dir)
        self.pad_value = pad_value
        self.masks = masks
        self.observed = observed
        if tiles is not None and not isinstance(tiles, str) and not callable(tiles):
            selector: TileSelector = TileSet(frozenset((int(j), int(i)) for j, i in tiles))
        else:
            selector = tile_selector(tiles)
        self.tiles: list[Tile] = [t for t in list_tiles(stack_dir) if selector(*t)]
        if not self.tiles:
            raise ValueError(f"{stack_dir}: the tile selection tiles={tiles!r} selects none of its stack files")
        self.scale = reader_scale(normalize, self._selected_stats(), band_counts(self.metadata).total, stack_dir)
        self._counts: dict[Tile, int] | None = None
        # One across tiles (and epochs): a tile whose labels differ from the first window's is named.
        self._labels = LabelShape()

    def _selected_stats(self) -> dict:
        """The stack metadata with the `band_stats` of the selected tiles only (`select_band_stats`)."""
        if BAND_STATS_KEY not in self.metadata:
            return self.metadata
        selected = set(self.tiles)
        stats = select_band_stats(
            self.metadata[BAND_STATS_KEY], lambda j, i: (j, i) in selected, band_counts(self.metadata)
        )
        return dict(self.metadata, **{BAND_STATS_KEY: stats})

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
            if not sum(self._counts.values()):
                raise ValueError(
                    f"{self.stack_dir}: 0 training windows in the {len(self.tiles)} selected tiles "
                    f"(Delta={self.params.delta_size / 86400:g}d, omega={self.params.omega}, "
                    f"Omega={self.params.Omega}, sample {self.sample.spec})"
                )
        return self._counts

    def __len__(self) -> int:
        return sum(self.window_counts().values())

    def shard_length(self, index: int = 0, count: int = 1) -> int:
        """Windows per epoch of host `index` of `count`: the same on every host (padded, `window_share`)."""
        return host_length(len(self), count)

    def _share(self, host: int, hosts: int, worker: int, workers: int, batch_size: int):
        counts = self.window_counts()
        return window_share([(tile, counts[tile]) for tile in self.tiles], host, hosts, worker, workers, batch_size)

    # --- elements -----------------------------------------------------------------------------

    def _pairs(self, tile: Tile, stack=None):
        stack = stack if stack is not None else read_tile_stack(self.stack_dir, tile, self.metadata)
        return window_pairs(
            windows(stack, self.params), self.gen_label, self.label_args, self.win_filter, self.sample, self._labels
        )

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
        batch_size: int = 1,
    ) -> Iterator:
        """One epoch of a host's (and worker's) elements (`window_share`); `shuffle=False`: tiles row-major,
        windows in order. With `shuffle`, the order is fixed by `(seed, epoch)` (`seed=None`: a fresh
        random order)."""
        ranges = self._share(shard, num_shards, worker, num_workers, batch_size)
        if not shuffle:
            for tile, first, stop in ranges:
                for pair in itertools.islice(self._pairs(tile), first, stop):
                    yield self.element(*pair)
            return
        rng = np.random.default_rng(None if seed is None else (seed, epoch, worker))
        order = [ranges[k] for k in rng.permutation(len(ranges))]
        step = max(1, cycle_tiles)
        for start in range(0, len(order), step):
            # Windows stay views into their tile's stack until they are yielded: memory is the stacks'.
            pending = [
                pair
                for tile, first, stop in order[start : start + step]
                for pair in itertools.islice(self._pairs(tile), first, stop)
            ]
            for k in rng.permutation(len(pending)):
                yield self.element(*pending[k])

    def first_element(self):
        """The first element in tile order (for shapes and dtypes)."""
        return next(self.elements(shuffle=False))


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
    normalize: bool | Normalization = False,
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
    (e.g. `tf.distribute` input contexts) in equal, padded shares (module docstring), `readers` Python
    generators build this host's windows in parallel (each its own windows). Each pass over the
    dataset is a new epoch (a new order). With `frames=0` the time axis keeps each window's length
    (`None` in the element spec): batch with `padded_batch`.
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
    inputs, label = plan.first_element()
    # frames=0: windows keep their lengths, so every input's time axis (axis 0) is of unknown size.
    feature = inputs["Feature"] if isinstance(inputs, dict) else inputs
    fixed = plan.frames is not None or np.ndim(feature) != 4
    signature = (
        tf.nest.map_structure(
            lambda a: tf.TensorSpec(np.shape(a) if fixed else (None, *np.shape(a)[1:]), tf.as_dtype(a.dtype)), inputs
        ),
        tf.TensorSpec(np.shape(label), tf.as_dtype(np.asarray(label).dtype)),
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
        dataset = dataset_from_generator(generate, signature, args=(0,))
    else:
        dataset = tf.data.Dataset.range(readers).interleave(
            lambda reader: dataset_from_generator(generate, signature, args=(reader,)),
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
