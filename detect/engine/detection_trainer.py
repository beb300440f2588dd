"""The detector's training loop (`detect train`), read top to bottom.

SGD with momentum over images sampled by (seed, epoch) — each sample's seed also decides its flip —
so a run stopped at any step and resumed from its checkpoint (model, optimizer, scheduler, step,
position in the epoch, every RNG state) continues the same schedule on the same samples.
Separate localisation training (model.box_training=separate) first trains the classifier for
train.steps steps, then only the localisation head for train.box_steps steps on regions with
IoU >= model.box_iou (R-CNN used 0.6). A non-finite loss stops the run with a message and leaves
the last good checkpoint untouched. Under torchrun: DistributedDataParallel, rank 0 logs and saves.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from detect.config import to_dict
from detect.data.dataset import DatasetSubset
from detect.data.samplers import SeededSampler, init_loader_worker
from detect.data.spec import build_dataset
from detect.engine.detection_checks import check_before_proposals, training_header
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import ProposalDataset, cached_proposals, collate, join_datasets
from detect.engine.detection_inference import check_compatible, evaluate_predictions, predict
from detect.errors import UserError
from detect.evaluation.fit_diagnosis import FitDiagnosis, side_by_side
from detect.models.detector import build_detector
from detect.utils import distributed as dist_utils
from detect.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from detect.utils.device import autocast, grad_scaler, prepare_model, resolve_device
from detect.utils.interrupt import GracefulStop, Interrupted
from detect.utils.metric_logger import MetricLogger

LAST_CHECKPOINT = "last.pth"
BEST_CHECKPOINT = "best.pth"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite: stop, and keep the last good checkpoint as it is."""


def lr_factor(step: int, milestones: list[int], gamma: float, warmup_steps: int) -> float:
    """Step decay (x gamma at each milestone) after a linear warm-up from 1/10 of the base lr."""
    factor = gamma ** sum(step >= m for m in milestones)
    if warmup_steps and step < warmup_steps:
        factor *= 0.1 + 0.9 * step / warmup_steps
    return factor


