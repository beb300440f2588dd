"""The ImageNet classification training loop (`detect pretrain`), read top to bottom.

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
import math
import time
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
from detect.data.samplers import SeededSampler, init_loader_worker
from detect.engine.classification_config import PretrainConfig
from detect.errors import UserError
from detect.utils import distributed as dist_utils
from detect.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from detect.utils.device import autocast, grad_scaler, prepare_model, resolve_device
from detect.utils.interrupt import GracefulStop, Interrupted
from detect.utils.metric_logger import MetricLogger

LAST_CHECKPOINT = "last.pth"
BEST_CHECKPOINT = "best.pth"


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


class ClassificationTrainer:
    def __init__(self, cfg: PretrainConfig, resume: str | bool = False) -> None:
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device, dist_utils.local_rank())
        self.distributed = dist_utils.init_distributed(self.device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.out_dir = Path(cfg.run.out_dir)
        torch.manual_seed(cfg.run.seed)  # same initial weights in every process

        root = prepare_data_root(cfg)
        augment = cfg.data.augment
        self.train_set = ImageFolderDataset(root, cfg.data.train_split, build_train_transform(augment))
        self.val_set = ImageFolderDataset(root, cfg.data.val_split, build_eval_transform(augment, cfg.eval.scale),
                                          classes=self.train_set.classes)
        self.sampler = SeededSampler(self.train_set, num_replicas=self.world, rank=self.rank, seed=cfg.run.seed)
        self.corrupt = CorruptImageCounter(self.train_set)

        self.model = prepare_model(build_model(cfg, self.train_set.num_classes), self.device)
        self.ddp = (DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None)
                    if self.distributed else self.model)
        o = cfg.optim
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
        self.scheduler = self._build_scheduler()
        self.scaler = grad_scaler(self.device, cfg.run.amp)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.run.polyak_decay))
                    if cfg.run.polyak_decay else None)
        torch.manual_seed(cfg.run.seed + 1000 * self.rank)  # independent dropout masks per process
        self.state = TrainState()
        self._train_loader: DataLoader | None = None
        self._val_loader: DataLoader | None = None
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
    def checkpoint_state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.state.step, "epoch": self.state.epoch, "epoch_position": self.state.epoch_position,
            "best_val_accuracy": self.state.best_val_accuracy, "history": self.state.history,
            "world_size": self.world,
            "classes": self.train_set.classes,
            "corrupt_images": sorted(self.corrupt.paths),
            "config": to_dict(self.cfg),
        }

    def save(self, name: str = LAST_CHECKPOINT) -> Path | None:
        """Every process calls this (the RNG states of all ranks are gathered); rank 0 writes."""
        rngs = dist_utils.all_gather_objects(rng_state())
        if not dist_utils.is_main_process():
            return None
        return save_checkpoint(self.out_dir / name, {**self.checkpoint_state(), "rng": rngs})

    def load(self, path: Path) -> None:
        ckpt = load_checkpoint(path, map_location=self.device)
        if ckpt.get("classes") != self.train_set.classes:
            raise UserError(f"{path}: checkpoint classes differ from those of {self.cfg.data.root}")
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt.get("ema") is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        # Each rank had trained on `epoch_position` samples of its 1/world share of the epoch's order;
        # the same global position under another number of processes is position * old / new.
        position = ckpt["epoch_position"] * ckpt["world_size"] // self.world
        self.state = TrainState(ckpt["step"], ckpt["epoch"], position, ckpt["best_val_accuracy"], list(ckpt["history"]))
        self.corrupt.paths.update(ckpt.get("corrupt_images", []))
        rngs = ckpt["rng"]
        set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])

    # ------------------------------------------------------------------ loop
    def train_loader(self, start: int) -> DataLoader:
        """One loader for the whole run (workers start once); the sampler decides each epoch's order."""
        self.sampler.set_epoch(self.state.epoch, start)
        if self._train_loader is None:
            workers = self.cfg.data.workers
            self._train_loader = DataLoader(
                self.train_set, batch_size=self.cfg.optim.batch_size, sampler=self.sampler, num_workers=workers,
                collate_fn=collate_skipping_corrupt, pin_memory=self.device.type == "cuda", drop_last=False,
                persistent_workers=workers > 0, worker_init_fn=init_loader_worker,
                generator=torch.Generator().manual_seed(self.cfg.run.seed))
        return self._train_loader

    def val_loader(self) -> DataLoader:
        if self._val_loader is None:
            shard = list(range(self.rank, len(self.val_set), self.world))
            workers = self.cfg.data.workers
            self._val_loader = DataLoader(self.val_set, batch_size=self.cfg.optim.batch_size, sampler=shard,
                                          num_workers=workers, collate_fn=collate_skipping_corrupt,
                                          persistent_workers=workers > 0, worker_init_fn=init_loader_worker)
        return self._val_loader

    def fit(self) -> TrainState:
        run = self.cfg.run
        logger = MetricLogger(self.out_dir, tensorboard=run.tensorboard)
        try:
            with GracefulStop() as stop:
                while self.state.epoch < run.epochs:
                    finished_epoch = self.train_epoch(logger, stop)
                    if not finished_epoch:
                        self.save()
                        if stop.requested:  # `detect` exits 130 (SIGINT) / 143 (SIGTERM), see detect/cli.py
                            raise Interrupted(stop.signal_name, self.out_dir / LAST_CHECKPOINT, self.state.step)
                        if dist_utils.is_main_process():
                            print(f"stopped at step {self.state.step} (max_steps={run.max_steps}); checkpoint "
                                  f"{self.out_dir / LAST_CHECKPOINT}; continue with --resume", flush=True)
                        break
                    self.end_epoch(logger)
        finally:
            logger.close()
            self._train_loader = self._val_loader = None  # shuts the persistent workers down
        if self.corrupt.paths and dist_utils.is_main_process():
            print(f"warning: {self.corrupt.summary()}", flush=True)
        return self.state

    def should_stop(self, stop: GracefulStop) -> bool:
        flag = stop.requested or (self.cfg.run.max_steps is not None and self.state.step >= self.cfg.run.max_steps)
        if self.distributed:  # every process must leave at the same step, or the next all-reduce hangs
            flag_t = torch.tensor([float(flag)], device=self.device if self.device.type == "cuda" else "cpu")
            torch.distributed.all_reduce(flag_t, op=torch.distributed.ReduceOp.MAX)
            flag = bool(flag_t.item())
        return flag

    def train_epoch(self, logger: MetricLogger, stop: GracefulStop) -> bool:
        """Train to the end of the epoch (True) or until asked to stop at an optimizer step (False)."""
        cfg, o = self.cfg, self.cfg.optim
        if self.should_stop(stop):
            return False
        loader = self.train_loader(self.state.epoch_position)
        self.ddp.train()
        show = cfg.run.progress and dist_utils.is_main_process()
        bar = tqdm(total=len(loader), desc=f"epoch {self.state.epoch + 1}/{cfg.run.epochs}", disable=not show,
                   leave=False, dynamic_ncols=True)
        pending, loss_sum, seen, tic = 0, 0.0, 0, time.perf_counter()
        for i, batch in enumerate(loader):
            bar.update(1)
            self.record_corrupt(batch.corrupt)
            last_in_epoch = i == len(loader) - 1
            pending += 1
            sync = pending == o.accumulate or last_in_epoch
            if len(batch):
                with (contextlib.nullcontext() if sync or not self.distributed else self.ddp.no_sync()):
                    loss = self.forward_backward(batch)
                loss_sum += loss * len(batch)
                seen += len(batch)
            self.state.epoch_position += o.batch_size
            if not sync:
                continue
            self.optimizer_step(pending)
            pending = 0
            self.log_step(logger, loss_sum / max(seen, 1), seen, tic)
            loss_sum, seen, tic = 0.0, 0, time.perf_counter()
            bar.set_postfix(step=self.state.step, lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
            if cfg.run.checkpoint_every and self.state.step % cfg.run.checkpoint_every == 0:
                self.save()
            if not last_in_epoch and self.should_stop(stop):
                bar.close()
                return False
        bar.close()
        return True

    def forward_backward(self, batch) -> float:
        images = batch.images.to(self.device, non_blocking=True)
        if self.device.type == "cuda":
            images = images.contiguous(memory_format=torch.channels_last)
        labels = batch.labels.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.run.amp):
            loss = classification_loss(self.ddp(images), labels, self.cfg.optim.aux_loss_weight)
        self.scaler.scale(loss / self.cfg.optim.accumulate).backward()
        return loss.item()

    def optimizer_step(self, micro_batches: int) -> None:
        if micro_batches != self.cfg.optim.accumulate:  # a short accumulation at epoch end: rescale
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(self.cfg.optim.accumulate / micro_batches)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.state.step += 1

    def record_corrupt(self, indices: list[int]) -> None:
        for path in self.corrupt.add(indices):
            if dist_utils.is_main_process():
                tqdm.write(f"warning: skipping unreadable image {path}")

    def log_step(self, logger: MetricLogger, loss: float, seen: int, tic: float) -> None:
        if self.state.step % max(1, self.cfg.run.log_every) and self.state.step != 1:
            return
        if self.distributed:  # the loss of the whole (global) batch, not of rank 0's share
            loss = dist_utils.all_reduce_mean(torch.tensor([loss], dtype=torch.float64, device=self.device)).item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss} at step {self.state.step}; lower optim.lr")
        elapsed = time.perf_counter() - tic
        logger.log(self.state.step, {"loss": loss, "lr": self.optimizer.param_groups[0]["lr"], "epoch": self.state.epoch,
                                     "images_per_s": seen * self.world / elapsed if elapsed > 0 else 0.0,
                                     "corrupt_images": len(self.corrupt.paths)})

    def end_epoch(self, logger: MetricLogger) -> None:
        metrics = {"val_top1_accuracy": self.validate(self.model)}
        if self.ema is not None:
            metrics["val_top1_accuracy_polyak"] = self.validate(self.ema.module)
        accuracy = metrics["val_top1_accuracy"]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(accuracy)
        else:
            self.scheduler.step()
        self.state.epoch += 1
        self.state.epoch_position = 0
        self.state.history.append({"epoch": self.state.epoch, "step": self.state.step, **metrics})
        logger.log(self.state.step, {"epoch": self.state.epoch, **metrics}, split="val")
        if dist_utils.is_main_process():
            extra = f", Polyak {metrics['val_top1_accuracy_polyak']:.2f}%" if self.ema is not None else ""
            tqdm.write(f"epoch {self.state.epoch}: val top-1 accuracy {accuracy:.2f}%{extra} "
                       f"(lr {self.optimizer.param_groups[0]['lr']:.2e}, step {self.state.step})")
        improved = accuracy > self.state.best_val_accuracy
        self.state.best_val_accuracy = max(accuracy, self.state.best_val_accuracy)
        self.save()
        if improved:
            self.save(BEST_CHECKPOINT)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        """Single-centre-crop top-1 accuracy in percent on the val split, this rank's share summed over ranks."""
        model.eval()
        loader = self.val_loader()
        counts = torch.zeros(2, dtype=torch.float64)
        for batch in loader:
            if len(batch):
                with autocast(self.device, self.cfg.run.amp):
                    logits = model(batch.images.to(self.device))
                counts += torch.tensor([(logits.argmax(1).cpu() == batch.labels).sum().item(), len(batch)], dtype=torch.float64)
        if self.distributed:
            counts = counts.to(self.device)
            torch.distributed.all_reduce(counts)
        self.ddp.train()
        return 100.0 * counts[0].item() / max(counts[1].item(), 1.0)
