"""The one training loop of `detect pretrain`, `detect train-multibox` and `detect train`, and its hooks.

As in detectron2's engine: `TrainerBase.train()` is a short loop (before_train; per step before_step,
run_step, after_step; after_train) and everything the three trainers share is a hook: checkpoints,
LR schedule, evaluation, best checkpoint, logging, the NaN/inf check and the stop agreement under
DDP. A task (a subclass) supplies only what differs: `run_step` (one optimizer update, calling
`before_update(losses)` between backward and the update), `state_dict` / `load_state_dict` of its
own objects, and `evaluate`. `TrainerBase` owns what every task must do the same way: the step /
epoch / position counters, batches that resume mid-epoch, and checkpoints holding every rank's RNG.

Hook order matters and is the caller's: a hook sees what the hooks before it did in the same step.
`after_train` runs only when the loop ended normally or was stopped (not on an error, so a NaN never
overwrites the last good checkpoint); `close` runs always.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from detect.errors import UserError
from detect.utils import distributed as dist_utils
from detect.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from detect.utils.interrupt import GracefulStop, Interrupted
from detect.utils.metric_logger import MetricLogger
from detect.utils.progress import progress_bar

LAST_CHECKPOINT = "last.pth"
BEST_CHECKPOINT = "best.pth"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: stop, and keep the last good checkpoint as it is."""


class HookBase:
    """One concern of training, called at fixed points of the loop; `self.trainer` is set on registration."""

    trainer: "TrainerBase"

    def before_train(self) -> None: ...
    def before_step(self) -> None: ...
    def before_update(self) -> None: ...  # losses computed (trainer.losses), parameters not yet updated
    def after_step(self) -> None: ...
    def after_train(self) -> None: ...  # the loop ended or was stopped; not on an error
    def close(self) -> None: ...  # always, last


class EpochBatches:
    """Batches epoch after epoch from `make_loader(epoch, start)`; `start` is the number of samples of
    this rank's epoch order already trained on (SeededSampler skips them), so a run resumes mid-epoch."""

    def __init__(self, make_loader: Callable[[int, int], Iterable], batch_size: int,
                 too_few: str = "fewer training samples than one batch per process") -> None:
        self.make_loader = make_loader
        self.batch_size = batch_size
        self.too_few = too_few
        self._iterator = None
        self._left = 0

    def next(self, trainer: "TrainerBase"):
        """The next batch; sets trainer.epoch_ended when it is the epoch's last."""
        for _ in range(2):  # a run resumed exactly at an epoch's end finds that epoch empty: move on
            if self._iterator is None:
                loader = self.make_loader(trainer.epoch, trainer.epoch_position)
                self._left = len(loader)
                self._iterator = iter(loader)
            if self._left > 0:
                batch = next(self._iterator)
                self._left -= 1
                trainer.epoch_position += self.batch_size
                trainer.epoch_ended = self._left == 0
                if trainer.epoch_ended:
                    self._iterator = None
                return batch
            self._iterator = None
            if trainer.epoch_position == 0:
                raise UserError(self.too_few)
            trainer.epoch, trainer.epoch_position = trainer.epoch + 1, 0
        raise UserError("no training batches")

    def reset(self) -> None:
        self._iterator = None