class DetectionTrainer:
    def __init__(self, cfg: DetectionConfig, weights: str | None = None, resume: str | bool = False) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.train.device, dist_utils.local_rank())
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.distributed = dist_utils.init_distributed(self.device)
        self.out_dir = Path(cfg.train.out_dir)
        torch.manual_seed(cfg.train.seed)  # same initial weights in every process

        check_before_proposals(cfg, weights)  # backbone, --weights file, output folder: seconds, not after proposals
        train_set = join_datasets(cfg.data.train, cfg.data.classes)
        self.classes = train_set.classes
        if dist_utils.is_main_process():
            print(training_header(cfg, train_set, self.device, weights), flush=True)
        proposals = {"progress": cfg.train.progress, "strict_images": cfg.data.strict_images}
        self.train_data = ProposalDataset(train_set, cached_proposals(train_set, cfg.proposals, **proposals),
                                          cfg.proposals.max_per_image, flip=cfg.data.flip)
        self.val_data = None
        if cfg.data.val:
            val_set = build_dataset(cfg.data.val, self.classes)
            self.val_data = ProposalDataset(val_set, cached_proposals(val_set, cfg.proposals, **proposals),
                                            cfg.proposals.max_per_image)
        self.fit_data = self.training_subset(train_set, cfg.train.fit_check_images)
        self.diagnosis = FitDiagnosis(min_train_map=cfg.train.fit_check_min_map)

        self.model = prepare_model(build_detector(cfg.model, len(self.classes), cfg.test, weights), self.device)
        self.ddp = self.model
        if self.distributed:
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                                               find_unused_parameters=cfg.model.box_training == "separate")
        t = cfg.train
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, t.lr_steps, t.lr_gamma, t.warmup_steps))
        self.scaler = grad_scaler(self.device, t.amp)
        self.sampler = SeededSampler(self.train_data, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(),
                                     seed=t.seed)
        torch.manual_seed(t.seed + 1000 * dist_utils.rank())  # independent region sampling per process
        self.step, self.epoch, self.epoch_position = 0, 0, 0
        self.last_eval: dict[str, dict] = {}
        self.best_map = float("-inf")  # validation mAP (train.metrics[0]) of best.pth
        if resume:
            self.load(self.out_dir / LAST_CHECKPOINT if resume is True else Path(resume))

    def training_subset(self, train_set, count: int) -> ProposalDataset | None:
        """A fixed, evenly spread subset of the training images, scored beside validation (no flips)."""
        if count <= 0:
            return None
        n = min(count, len(train_set))
        indices = sorted({round(i * (len(train_set) - 1) / max(1, n - 1)) for i in range(n)})  # first to last
        subset = DatasetSubset(train_set, indices, name=f"{len(indices)} training images")
        return ProposalDataset(subset, self.train_data.cache_dir, self.cfg.proposals.max_per_image)

    @property
    def evaluates(self) -> bool:
        return self.val_data is not None or self.fit_data is not None

    @property
    def total_steps(self) -> int:
        return self.cfg.train.steps + (self.cfg.train.box_steps if self.cfg.model.box_training == "separate" else 0)

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str = LAST_CHECKPOINT) -> Path | None:
        if not dist_utils.is_main_process():
            return None
        return save_checkpoint(self.out_dir / name, {
            "kind": "detector",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.epoch, "epoch_position": self.epoch_position,
            "classes": self.classes,
            "best_map": self.best_map,
            "rng": rng_state(),
            "config": to_dict(self.cfg),
        })

    def load(self, path: Path) -> None:
        checkpoint = load_checkpoint(path, map_location=self.device)
        check_compatible(checkpoint, path, self.cfg, self.classes)
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, self.epoch, self.epoch_position = checkpoint["step"], checkpoint["epoch"], checkpoint["epoch_position"]
        self.best_map = checkpoint.get("best_map", float("-inf"))
        set_rng_state(checkpoint["rng"])
        if dist_utils.is_main_process():
            print(f"resumed from {path} at step {self.step}", flush=True)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, dict]:
        t = self.cfg.train
        logger = MetricLogger(self.out_dir)
        show = t.progress and dist_utils.is_main_process()
        self.log_tic = time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not show, dynamic_ncols=True)
        try:
            with GracefulStop() as stop:
                while self.step < self.total_steps and not stop.requested:
                    self.train_epoch(logger, bar, stop)
            self.save()
            if stop.requested:  # checkpoint written; `detect` exits 130 (SIGINT) / 143 (SIGTERM), see detect/cli.py
                raise Interrupted(stop.signal_name, self.out_dir / LAST_CHECKPOINT, self.step)
            if self.evaluates and self.last_eval.get("step") != self.step:
                self.evaluate(logger)
        finally:
            bar.close()
            logger.close()
        return self.last_eval

    def train_epoch(self, logger: MetricLogger, bar: tqdm, stop: GracefulStop) -> None:
        t = self.cfg.train
        self.sampler.set_epoch(self.epoch, self.epoch_position)
        loader = DataLoader(self.train_data, batch_size=t.images_per_batch, sampler=self.sampler, drop_last=True,
                            num_workers=self.cfg.data.workers, collate_fn=collate, worker_init_fn=init_loader_worker,
                            pin_memory=self.device.type == "cuda",
                            # its own generator: starting an epoch must not draw from the global RNG
                            generator=torch.Generator().manual_seed(t.seed + self.epoch))
        if len(loader) == 0 and self.epoch_position == 0:  # (a run resumed at an epoch's end just moves on)
            raise UserError(f"{self.train_data.dataset.name}: fewer images ({len(self.train_data)}) than "
                            f"train.images_per_batch x processes")
        for images, targets, proposals in loader:
            losses = self.train_step(images, targets, proposals)
            self.epoch_position += t.images_per_batch
            self.step += 1
            bar.update(1)
            if self.step % max(1, t.log_every) == 0 or self.step == 1:
                # seconds since the previous log line, across epoch boundaries (self.log_tic set in fit)
                elapsed, self.log_tic = time.perf_counter() - self.log_tic, time.perf_counter()
                logger.log(self.step, {**losses, "lr": self.optimizer.param_groups[0]["lr"], "seconds": elapsed})
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in losses.items()})
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save()
            if self.evaluates and t.eval_every and self.step % t.eval_every == 0:
                self.evaluate(logger)
            if self.step >= self.total_steps or self.should_stop(stop):
                return
        self.epoch, self.epoch_position = self.epoch + 1, 0

    def train_step(self, images, targets, proposals) -> dict[str, float]:
        self.set_stage()
        self.ddp.train()
        images = [i.to(self.device, non_blocking=True) for i in images]
        proposals = [p.to(self.device, non_blocking=True) for p in proposals]
        targets = [{"boxes": tg["boxes"].to(self.device), "labels": tg["labels"].to(self.device)} for tg in targets]
        with autocast(self.device, self.cfg.train.amp):
            losses = self.ddp(images, proposals, targets)
        loss = sum(losses.values())
        values = torch.stack([loss.detach()] + [v.detach() for v in losses.values()]).float()
        values = dist_utils.all_reduce_mean(values)
        if not torch.isfinite(values).all():
            self.diverged(values[0].item())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.train.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": values[0].item(), **{k: v.item() for k, v in zip(losses, values[1:])}}

    def set_stage(self) -> None:
        """Joint training, or the classifier stage then the localisation stage (separate training)."""
        if self.cfg.model.box_training != "separate":
            return
        stage = "classify" if self.step < self.cfg.train.steps else "localise"
        if stage == self.model.stage:
            return
        self.model.stage = stage
        if stage == "localise":
            for name, param in self.model.named_parameters():
                param.requires_grad_(name.startswith("localisation."))

    def diverged(self, loss: float) -> None:
        last = self.out_dir / LAST_CHECKPOINT
        kept = f"the last good checkpoint {last} is kept as it was" if last.exists() else "no checkpoint was written yet"
        raise TrainingDiverged(f"{self.cfg.train.out_dir}: training loss became {loss} at step {self.step + 1}; "
                               f"stopped; {kept}. Lower train.lr (now {self.cfg.train.lr}) or add train.grad_clip")

    def should_stop(self, stop: GracefulStop) -> bool:
        """Every process must leave at the same step, or the next all-reduce would hang."""
        flag = torch.tensor([float(stop.requested)])
        if self.distributed:
            flag = flag.to(self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        stop.requested = bool(flag.item())
        return stop.requested

    def evaluate(self, logger: MetricLogger) -> dict[str, dict]:
        """Validation metrics and, beside them, the training subset's mAP; best.pth; the fit verdict."""
        t = self.cfg.train
        metric = t.metrics[0]
        results = self.score(self.val_data, t.metrics, "val", logger) if self.val_data is not None else {}
        fit = self.score(self.fit_data, [metric], "train_subset", logger) if self.fit_data is not None else {}
        self.model.train()
        val_map = results[metric]["mAP"] if results else None
        if dist_utils.is_main_process():
            if fit:
                tqdm.write(side_by_side(self.step, metric, fit[metric]["mAP"], val_map, self.val_data.dataset.name
                                        if self.val_data is not None else "val"))
                verdict = self.diagnosis.check(self.step, self.total_steps, fit[metric]["mAP"], val_map)
                if verdict:
                    tqdm.write(verdict)
            elif results:
                summary = ", ".join(f"{m} mAP {r['mAP']:.4f}" for m, r in results.items())
                tqdm.write(f"step {self.step}: {self.val_data.dataset.name}: {summary}")
        if val_map is not None and val_map > self.best_map:
            self.best_map = val_map
            self.save(BEST_CHECKPOINT)
        self.last_eval = {"step": self.step, **results}
        return self.last_eval

    def score(self, data: ProposalDataset, metrics: list[str], split: str, logger: MetricLogger) -> dict[str, dict]:
        t = self.cfg.train
        predictions = predict(self.model, data, self.device, t.amp, t.progress)
        if not dist_utils.is_main_process():
            return {}
        results = evaluate_predictions(data.dataset, predictions, metrics)
        logger.log(self.step, {f"{m}_mAP": r["mAP"] for m, r in results.items()}, split=split)
        return results


def train_detector(cfg: DetectionConfig, weights: str | None = None, resume: str | bool = False) -> dict:
    """Train, evaluate on data.val at the end; returns the last evaluation ({} without data.val)."""
    trainer = DetectionTrainer(cfg, weights, resume)
    try:
        return trainer.fit()
    finally:
        dist_utils.shutdown_distributed()
