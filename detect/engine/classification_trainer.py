"""ImageNet classification (`detect pretrain`) as a task of the shared loop (engine/train_loop.py).

Reproducible by construction: the sampler shuffles with (seed, epoch), every sample's augmentation
is seeded by (seed, epoch, index), the DataLoader has its own generator (creating an iterator does
not touch the global RNG that dropout draws from), and a checkpoint holds model, optimizer,
scheduler, Polyak average, grad scaler, position in the epoch and every RNG state. A run stopped at
any optimizer step (SIGTERM/SIGINT, `run.max_steps`) and resumed continues bit for bit on CPU.

Multi-process: under torchrun each process trains on its DistributedSampler shard with
DistributedDataParallel (gloo on CPU, nccl on CUDA); gradients are averaged every step, so N
processes with batch B equal one process with batch N*B. Only rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

import backbones
from detect.config import to_dict
from detect.data.classification import (CorruptImageCounter, ImageFolderDataset, collate_skipping_corrupt,
    write_synthetic_image_folder)
from detect.data.classification_transforms import build_eval_transform, build_train_transform
from detect.data.samplers import BatchStream, SeededSampler, batches_in_epoch, init_loader_worker, seeded_order
from detect.engine.classification_config import PretrainConfig
from detect.engine.train_loop import (BEST_CHECKPOINT, LAST_CHECKPOINT, BestCheckpointer, EvalHook,
                                     LRScheduler, MetricsWriter, NaNCheck, PeriodicCheckpointer, ProgressBar,
                                     StepLimit, StopAgreement, StreamBatches, TrainerBase, optimizer_update)
from detect.errors import UserError
from detect.utils import distributed as dist_utils
from detect.utils.checkpoint import load_checkpoint
from detect.utils.device import autocast, grad_scaler, prepare_images, prepare_model, resolve_device

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "ClassificationTrainer", "TrainState", "build_model",
           "classification_loss", "prepare_data_root"]


@dataclass
class TrainState:
    """Where the run is: counted in optimizer steps and in samples of this epoch's sampler order."""

    step: int = 0
    epoch: int = 0
    epoch_position: int = 0  # samples of this rank's epoch order already trained on
    best_val_accuracy: float = -1.0
    history: list[dict] = field(default_factory=list)  # per-epoch validation results


def prepare_data_root(cfg: PretrainConfig) -> Path:
    root = Path(cfg.data.root)
    if cfg.data.synthetic is not None:
        s = cfg.data.synthetic
        if dist_utils.is_main_process():
            write_synthetic_image_folder(root, s.num_classes, s.train_per_class, s.val_per_class, s.size, s.seed)
        dist_utils.barrier()
    return root


def build_model(cfg: PretrainConfig, num_classes: int) -> nn.Module:
    model = _build_backbone(cfg.model.name, num_classes, cfg.model.width, cfg.model.options)
    if cfg.model.init_from:
        source = load_checkpoint(cfg.model.init_from)
        try:
            src = source["config"]["model"]
            vgg_a = _build_backbone(src["name"], len(source["classes"]), src["width"], src["options"])
            vgg_a.load_state_dict(source["model"])
            copied = backbones.init_from_vgg_a(model, vgg_a)
        except (backbones.BackboneError, KeyError, RuntimeError, AttributeError) as err:
            raise UserError(f"{cfg.model.init_from}: cannot pre-initialise {cfg.model.name} from it: {err}") from None
        if dist_utils.is_main_process():
            print(f"pre-initialised {len(copied)} tensors of {cfg.model.name} from {cfg.model.init_from}")
    return model


def _build_backbone(name: str, num_classes: int, width: float, options: dict) -> nn.Module:
    try:
        return backbones.build_backbone(name, num_classes=num_classes, width=width, **options)
    except backbones.BackboneError as err:
        raise UserError(f"model: {err}") from None


