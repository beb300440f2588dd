"""Training MultiBox: priors from the training boxes, the paper's matching loss, resumable checkpoints.

Build the data, the k-means priors and the network; then, on the shared loop (engine/train_loop.py),
steps of forward -> bipartite matching -> loss -> update, last.pth after every epoch (and on SIGTERM),
an optional validation pass (loss and recall at IoU 0.5 of the top-k boxes) keeping best.pth, and
`--resume` to continue. Runs single-process or under torchrun (DistributedDataParallel, gloo on CPU,
nccl on CUDA); only rank 0 writes.
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import albumentations as A
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from torchvision.ops import box_iou
from tqdm import tqdm

from detect.config import to_dict
from detect.data.samplers import BatchStream, batches_in_epoch, init_loader_worker
from detect.data.spec import build_dataset
from detect.engine.train_loop import (LAST_CHECKPOINT, BestCheckpointer, EvalHook, LRScheduler,
                                     MetricsWriter, NaNCheck, PeriodicCheckpointer, ProgressBar, StepLimit,
                                     StopAgreement, StreamBatches, TrainerBase, optimizer_update)
from detect.errors import ConfigError, UserError
from detect.proposals.multibox import (MATCH_TARGETS, MultiBoxNet, boxes_to_pixels, dataset_normalised_boxes,
                                       kmeans_priors, multibox_loss)
from detect.utils import distributed as dist_utils
from detect.utils.device import autocast, grad_scaler, prepare_model, resolve_device



@dataclass
class DataConfig:
    train: str = ""  # dataset spec, e.g. voc:../shared/datasets/BCCD:train
    val: str | None = None  # dataset spec validated after every epoch (None: none)
    hflip: bool = True  # random horizontal flips
    vflip: bool = False  # random vertical flips
    workers: int = 0  # DataLoader worker processes (0: in the main process)


@dataclass
class MultiBoxModelConfig:
    backbone: str = "googlenet"  # a name of `detect backbones`
    width: float = 1.0  # channel multiplier (thin versions of the same topology)
    num_priors: int = 200  # K: boxes predicted per image (k-means priors of the training boxes)
    input_size: int = 224  # images resized to this square size
    grid_size: int = 7  # trunk features are pooled to grid_size x grid_size before the FC
    hidden: int = 1024  # units of the hidden FC layer
    dropout: float = 0.5  # dropout before the output layer
    backbone_weights: str | None = None  # a state_dict / checkpoint of the backbone (e.g. ImageNet-pretrained)

    def validate(self) -> None:
        if self.num_priors < 1 or self.input_size < 32 or self.width <= 0 or self.grid_size < 1 or self.hidden < 1:
            raise ValueError("num_priors, grid_size and hidden must be >= 1, input_size >= 32 and width > 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass
class LossConfig:
    alpha: float = 0.3  # weight of the location term in the matching cost and loss
    # What ground truth is matched against. The paper's full objective is match_to=predictions with
    # match_confidence=true (cost alpha/2 ||l-g||^2 - logit); with priors (Erhan et al.'s "training with
    # priors") and no confidence term the matching is pure geometry and cannot reinforce itself.
    match_to: Literal["predictions", "priors"] = "priors"  # ground truth matched to the predictions or the priors
    match_confidence: bool = False  # include the confidence in the matching cost


@dataclass
class OptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"  # sgd (with momentum) or adamw
    lr: float = 0.01  # base learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # weight decay
    epochs: int = 20  # training epochs
    milestones: list[int] = field(default_factory=lambda: [15])  # epochs at which lr *= gamma
    gamma: float = 0.1  # lr multiplier at each milestone
    batch_size: int = 8  # images per step (per process)
    grad_clip: float | None = 10.0  # clip the gradient norm to this (None: no clipping)


@dataclass
class RunConfig:
    out_dir: str = "runs/multibox"  # checkpoints (last.pth, best.pth) and metrics.jsonl
    output_dir: str | None = None  # deprecated name of out_dir
    device: str = "auto"  # auto | cpu | cuda[:i]
    seed: int = 0  # priors, initial weights, sample order and flips
    amp: bool = True  # mixed precision on CUDA
    log_every: int = 10  # steps between log lines
    checkpoint_every: int = 0  # steps between checkpoints (0: only at each epoch's end); also on SIGTERM/SIGINT
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps; continue with --resume
    eval_top_k: int = 200  # validation recall counts the top-k boxes
    best_metric: str = "recall@0.5"  # validation metric best.pth keeps: recall@0.5 (highest) | loss (lowest)
    progress: bool = True  # progress bars

    def validate(self) -> None:
        if self.output_dir is not None:
            print(f"warning: run.output_dir is deprecated; use run.out_dir (now {self.output_dir})", file=sys.stderr)
            self.out_dir, self.output_dir = self.output_dir, None
        if self.best_metric not in ("recall@0.5", "loss"):
            raise ValueError(f"best_metric must be recall@0.5 or loss, got {self.best_metric!r}")


@dataclass
class MultiBoxTrainConfig:
    data: DataConfig = field(default_factory=DataConfig)  # training (and validation) dataset
    model: MultiBoxModelConfig = field(default_factory=MultiBoxModelConfig)  # the MultiBox network
    loss: LossConfig = field(default_factory=LossConfig)  # matching and loss
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer and schedule
    run: RunConfig = field(default_factory=RunConfig)  # outputs, device, seed, resume

    def validate(self) -> None:
        if not self.data.train:
            raise ValueError("data.train (a dataset spec) is required")
        if self.loss.match_to not in MATCH_TARGETS:
            raise ValueError(f"loss.match_to must be one of {MATCH_TARGETS}")


class MultiBoxSamples(Dataset):
    """(image float [3,S,S] in [0,1], normalised gt boxes [G,4]) with bbox-aware flips (albumentations).

    The augmentation of sample i in epoch e is seeded by (seed, e, i): the same on every resume and
    whatever the number of workers. An item is an index (of epoch `self.epoch`) or `(index, epoch)`.
    """

    def __init__(self, dataset, size: int, hflip: bool = False, vflip: bool = False, seed: int = 0) -> None:
        self.dataset = dataset
        self.size = size
        self.seed = seed
        self.epoch = 0
        transforms = [A.Resize(size, size)]
        transforms += [A.HorizontalFlip(p=0.5)] if hflip else []
        transforms += [A.VerticalFlip(p=0.5)] if vflip else []
        self.transform = A.Compose(transforms, bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"],
                                                                         clip=True))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, epoch = item if isinstance(item, tuple) else (item, self.epoch)  # (index, epoch) from the trainer
        image = self.dataset.load_image(index)
        target = self.dataset.target(index, training=True)
        boxes = target["boxes"].numpy()
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.transform.set_random_seed(self.seed * 1_000_003 + epoch * 100_003 + index)
        out = self.transform(image=image, bboxes=boxes[keep], labels=target["labels"].numpy()[keep])
        tensor = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1).float().div_(255.0)
        gt = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)) / self.size
        return tensor, gt


def collate(batch):
    images, boxes = zip(*batch)
    return torch.stack(images), list(boxes)


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def initial_priors(cfg: MultiBoxTrainConfig, dataset) -> tuple[torch.Tensor, float]:
    """K-means priors of the training boxes, and the mean number of boxes per image."""
    boxes = dataset_normalised_boxes(dataset)
    priors = kmeans_priors(boxes, cfg.model.num_priors, seed=cfg.run.seed)
    return torch.from_numpy(priors), len(boxes) / max(len(dataset), 1)


class MultiBoxTrainer(TrainerBase):
    """The MultiBox task on the shared loop: k-means priors, the matching loss, per-epoch LR and validation."""

    def __init__(self, cfg: MultiBoxTrainConfig, resume: str | bool = False) -> None:
        self.cfg = cfg
        run, o = cfg.run, cfg.optim
        device = resolve_device(run.device, dist_utils.local_rank())
        self.distributed = dist_utils.init_distributed(device)
        random.seed(run.seed)
        np.random.seed(run.seed)
        torch.manual_seed(run.seed)  # same initial weights in every process
        self.train_set = build_dataset(cfg.data.train)
        if len(self.train_set) == 0:
            raise UserError(f"{cfg.data.train}: the training set has no images")
        self.samples = MultiBoxSamples(self.train_set, cfg.model.input_size, cfg.data.hflip, cfg.data.vflip, run.seed)
        self.sampler = DistributedSampler(self.samples, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(),
                                          shuffle=True, seed=run.seed)
        steps_per_epoch = -(-self.sampler.num_samples // o.batch_size)
        super().__init__(run.out_dir, o.epochs * steps_per_epoch, device)

        priors, boxes_per_image = initial_priors(cfg, self.train_set)
        model = MultiBoxNet(cfg.model.backbone, priors, width=cfg.model.width, input_size=cfg.model.input_size,
                            grid_size=cfg.model.grid_size, hidden=cfg.model.hidden, dropout=cfg.model.dropout,
                            backbone_weights=cfg.model.backbone_weights)
        model.init_confidence(boxes_per_image / model.num_priors)
        self.model = prepare_model(model, self.device)
        self.net = torch.nn.parallel.DistributedDataParallel(self.model) if self.distributed else self.model
        self.optimizer = build_optimizer(o, self.model)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, o.milestones, o.gamma)
        self.scaler = grad_scaler(self.device, run.amp)
        self.val_set = build_dataset(cfg.data.val) if cfg.data.val else None
        self.batches = StreamBatches(self.loader, lambda start: batches_in_epoch(
            self.sampler.num_samples, start, o.batch_size, drop_last=False), o.batch_size)
        torch.manual_seed(run.seed + 1000 * dist_utils.rank())  # independent dropout masks per process
        self.writer = MetricsWriter(self.optimizer, run.log_every, tensorboard=True)
        best_mode = "min" if run.best_metric == "loss" else "max"
        self.register_hooks([
            NaNCheck("Lower optim.lr or set optim.grad_clip"),
            ProgressBar(run.progress),
            self.writer,
            EvalHook(at_epoch_end=True, at_end=False) if self.val_set is not None else None,
            BestCheckpointer(run.best_metric, best_mode) if self.val_set is not None else None,
            LRScheduler(self.scheduler, per_epoch=True),
            PeriodicCheckpointer(every=run.checkpoint_every, at_epoch_end=True),
            StepLimit(run.max_steps),
            StopAgreement("--resume"),
        ])
        if resume:
            self.load(self.out_dir / LAST_CHECKPOINT if resume is True else Path(resume))

    def loader(self, epoch: int, start: int) -> DataLoader:
        """The run's one loader (StreamBatches makes it once, or again on a resume): this rank's batches
        of `(index, epoch)` from `start` samples into `epoch` on, epoch after epoch without end, so its
        workers start once and go on loading across epoch ends."""
        stream = BatchStream(self.epoch_order, self.cfg.optim.batch_size, drop_last=False, epoch=epoch, start=start)
        # its own generator: creating the iterator must not draw from the global RNG (dropout's),
        # or a run resumed mid-epoch would see other dropout masks than an uninterrupted one
        return DataLoader(self.samples, batch_sampler=stream, collate_fn=collate,
                          num_workers=self.cfg.data.workers, pin_memory=self.device.type == "cuda",
                          worker_init_fn=init_loader_worker, generator=torch.Generator().manual_seed(self.cfg.run.seed))

    def epoch_order(self, epoch: int) -> list[tuple[int, int]]:
        """This rank's samples of one epoch, each with its epoch (which seeds its augmentation)."""
        self.sampler.set_epoch(epoch)
        return [(i, epoch) for i in self.sampler]

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "batches_done": self.epoch_position // self.cfg.optim.batch_size,
                "finished": self.step >= self.max_steps, "config": to_dict(self.cfg)}

    def load_state_dict(self, state: dict, path: Path) -> None:
        """Refuses a checkpoint trained with another model or data."""
        saved = state.get("config") or {}
        if "model" not in saved or "data" not in saved or "optimizer" not in state:
            raise UserError(f"{path}: not a MultiBox training checkpoint")
        if saved["model"] != to_dict(self.cfg.model) or saved["data"]["train"] != self.cfg.data.train:
            raise ConfigError(f"{path}: was trained with model {saved['model']} on {saved['data']['train']!r}; "
                              f"use another run.out_dir, or leave out --resume to start over")
        if "epoch_position" not in state:  # a multibox.pth written before the shared loop
            state["epoch_position"] = state["batches_done"] * self.cfg.optim.batch_size
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def run_step(self) -> None:
        images, gt_boxes = self.batches.next(self)
        self.net.train()
        images = images.to(self.device, non_blocking=True)
        with autocast(self.device, self.cfg.run.amp):
            boxes, logits = self.net(images)
        match_to = self.model.priors if self.cfg.loss.match_to == "priors" else None
        losses = multibox_loss(boxes.float(), logits.float(), gt_boxes, self.cfg.loss.alpha, match_to,
                               self.cfg.loss.match_confidence)
        self.before_update(losses)  # NaN check, before the weights change
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        optimizer_update(self.optimizer, self.scaler, self.model.parameters(), self.cfg.optim.grad_clip)

    def evaluate(self) -> dict[str, float]:
        """Validation loss and recall on rank 0 (the others wait for it at the next collective)."""
        if not dist_utils.is_main_process():
            return {}
        metrics = validate(self.model, self.val_set, self.cfg, self.device)
        self.writer.log(metrics, split="val")
        tqdm.write(f"epoch {self.epoch}: val " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics


def train_multibox(cfg: MultiBoxTrainConfig, resume: str | bool = False) -> Path:
    """Train to cfg.optim.epochs (continuing a checkpoint with resume); returns <run.out_dir>/last.pth,
    which a MultiBoxProposer loads."""
    try:
        trainer = MultiBoxTrainer(cfg, resume)
        if trainer.step >= trainer.max_steps and dist_utils.is_main_process():
            print(f"{trainer.out_dir / LAST_CHECKPOINT}: already trained for {trainer.epoch} epochs; nothing to do")
        trainer.train()
        dist_utils.barrier()
        return trainer.out_dir / LAST_CHECKPOINT
    finally:
        dist_utils.shutdown_distributed()


@torch.no_grad()
def validate(model: MultiBoxNet, dataset, cfg: MultiBoxTrainConfig, device: torch.device) -> dict[str, float]:
    """Mean loss, and recall at IoU 0.5 of the top-k boxes (the number the proposer is for)."""
    model.eval()
    samples = MultiBoxSamples(dataset, cfg.model.input_size)
    loader = DataLoader(samples, batch_size=cfg.optim.batch_size, collate_fn=collate, num_workers=cfg.data.workers,
                        worker_init_fn=init_loader_worker)
    total_loss, found, total_gt = 0.0, 0, 0
    for images, gt_boxes in loader:
        with autocast(device, cfg.run.amp):
            boxes, logits = model(images.to(device))
        boxes, logits = boxes.float().cpu(), logits.float().cpu()
        match_to = model.priors.cpu() if cfg.loss.match_to == "priors" else None
        losses = multibox_loss(boxes, logits, gt_boxes, cfg.loss.alpha, match_to, cfg.loss.match_confidence)
        total_loss += losses["loss"].item() * len(images)
        for b, gt in enumerate(gt_boxes):
            top, _ = boxes_to_pixels(boxes[b], logits[b], 1, 1, cfg.run.eval_top_k, min_size=0.0)
            if len(gt) and len(top):
                found += int((box_iou(gt, top).max(dim=1).values >= 0.5).sum())
            total_gt += len(gt)
    return {"loss": total_loss / max(len(dataset), 1), "recall@0.5": found / max(total_gt, 1)}
