"""The shared training loop and each of its hooks, once, on a toy task: a noisy linear regression whose
step draws from the global RNG (as dropout and region sampling do), over a SeededSampler's batches."""
from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from torch.utils.data import DataLoader

from detect.data.samplers import SeededSampler
from detect.engine.train_loop import (BEST_CHECKPOINT, LAST_CHECKPOINT, BestCheckpointer, EpochBatches, EvalHook,
                                      HookBase, LRScheduler, MetricsWriter, NaNCheck, PeriodicCheckpointer, StepLimit,
                                      StopAgreement, TrainerBase, TrainingDiverged, optimizer_update)
from detect.errors import UserError
from detect.utils.checkpoint import load_checkpoint
from detect.utils.interrupt import Interrupted

N, BATCH = 10, 2  # 5 steps an epoch


class Toy(TrainerBase):
    """y = 3x + 1 from noisy inputs; `nan_at` makes the loss NaN at that step (1-based)."""

    def __init__(self, out_dir, max_steps, hooks=(), nan_at=None, evaluations=None):
        super().__init__(out_dir, max_steps, torch.device("cpu"))
        torch.manual_seed(0)
        self.model = torch.nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.x = torch.linspace(-1, 1, N).unsqueeze(1)
        self.sampler = SeededSampler(self.x, seed=1)
        self.batches = EpochBatches(self.loader, BATCH)
        self.nan_at = nan_at
        self.evaluations = list(evaluations or [])
        self.seen: list[list[int]] = []
        self.register_hooks(hooks)

    def loader(self, epoch, start):
        self.sampler.set_epoch(epoch, start)
        # its own generator: creating an iterator must not draw from the global RNG (see the trainers)
        return DataLoader(list(self.sampler), batch_size=BATCH, generator=torch.Generator())

    def run_step(self):
        indices, _seeds = self.batches.next(self)
        self.seen.append(indices.tolist())
        x = self.x[indices] + 0.1 * torch.randn(len(indices), 1)  # the global RNG, as dropout draws from it
        loss = ((self.model(x) - (3 * self.x[indices] + 1)) ** 2).mean()
        if self.nan_at == self.step + 1:
            loss = loss * float("nan")
        self.before_update({"loss": loss})
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        optimizer_update(self.optimizer, self.scaler, self.model.parameters(), grad_clip=1.0)

    def state_dict(self):
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state, path):
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def evaluate(self):
        torch.rand(1)  # evaluation that draws from the RNG must not change training's stream
        return {"score": self.evaluations.pop(0)}


class Record(HookBase):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name in ("before_train", "before_step", "before_update", "after_step", "after_train", "close"):
            events = object.__getattribute__(self, "events")
            return lambda: events.append((name, self.trainer.step, self.trainer.epoch))
        return object.__getattribute__(self, name)


def test_the_loop_calls_each_hook_event_in_order_and_counts_epochs(tmp_path):
    record = Record()
    toy = Toy(tmp_path, 6, [record])
    toy.train()
    names = [e[0] for e in record.events]
    assert names == ["before_train"] + ["before_step", "before_update", "after_step"] * 6 + ["after_train", "close"]
    after = [(step, epoch) for name, step, epoch in record.events if name == "after_step"]
    assert after == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 1)], "the epoch is counted when its last batch is done"
    assert (toy.epoch, toy.epoch_position) == (1, BATCH)
    assert sorted(i for batch in toy.seen[:5] for i in batch) == list(range(N)), "an epoch is a permutation"


def test_periodic_checkpointer_saves_every_k_steps_and_at_the_end(tmp_path):
    saved = []

    class Spy(HookBase):  # reads the file the checkpointer before it has just written
        def after_step(self):
            path = tmp_path / LAST_CHECKPOINT
            saved.append(load_checkpoint(path)["step"] if path.exists() else None)

    Toy(tmp_path, 5, [PeriodicCheckpointer(every=2), Spy()]).train()
    assert saved == [None, 2, 2, 4, 4]
    assert load_checkpoint(tmp_path / LAST_CHECKPOINT)["step"] == 5


@pytest.mark.parametrize("stop", [3, 5])  # mid-epoch, and exactly at an epoch's end
def test_a_run_stopped_by_step_limit_and_resumed_equals_an_uninterrupted_run(tmp_path, stop):
    straight = Toy(tmp_path / "a", 8, [PeriodicCheckpointer()])
    straight.train()
    first = Toy(tmp_path / "b", 8, [PeriodicCheckpointer(), StepLimit(stop)])
    first.train()
    assert first.step == stop and load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)["step"] == stop
    torch.manual_seed(123)  # whatever the new process's RNG holds, the checkpoint's is restored
    resumed = Toy(tmp_path / "b", 8, [PeriodicCheckpointer()])
    resumed.load(tmp_path / "b" / LAST_CHECKPOINT)
    resumed.train()
    assert first.seen + resumed.seen == straight.seen, "the same batches in the same order"
    assert torch.equal(resumed.model.weight, straight.model.weight) and torch.equal(resumed.model.bias, straight.model.bias)


