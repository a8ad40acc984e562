"""PyTorch: training windows built online from Stage 2 stacks, as a `torch.utils.data.IterableDataset`.

    dataset = StackWindowsDataset("tf_stack", WindowParams(30 * 86400, 1, 10, 16), tiles="rsdtlib-train",
                                  sample="every:10", seed=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=2, persistent_workers=True)
    for epoch in range(10):
        dataset.set_epoch(epoch)                 # a new order each epoch, also in persistent workers
        for feature, label in loader:            # feature [B, Omega, ty, tx, bands], as the tf.data readers
            ...

Elements are those of `rsdt_beam.training.StackTrainingWindows` (numpy arrays; the DataLoader's
collation makes tensors). Hosts (`num_replicas`/`rank`, by default those of an initialised
`torch.distributed`) get equal shares, padded by repeating windows as `DistributedSampler` does
(`rsdt_beam.training.window_share`), so every rank runs the same number of steps. Pass the loader's
`batch_size` here too: workers then split a host's share in whole batches, so only the last batch can
be short and `len(loader)` is right with any `num_workers` and `drop_last`. `len(dataset)` is this
host's windows per epoch. Needs the `torch` extra (`pip install .[torch]`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.utils.data

from rsdt_beam.training import StackTrainingWindows
from rsdt_beam.window.rules import WindowParams


class StackWindowsDataset(torch.utils.data.IterableDataset):
    """`(feature, label)` (or `({"Feature", "frame_mask"}, label)` with `masks=True`) of a stack folder.

    Keyword arguments other than those below go to `StackTrainingWindows` (gen_label, label_args,
    win_filter, tiles, sample, frames, pad_value, masks, normalize, observed). `batch_size`: the
    DataLoader's (workers' shares are whole batches of it).
    """

    def __init__(
        self,
        stack_dir: str,
        params: WindowParams,
        *,
        seed: int | None = 0,
        shuffle: bool = True,
        cycle_tiles: int = 4,
        batch_size: int = 1,
        num_replicas: int | None = None,
        rank: int | None = None,
        **windows: Any,
    ):
        super().__init__()
        if num_replicas is None or rank is None:
            distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = num_replicas or (torch.distributed.get_world_size() if distributed else 1)
            rank = rank if rank is not None else (torch.distributed.get_rank() if distributed else 0)
        self.windows = StackTrainingWindows(stack_dir, params, **windows)
        self.windows.window_counts()  # once here, not in every worker process
        self.seed = seed
        self.shuffle = shuffle
        self.cycle_tiles = cycle_tiles
        self.batch_size = batch_size
        self.num_replicas = num_replicas
        self.rank = rank
        # In shared memory: persistent workers keep the dataset they got at start-up, and read the epoch here.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration follows (as `DistributedSampler.set_epoch`), also in
        persistent workers."""
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return self.windows.shard_length(self.rank, self.num_replicas)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.windows.elements(
            self.rank,
            self.num_replicas,
            worker,
            workers,
            epoch=self.epoch,
            seed=self.seed,
            shuffle=self.shuffle,
            cycle_tiles=self.cycle_tiles,
            batch_size=self.batch_size,
        )
