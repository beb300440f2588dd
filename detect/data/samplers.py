"""What every DataLoader of the project shares: the resumable seeded sampler and the worker setup.

`SeededSampler` yields `(index, sample_seed)` and resumes mid-epoch (used by `detect pretrain` and
`detect train`); `init_loader_worker` is every loader's worker_init_fn (workers ignore SIGINT/SIGTERM,
one OpenCV thread each).
"""
from __future__ import annotations

import signal

import cv2
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


def init_loader_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn.

    Ctrl-C and cluster schedulers signal the whole process group; the workers must outlive the signal
    so the main process can finish its step and checkpoint. And one OpenCV thread per worker: the
    workers are the parallelism, and an OpenCV pool in each would take cores from the training step.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cv2.setNumThreads(1)