def test_nan_check_stops_at_that_step_naming_the_loss_and_keeps_the_last_good_checkpoint(tmp_path):
    toy = Toy(tmp_path, 8, [NaNCheck("lower the lr"), PeriodicCheckpointer(every=1)], nan_at=4)
    with pytest.raises(TrainingDiverged, match=r"became nan at step 4; stopped; the last good checkpoint .*last.pth "
                                               r"is kept as it was. Non-finite: loss = nan. lower the lr"):
        toy.train()
    kept = load_checkpoint(tmp_path / LAST_CHECKPOINT)
    assert kept["step"] == 3 and all(torch.isfinite(v).all() for v in kept["model"].values())
    assert torch.isfinite(toy.model.weight).all(), "the NaN step updated nothing"


def test_stop_agreement_turns_a_signal_into_a_checkpoint_and_interrupted(tmp_path):
    class SignalAtStep2(HookBase):
        def before_update(self):
            if self.trainer.step + 1 == 2:
                signal.raise_signal(signal.SIGTERM)

    toy = Toy(tmp_path, 8, [SignalAtStep2(), PeriodicCheckpointer(), StopAgreement("--resume")])
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 2") as stop:
        toy.train()
    assert stop.value.exit_code == 143 and load_checkpoint(tmp_path / LAST_CHECKPOINT)["step"] == 2
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, "the handler is given back"


def test_eval_hook_and_best_checkpointer_keep_the_best_evaluation_without_touching_the_rng(tmp_path):
    scores = [0.2, 0.5, 0.4, 0.7]
    toy = Toy(tmp_path / "eval", 8, [EvalHook(every=2, at_end=False), BestCheckpointer("score")], evaluations=scores)
    toy.train()
    best = load_checkpoint(tmp_path / "eval" / BEST_CHECKPOINT)
    assert (best["step"], best["best"], toy.best) == (8, 0.7, 0.7)
    plain = Toy(tmp_path / "plain", 8)
    plain.train()
    assert torch.equal(toy.model.weight, plain.model.weight), "evaluations left the training's random stream alone"
    lowest = Toy(tmp_path / "min", 4, [EvalHook(every=1), BestCheckpointer("score", "min")],
                 evaluations=[0.3, 0.1, 0.2, 0.4])
    lowest.train()
    assert load_checkpoint(tmp_path / "min" / BEST_CHECKPOINT)["step"] == 2


def test_lr_scheduler_steps_per_step_per_epoch_and_on_plateau(tmp_path):
    toy = Toy(tmp_path, 3)
    per_step = torch.optim.lr_scheduler.StepLR(toy.optimizer, step_size=1, gamma=0.5)
    toy.register_hooks([LRScheduler(per_step)])
    toy.train()
    assert toy.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 / 8)

    toy = Toy(tmp_path, 10)
    per_epoch = torch.optim.lr_scheduler.StepLR(toy.optimizer, step_size=1, gamma=0.5)
    toy.register_hooks([LRScheduler(per_epoch, per_epoch=True)])
    toy.train()
    assert toy.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 / 4), "two epochs, two decays"

    toy = Toy(tmp_path, 15, evaluations=[0.5, 0.5, 0.5])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(toy.optimizer, mode="max", factor=0.1, patience=0)
    toy.register_hooks([EvalHook(at_epoch_end=True, at_end=False), LRScheduler(plateau, per_epoch=True, metric="score")])
    toy.train()
    assert toy.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.01), "no improvement twice: two cuts"


def test_metrics_writer_logs_the_first_step_and_every_kth_with_the_averaged_losses(tmp_path):
    toy = Toy(tmp_path, 6)
    writer = MetricsWriter(toy.optimizer, every=3, tensorboard=False, extra=lambda: {"toy": 1})
    toy.register_hooks([writer])
    toy.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 3, 6]
    assert all(math.isfinite(r["loss"]) and r["lr"] == 0.05 and r["toy"] == 1 and "seconds" in r for r in records)


def test_epoch_batches_move_past_a_finished_epoch_and_refuse_too_little_data(tmp_path):
    toy = Toy(tmp_path, 2)
    toy.epoch, toy.epoch_position = 0, N  # a checkpoint written at an epoch's very end
    toy.train()
    assert toy.epoch == 1 and len(toy.seen) == 2
    empty = Toy(tmp_path, 1)
    empty.batches = EpochBatches(lambda epoch, start: [], BATCH, "too few samples for one batch")
    with pytest.raises(UserError, match="too few samples"):
        empty.train()


def test_the_progress_bar_writes_plain_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    from detect.engine.train_loop import ProgressBar
    Toy(tmp_path, 6, [ProgressBar(True)]).train()
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b[" not in err, repr(err)
    lines = err.splitlines()
    assert lines and lines[-1].startswith("train: 100%") and "6/6" in lines[-1], lines