class StreamBatches:
    """Batches from one DataLoader for the whole run: `make_loader(epoch, start)` returns a loader over a
    BatchStream started there (endless), so its workers start once per run, not once per epoch, and
    prefetch across epoch ends. `batches_in_epoch(start)` says how many batches the epoch has after
    `start` samples: the epoch's end is counted here, the stream itself does not end. Same contract as
    EpochBatches: `trainer.epoch_position` counts this rank's samples, a run resumes mid-epoch, and a
    position at an epoch's very end moves on to the next epoch. If the trainer's counters are moved
    from outside (a checkpoint loaded), the next batch starts a new loader there."""

    def __init__(self, make_loader: Callable[[int, int], Iterable], batches_in_epoch: Callable[[int], int],
                 batch_size: int, too_few: str = "fewer training samples than one batch per process") -> None:
        self.make_loader = make_loader
        self.batches_in_epoch = batches_in_epoch
        self.batch_size = batch_size
        self.too_few = too_few
        self._iterator = None
        self._at: tuple[int, int] | None = None  # the (epoch, position) the loader's next batch belongs to

    def next(self, trainer: "TrainerBase"):
        """The next batch; sets trainer.epoch_ended when it is the epoch's last."""
        if trainer.epoch_position > 0 and self.batches_in_epoch(trainer.epoch_position) == 0:
            trainer.epoch, trainer.epoch_position = trainer.epoch + 1, 0  # resumed at (or left at) an epoch's end
        if self.batches_in_epoch(trainer.epoch_position) == 0:
            raise UserError(self.too_few)
        if self._iterator is None or self._at != (trainer.epoch, trainer.epoch_position):
            self.reset()
            self._iterator = iter(self.make_loader(trainer.epoch, trainer.epoch_position))
        batch = next(self._iterator)
        trainer.epoch_position += self.batch_size
        trainer.epoch_ended = self.batches_in_epoch(trainer.epoch_position) == 0
        self._at = (trainer.epoch + 1, 0) if trainer.epoch_ended else (trainer.epoch, trainer.epoch_position)
        return batch

    def reset(self) -> None:
        """Drop the loader (its worker processes end)."""
        self._iterator, self._at = None, None


class TrainerBase:
    """The loop, the counters and the checkpoints; subclasses implement run_step, state_dict,
    load_state_dict (and evaluate for EvalHook)."""

    def __init__(self, out_dir: str | Path, max_steps: int, device: torch.device) -> None:
        self.out_dir = Path(out_dir)
        self.max_steps = max_steps
        self.device = device
        self.step, self.epoch, self.epoch_position = 0, 0, 0
        self.epoch_ended = False  # the step just run took the last batch of its epoch
        self.losses: dict[str, float] = {}  # this step's losses, averaged over processes (before_update)
        self.metrics: dict[str, float] = {}  # the last evaluation's numbers
        self.metrics_step: int | None = None  # the step they were measured at
        self.best: float | None = None  # the best validation metric so far (BestCheckpointer)
        self.stop_signal: str | None = None  # SIGTERM / SIGINT when a signal stopped the run
        self.stop_requested = False
        self.hooks: list[HookBase] = []
        self.batches: StreamBatches | EpochBatches | None = None  # the task's training batches (run_step takes them)

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        for hook in hooks:
            if hook is not None:
                hook.trainer = self
                self.hooks.append(hook)

    def train(self) -> None:
        """Run until max_steps, a stop request, or an error (which skips after_train: no checkpoint)."""
        try:
            self._call("before_train")
            while self.step < self.max_steps and not self.stop_requested:
                self._call("before_step")
                self.epoch_ended = False
                self.run_step()
                self.step += 1
                if self.epoch_ended:  # hooks then see the finished epoch counted (epoch_ended tells them)
                    self.epoch, self.epoch_position = self.epoch + 1, 0
                self._call("after_step")
            self._call("after_train")
        finally:
            self._call("close")
            if self.batches is not None:
                self.batches.reset()  # a loader's worker processes end here, not at interpreter exit

    def _call(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)()

    def before_update(self, losses: dict[str, torch.Tensor]) -> None:
        """Called by run_step after backward, before the optimizer update: average the losses over
        processes (one all-reduce) into self.losses, then let the hooks (NaN check) see them."""
        names = list(losses)
        values = torch.stack([torch.as_tensor(losses[n], dtype=torch.float64).detach().reshape(()).cpu()
                              for n in names])
        if dist_utils.is_distributed():
            values = dist_utils.all_reduce_mean(values.to(self.device)).cpu()
        self.losses = {n: v.item() for n, v in zip(names, values)}
        self._call("before_update")

    # ------------------------------------------------------------------ what a task supplies
    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The task's own state (model, optimizer, scheduler...), plain state_dicts and values."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str = LAST_CHECKPOINT) -> Path | None:
        """Every process calls this (each rank's RNG state is gathered); rank 0 writes atomically."""
        rngs = dist_utils.all_gather_objects(rng_state())
        if not dist_utils.is_main_process():
            return None
        return save_checkpoint(self.out_dir / name, {
            **self.state_dict(),
            "step": self.step, "epoch": self.epoch, "epoch_position": self.epoch_position,
            "world_size": dist_utils.world_size(), "best": self.best, "rng": rngs})

    def load(self, path: str | Path) -> dict[str, Any]:
        """Continue from a checkpoint: the task's state, the counters, and this rank's own RNG state."""
        path = Path(path)
        state = load_checkpoint(path, map_location=self.device)
        self.load_state_dict(state, path)
        world = dist_utils.world_size()
        # Each rank had trained on `epoch_position` samples of its 1/world share of the epoch's order;
        # the same global position under another number of processes is position * old / new.
        self.step, self.epoch = state["step"], state["epoch"]
        self.epoch_position = state["epoch_position"] * state.get("world_size", world) // world
        self.best = state["best"] if "best" in state else self.best  # (older checkpoints: the task's load set it)
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if len(rngs) == world:  # another number of processes keeps the fresh per-rank seeding
            set_rng_state(rngs[dist_utils.rank()])
        if dist_utils.is_main_process():
            print(f"resumed from {path} at step {self.step}", flush=True)
        return state