def classification_loss(output, labels: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Cross-entropy of the main logits, plus aux_weight x that of each auxiliary head (GoogLeNet)."""
    if isinstance(output, torch.Tensor):
        return F.cross_entropy(output, labels)
    main, *aux = output
    loss = F.cross_entropy(main, labels)
    for logits in aux:
        if logits is not None:
            loss = loss + aux_weight * F.cross_entropy(logits, labels)
    return loss


class ClassificationTrainer(TrainerBase):
    """The classification task on the shared loop: gradient accumulation, Polyak averaging, and an
    epoch-end validation that drives the plateau LR schedule and best.pth."""

    def __init__(self, cfg: PretrainConfig, resume: str | bool = False) -> None:
        self.cfg = cfg
        run, o = cfg.run, cfg.optim
        device = resolve_device(run.device, dist_utils.local_rank())
        self.distributed = dist_utils.init_distributed(device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        torch.manual_seed(run.seed)  # same initial weights in every process

        root = prepare_data_root(cfg)
        augment = cfg.data.augment
        self.train_set = ImageFolderDataset(root, cfg.data.train_split, build_train_transform(augment))
        self.val_set = ImageFolderDataset(root, cfg.data.val_split, build_eval_transform(augment, cfg.eval.scale),
                                          classes=self.train_set.classes)
        self.sampler = SeededSampler(self.train_set, num_replicas=self.world, rank=self.rank, seed=run.seed)
        self.corrupt = CorruptImageCounter(self.train_set)
        batches = -(-self.sampler.num_samples // o.batch_size)  # drop_last=False
        super().__init__(run.out_dir, run.epochs * -(-batches // o.accumulate), device)
        if run.best_metric.endswith("_polyak") and not run.polyak_decay:
            raise UserError("run.best_metric=val_top1_accuracy_polyak needs run.polyak_decay")

        self.model = prepare_model(build_model(cfg, self.train_set.num_classes), self.device, run.channels_last)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
                    if self.distributed else self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        self.scheduler = self._build_scheduler()
        self.scaler = grad_scaler(self.device, run.amp)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(run.polyak_decay))
                    if run.polyak_decay else None)
        torch.manual_seed(run.seed + 1000 * self.rank)  # independent dropout masks per process
        self.history: list[dict] = []  # per-epoch validation results
        self._val_loader: DataLoader | None = None
        self.batches = StreamBatches(self.train_loader, lambda start: batches_in_epoch(
            self.sampler.num_samples, start, o.batch_size, drop_last=False), o.batch_size)
        self.writer = MetricsWriter(self.optimizer, run.log_every, run.tensorboard,
                                    extra=lambda: {"corrupt_images": len(self.corrupt.paths)})
        self.register_hooks([
            NaNCheck("Lower optim.lr or set optim.grad_clip"),
            ProgressBar(run.progress),
            self.writer,
            EvalHook(at_epoch_end=True, at_end=False),
            LRScheduler(self.scheduler, per_epoch=True, metric="val_top1_accuracy"),
            BestCheckpointer(run.best_metric),
            PeriodicCheckpointer(every=run.checkpoint_every, at_epoch_end=True),
            StepLimit(run.max_steps),
            StopAgreement("--resume"),
        ])
        if resume:
            self.load(self.out_dir / LAST_CHECKPOINT if resume is True else Path(resume))

    def _build_scheduler(self):
        s = self.cfg.schedule
        if s.kind == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="max", factor=s.factor,
                                                              patience=s.patience, min_lr=s.min_lr)
        if s.kind == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=s.step_epochs, gamma=s.gamma)
        return torch.optim.lr_scheduler.ConstantLR(self.optimizer, factor=1.0, total_iters=0)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_val_accuracy": self.best if self.best is not None else -1.0, "history": self.history,
            "classes": self.train_set.classes,
            "corrupt_images": sorted(self.corrupt.paths),
            "config": to_dict(self.cfg),
        }

    def load_state_dict(self, ckpt: dict, path: Path) -> None:
        if ckpt.get("classes") != self.train_set.classes:
            raise UserError(f"{path}: checkpoint classes differ from those of {self.cfg.data.root}")
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.history = list(ckpt["history"])
        if ckpt.get("best_val_accuracy", -1.0) >= 0:  # checkpoints written before the shared loop's "best"
            self.best = ckpt["best_val_accuracy"]
        self.corrupt.paths.update(ckpt.get("corrupt_images", []))

    # ------------------------------------------------------------------ loaders
    def train_loader(self, epoch: int, start: int) -> DataLoader:
        """The run's one loader (StreamBatches makes it once, or again on a resume): this rank's batches
        from `start` samples into `epoch` on, epoch after epoch without end, so its workers start once
        and go on loading across epoch ends."""
        stream = BatchStream(seeded_order(self.sampler), self.cfg.optim.batch_size, drop_last=False,
                             epoch=epoch, start=start)
        return DataLoader(self.train_set, batch_sampler=stream, num_workers=self.cfg.data.workers,
                          collate_fn=collate_skipping_corrupt, pin_memory=self.device.type == "cuda",
                          worker_init_fn=init_loader_worker, generator=torch.Generator().manual_seed(self.cfg.run.seed))

    def val_loader(self) -> DataLoader:
        if self._val_loader is None:
            shard = list(range(self.rank, len(self.val_set), self.world))
            workers = self.cfg.data.workers
            self._val_loader = DataLoader(self.val_set, batch_size=self.cfg.optim.batch_size, sampler=shard,
                                          num_workers=workers, collate_fn=collate_skipping_corrupt,
                                          persistent_workers=workers > 0, worker_init_fn=init_loader_worker)
        return self._val_loader

    # ------------------------------------------------------------------ the task
    def fit(self) -> TrainState:
        try:
            self.train()
        finally:
            self._val_loader = None  # shuts the validation loader's persistent workers down (train's: train())
        if dist_utils.is_main_process():
            if self.stop_requested:  # stopped by run.max_steps (a signal raised Interrupted)
                print(f"stopped at step {self.step} (max_steps={self.cfg.run.max_steps}); checkpoint "
                      f"{self.out_dir / LAST_CHECKPOINT}; continue with --resume", flush=True)
            if self.corrupt.paths:
                print(f"warning: {self.corrupt.summary()}", flush=True)
        best = self.best if self.best is not None else -1.0
        return TrainState(self.step, self.epoch, self.epoch_position, best, self.history)

    def run_step(self) -> None:
        """One optimizer update over `optim.accumulate` micro-batches (fewer at an epoch's end)."""
        o = self.cfg.optim
        pending, loss_sum, seen = 0, 0.0, 0
        self.ddp.train()
        while True:
            batch = self.batches.next(self)
            self.record_corrupt(batch.corrupt)
            pending += 1
            sync = pending == o.accumulate or self.epoch_ended
            if len(batch):
                with (contextlib.nullcontext() if sync or not self.distributed else self.ddp.no_sync()):
                    loss = self.forward_backward(batch)
                loss_sum += loss * len(batch)
                seen += len(batch)
            if sync:
                break
        self.before_update({"loss": loss_sum / max(seen, 1)})  # NaN check, before the weights change
        if pending != o.accumulate:  # a short accumulation at epoch end: rescale
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(o.accumulate / pending)
        optimizer_update(self.optimizer, self.scaler, self.model.parameters(), o.grad_clip)
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def forward_backward(self, batch) -> float:
        images = prepare_images(batch.images, self.device, self.cfg.run.channels_last)
        labels = batch.labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.run.amp):
            loss = classification_loss(self.ddp(images), labels, self.cfg.optim.aux_loss_weight)
        self.scaler.scale(loss / self.cfg.optim.accumulate).backward()
        return loss.item()

    def record_corrupt(self, indices: list[int]) -> None:
        for path in self.corrupt.add(indices):
            if dist_utils.is_main_process():
                tqdm.write(f"warning: skipping unreadable image {path}")

    def evaluate(self) -> dict[str, float]:
        """The epoch's end (self.epoch already counts it): top-1 of the weights and of their Polyak average."""
        metrics = {"val_top1_accuracy": self.validate(self.model)}
        if self.ema is not None:
            metrics["val_top1_accuracy_polyak"] = self.validate(self.ema.module)
        self.history.append({"epoch": self.epoch, "step": self.step, **metrics})
        self.writer.log({"epoch": self.epoch, **metrics}, split="val")
        if dist_utils.is_main_process():
            extra = f", Polyak {metrics['val_top1_accuracy_polyak']:.2f}%" if self.ema is not None else ""
            tqdm.write(f"epoch {self.epoch}: val top-1 accuracy {metrics['val_top1_accuracy']:.2f}%{extra} "
                       f"(lr {self.optimizer.param_groups[0]['lr']:.2e}, step {self.step})")
        return metrics

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        """Single-centre-crop top-1 accuracy in percent on the val split, this rank's share summed over ranks."""
        model.eval()
        loader = self.val_loader()
        counts = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            if len(batch):
                with autocast(self.device, self.cfg.run.amp):
                    logits = model(prepare_images(batch.images, self.device, self.cfg.run.channels_last))
                counts += torch.tensor([(logits.argmax(1).cpu() == batch.labels).sum().item(), len(batch)], dtype=torch.float64)
        if self.distributed:
            counts = counts.to(self.device)
            torch.distributed.all_reduce(counts)
        self.ddp.train()
        return 100.0 * counts[0].item() / max(counts[1].item(), 1.0)
