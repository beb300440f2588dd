"""What every DataLoader of the project shares: the resumable seeded sampler and the worker setup.

`SeededSampler` yields `(index, sample_seed)` and resumes mid-epoch (used by `detect pretrain` and
`detect train`); `BatchStream` is the three trainers' batch_sampler: one epoch's batches after another,
without end, from any (epoch, position), so one DataLoader serves a whole run (its workers start once);
`init_loader_worker` is every loader's worker_init_fn (workers ignore SIGINT/SIGTERM, one OpenCV thread
each).
"""
from __future__ import annotations

import signal
from typing import Callable, Sequence

import numpy as np
from torch.utils.data import DistributedSampler


def index_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 32-bit seed for one sample of one epoch (SeedSequence avoids correlated streams)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class SeededSampler(DistributedSampler):
    """DistributedSampler (seed + epoch shuffling, rank sharding) that resumes mid-epoch.

    Yields `(index, sample_seed)` so augmentation is reproducible without any worker state;
    `set_epoch(epoch, start)` skips the first `start` samples of this rank's share (the batches a
    resumed run has already trained on). Works single-process with num_replicas=1, rank=0.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self):
        indices = list(super().__iter__())[self.start:]
        return iter([(i, index_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def batches_in_epoch(num_samples: int, start: int, batch_size: int, drop_last: bool) -> int:
    """How many batches an epoch of `num_samples` (this rank's share) has left after `start` samples."""
    left = max(0, num_samples - start)
    return left // batch_size if drop_last else -(-left // batch_size)


class BatchStream:
    """A batch_sampler that never ends (detectron2's TrainingSampler, in this project's epochs).

    `order(epoch)` is this rank's sample order of one epoch (a pure function of the epoch); the stream
    yields the batches of `order(epoch)[start:]`, then those of every following epoch from its start,
    cut into `batch_size` (the last short batch of each epoch dropped when `drop_last`). So batch k of
    a stream started at (epoch, start) is the batch an epoch-by-epoch loader resumed there would give,
    and a resumed run sees the very batches of an uninterrupted one. The DataLoader runs it in the main
    process, a few batches ahead of training (its workers prefetch across epoch ends too).
    """

    def __init__(self, order: Callable[[int], Sequence], batch_size: int, drop_last: bool,
                 epoch: int = 0, start: int = 0) -> None:
        self.order, self.batch_size, self.drop_last = order, batch_size, drop_last
        self.epoch, self.start = epoch, start

    def __iter__(self):
        epoch, start = self.epoch, self.start
        while True:
            items = list(self.order(epoch))[start:]
            end = len(items) - len(items) % self.batch_size if self.drop_last else len(items)
            if end == 0 and start == 0:
                return  # not one batch in a whole epoch: end rather than loop for ever
            for i in range(0, end, self.batch_size):
                yield items[i:i + self.batch_size]
            epoch, start = epoch + 1, 0


def seeded_order(sampler: SeededSampler) -> Callable[[int], list]:
    """BatchStream's `order` for a SeededSampler: its `(index, sample_seed)` of one whole epoch."""
    def order(epoch: int) -> list:
        sampler.set_epoch(epoch)
        return list(sampler)
    return order


def init_loader_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn.

    Ctrl-C and cluster schedulers signal the whole process group; the workers must outlive the signal
    so the main process can finish its step and checkpoint. OpenCV's threads are left alone here:
    cv2.setNumThreads in a forked child deadlocks (OpenCV 5.1, pthreads) once the parent's pool has
    started, and a child forked from such a parent runs OpenCV on one thread anyway.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