def optimizer_update(optimizer: torch.optim.Optimizer, scaler, parameters, grad_clip: float | None) -> None:
    """One update through the AMP grad scaler, with the gradient norm clipped to grad_clip when set."""
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for p in parameters if p.grad is not None], grad_clip)
    scaler.step(optimizer)
    scaler.update()


# ---------------------------------------------------------------------- hooks
class NaNCheck(HookBase):
    """Every step, before the update: a NaN or infinite loss (on any process; the losses are already
    averaged over processes, so all ranks agree) stops the run, naming the step and the loss."""

    def __init__(self, advice: str = "lower the learning rate or set a gradient clip") -> None:
        self.advice = advice

    def before_update(self) -> None:
        bad = {k: v for k, v in self.trainer.losses.items() if not math.isfinite(v)}
        if not bad:
            return
        t = self.trainer
        last = t.out_dir / LAST_CHECKPOINT
        kept = f"the last good checkpoint {last} is kept as it was" if last.exists() else "no checkpoint was written yet"
        named = ", ".join(f"{k} = {v}" for k, v in bad.items())
        first = next(iter(bad.values()))
        raise TrainingDiverged(f"{t.out_dir}: training loss became {first} at step {t.step + 1}; stopped; {kept}. "
                               f"Non-finite: {named}. {self.advice}")


