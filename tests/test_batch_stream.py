"""BatchStream (the trainers' endless batch_sampler) and StreamBatches (one loader per run): the stream is
the per-epoch loaders' batches end to end, resumes at any (epoch, position), shards per rank, and a run
stopped and resumed over it equals an uninterrupted run, with and without loader workers; the loader is
made once per run, not once per epoch."""
from __future__ import annotations

from itertools import islice

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from detect.data.samplers import BatchStream, SeededSampler, batches_in_epoch, seeded_order
from detect.engine.train_loop import LAST_CHECKPOINT, PeriodicCheckpointer, StepLimit, StreamBatches
from detect.errors import UserError
from test_train_loop import BATCH, N, Toy


def per_epoch_batches(sampler: SeededSampler, epoch: int, start: int, batch_size: int, drop_last: bool) -> list:
    """What the trainers' per-epoch loaders gave: SeededSampler from `start`, cut into batches."""
    sampler.set_epoch(epoch, start)
    items = list(sampler)
    end = len(items) - len(items) % batch_size if drop_last else len(items)
    return [items[i:i + batch_size] for i in range(0, end, batch_size)]


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("epoch,start", [(0, 0), (3, 4), (2, 9)])
def test_the_stream_is_the_per_epoch_loaders_end_to_end_from_any_position(drop_last, epoch, start):
    data = list(range(11))
    sampler, reference = SeededSampler(data, seed=5), SeededSampler(data, seed=5)
    stream = BatchStream(seeded_order(sampler), 3, drop_last, epoch=epoch, start=start)
    expected = per_epoch_batches(reference, epoch, start, 3, drop_last)
    for e in range(epoch + 1, epoch + 4):
        expected += per_epoch_batches(reference, e, 0, 3, drop_last)
    assert list(islice(iter(stream), len(expected))) == expected
    assert batches_in_epoch(11, start, 3, drop_last) == len(per_epoch_batches(reference, epoch, start, 3, drop_last))


def test_the_stream_keeps_each_rank_to_its_own_shard():
    data = list(range(12))
    streams = [iter(BatchStream(seeded_order(SeededSampler(data, num_replicas=2, rank=r, seed=1)), 2, True))
               for r in range(2)]
    for _ in range(3):  # three epochs of 3 batches per rank
        epoch = [[i for batch in islice(s, 3) for i, _seed in batch] for s in streams]
        assert not set(epoch[0]) & set(epoch[1]) and sorted(epoch[0] + epoch[1]) == data


def test_a_stream_without_one_whole_batch_ends():
    assert list(BatchStream(seeded_order(SeededSampler([1, 2], seed=0)), 3, drop_last=True)) == []


class Items(Dataset):
    """Item i is i itself: the batches show which samples were drawn (picklable, for workers)."""

    def __len__(self):
        return N

    def __getitem__(self, item):
        return item


class StreamToy(Toy):
    """The toy task on a StreamBatches loader, counting how many loaders it made."""

    workers = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loaders_made = 0
        self.batches = StreamBatches(self.stream_loader, lambda start: batches_in_epoch(N, start, BATCH, False), BATCH)

    def stream_loader(self, epoch, start):
        self.loaders_made += 1
        stream = BatchStream(seeded_order(self.sampler), BATCH, drop_last=False, epoch=epoch, start=start)
        return DataLoader(Items(), batch_sampler=stream, num_workers=self.workers, generator=torch.Generator())


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop", [3, 5, 7])  # mid-epoch, exactly at an epoch's end, in the second epoch
def test_a_stream_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path, monkeypatch, workers, stop):
    monkeypatch.setattr(StreamToy, "workers", workers)
    straight = StreamToy(tmp_path / "a", 12, [PeriodicCheckpointer()])
    straight.train()
    assert straight.loaders_made == 1, "one loader for a run of 2.4 epochs"
    assert (straight.epoch, straight.epoch_position) == (2, 2 * BATCH)
    epoch_toy = Toy(tmp_path / "c", 12)  # the per-epoch loaders (EpochBatches) train on the same batches
    epoch_toy.train()
    assert [[int(i) for i in b] for b in epoch_toy.seen] == straight.seen
    first = StreamToy(tmp_path / "b", 12, [PeriodicCheckpointer(), StepLimit(stop)])
    first.train()
    torch.manual_seed(123)
    resumed = StreamToy(tmp_path / "b", 12, [PeriodicCheckpointer()])
    resumed.load(tmp_path / "b" / LAST_CHECKPOINT)
    resumed.train()
    assert first.seen + resumed.seen == straight.seen, "the same batches in the same order"
    assert torch.equal(resumed.model.weight, straight.model.weight) and torch.equal(resumed.model.bias, straight.model.bias)
    assert (resumed.epoch, resumed.epoch_position) == (straight.epoch, straight.epoch_position)


def test_stream_batches_count_epochs_like_epoch_batches_and_refuse_too_little_data(tmp_path):
    toy = StreamToy(tmp_path, 7)
    ended = []
    toy.register_hooks([type("Ends", (PeriodicCheckpointer,), {"after_step": lambda h: ended.append(toy.epoch_ended),
                                                               "after_train": lambda h: None})()])
    toy.epoch, toy.epoch_position = 0, N  # a checkpoint written at an epoch's very end
    toy.train()
    assert ended == [False] * 4 + [True] + [False] * 2 and (toy.epoch, toy.epoch_position) == (2, 2 * BATCH)
    empty = StreamToy(tmp_path, 1)
    empty.batches = StreamBatches(lambda epoch, start: [], lambda start: 0, BATCH, "too few samples for one batch")
    with pytest.raises(UserError, match="too few samples"):
        empty.train()