class StopAgreement(HookBase):
    """SIGTERM/SIGINT become a request the loop honours after the step; under DDP every process
    must leave at the same step (or the next all-reduce hangs), so the flag is all-reduced (max).
    Registered last: after the other hooks' after_train wrote the checkpoint, raises Interrupted."""

    def __init__(self, resume_flag: str | None = "--resume") -> None:
        self.resume_flag = resume_flag
        self.stop = GracefulStop()
        self.signalled = False

    def before_train(self) -> None:
        self.stop.__enter__()

    def after_step(self) -> None:
        flag = torch.tensor([float(self.stop.requested)])
        if dist_utils.is_distributed():
            flag = flag.to(self.trainer.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            self.signalled = self.trainer.stop_requested = True
            self.trainer.stop_signal = self.stop.signal_name  # None here: another process was signalled

    def after_train(self) -> None:
        if self.signalled:
            raise Interrupted(self.trainer.stop_signal, self.trainer.out_dir / LAST_CHECKPOINT, self.trainer.step,
                              self.resume_flag)

    def close(self) -> None:
        self.stop.__exit__(None, None, None)


class StepLimit(HookBase):
    """Stop (with a checkpoint, not an error) after `limit` steps: a run to be continued with --resume."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit

    def after_step(self) -> None:
        if self.limit is not None and self.trainer.step >= self.limit:
            self.trainer.stop_requested = True


class PeriodicCheckpointer(HookBase):
    """last.pth every `every` steps, at each epoch's end when asked, and when the loop ends or stops."""

    def __init__(self, every: int = 0, at_epoch_end: bool = False) -> None:
        self.every = every
        self.at_epoch_end = at_epoch_end

    def after_step(self) -> None:
        t = self.trainer
        if (self.every and t.step % self.every == 0) or (self.at_epoch_end and t.epoch_ended):
            t.save()

    def after_train(self) -> None:
        self.trainer.save()


class EvalHook(HookBase):
    """trainer.evaluate() every `every` steps, at each epoch's end when asked, and at the end (not
    after a stop); its numbers go to trainer.metrics for the hooks after it (best checkpoint, LR)."""

    def __init__(self, every: int = 0, at_epoch_end: bool = False, at_end: bool = True) -> None:
        self.every = every
        self.at_epoch_end = at_epoch_end
        self.at_end = at_end

    def run(self) -> None:
        """Evaluation leaves the random streams as it found them: training goes on (or is saved and
        resumed) the same whether or not an evaluation happened in between."""
        t = self.trainer
        state = rng_state()
        t.metrics, t.metrics_step = t.evaluate(), t.step
        set_rng_state(state)

    def after_step(self) -> None:
        t = self.trainer
        if (self.every and t.step % self.every == 0) or (self.at_epoch_end and t.epoch_ended):
            self.run()

    def after_train(self) -> None:
        if self.at_end and not self.trainer.stop_requested and self.trainer.metrics_step != self.trainer.step:
            self.run()


class BestCheckpointer(HookBase):
    """best.pth whenever a new evaluation improves the named validation metric (`mode` max or min).
    Rank 0's number decides (only it may hold the gathered evaluation), so all ranks save together."""

    def __init__(self, metric: str, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode}")
        self.metric = metric
        self.mode = mode
        self._seen: int | None = None

    def after_step(self) -> None:
        t = self.trainer
        if t.metrics_step != t.step or self._seen == t.step:
            return
        self._seen = t.step
        value = dist_utils.all_gather_objects(t.metrics.get(self.metric))[0]
        if value is None or not math.isfinite(value):
            return
        if t.best is None or (value > t.best if self.mode == "max" else value < t.best):
            t.best = value
            t.save(BEST_CHECKPOINT)

    after_train = after_step  # the final evaluation


class LRScheduler(HookBase):
    """Steps a torch LR scheduler after every step, or at each epoch's end; ReduceLROnPlateau gets the
    named metric of the evaluation just made (an EvalHook before this hook)."""

    def __init__(self, scheduler, per_epoch: bool = False, metric: str | None = None) -> None:
        self.scheduler = scheduler
        self.per_epoch = per_epoch
        self.metric = metric

    def after_step(self) -> None:
        if self.per_epoch and not self.trainer.epoch_ended:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(self.trainer.metrics[self.metric])
        else:
            self.scheduler.step()


class MetricsWriter(HookBase):
    """The step's losses, lr and seconds since the previous line, every `every` steps and at step 1,
    to metrics.jsonl and TensorBoard (rank 0); `extra()` adds a task's own numbers."""

    def __init__(self, optimizer, every: int, tensorboard: bool = True,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.optimizer = optimizer
        self.every = max(1, every)
        self.tensorboard = tensorboard
        self.extra = extra
        self.logger: MetricLogger | None = None

    def before_train(self) -> None:
        self.logger = MetricLogger(self.trainer.out_dir, tensorboard=self.tensorboard)
        self.tic = time.perf_counter()

    def after_step(self) -> None:
        t = self.trainer
        if t.step % self.every and t.step != 1:
            return
        elapsed, self.tic = time.perf_counter() - self.tic, time.perf_counter()
        extra = self.extra() if self.extra else {}
        self.logger.log(t.step, {**t.losses, "lr": self.optimizer.param_groups[0]["lr"], "epoch": t.epoch,
                                 "seconds": elapsed, **extra})

    def log(self, metrics: dict[str, Any], split: str) -> None:
        if self.logger is not None:
            self.logger.log(self.trainer.step, metrics, split=split)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()


class ProgressBar(HookBase):
    """A tqdm bar over the run's steps on rank 0, with the step's losses beside it (plain lines, no
    carriage returns or cursor moves, when stderr is not a terminal: detect.utils.progress)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar = None

    def before_train(self) -> None:
        t = self.trainer
        self.bar = progress_bar(total=t.max_steps, initial=t.step, desc="train", dynamic_ncols=True,
                                disable=not (self.enabled and dist_utils.is_main_process()))

    def after_step(self) -> None:
        self.bar.update(1)
        self.bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in self.trainer.losses.items()})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
