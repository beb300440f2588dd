"""Training MultiBox: priors from the training boxes, the paper's matching loss, resumable checkpoints.

Read top to bottom: build the data, compute (or restore) the priors, build the network, then epochs of
forward -> bipartite matching -> loss -> step, a checkpoint after every epoch (and on SIGTERM), and an
optional validation pass (loss and recall at IoU 0.5 of the top-k boxes). Runs single-process or under
torchrun (DistributedDataParallel, gloo on CPU, nccl on CUDA); only rank 0 writes.
"""
from __future__ import annotations

import random
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
from detect.data.samplers import init_loader_worker
from detect.data.spec import build_dataset
from detect.errors import ConfigError, UserError
from detect.proposals.multibox import (MATCH_TARGETS, MultiBoxNet, boxes_to_pixels, dataset_normalised_boxes,
                                       kmeans_priors, multibox_loss)
from detect.utils import distributed as dist_utils
from detect.utils.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from detect.utils.device import autocast, grad_scaler, prepare_model, resolve_device
from detect.utils.interrupt import GracefulStop, Interrupted
from detect.utils.metric_logger import MetricLogger

CHECKPOINT_NAME = "multibox.pth"


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
    output_dir: str = "runs/multibox"  # the checkpoint (multibox.pth) and metrics.jsonl
    device: str = "auto"  # auto | cpu | cuda[:i]
    seed: int = 0  # priors, initial weights, sample order and flips
    resume: bool = True  # continue from output_dir/multibox.pth when it exists
    amp: bool = True  # mixed precision on CUDA
    log_every: int = 10  # steps between log lines
    eval_top_k: int = 200  # validation recall counts the top-k boxes


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
    whatever the number of workers.
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

    def __getitem__(self, index: int):
        image = self.dataset.load_image(index)
        target = self.dataset.target(index, training=True)
        boxes = target["boxes"].numpy()
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        self.transform.set_random_seed(self.seed * 1_000_003 + self.epoch * 100_003 + index)
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


def resume_state(cfg: MultiBoxTrainConfig, path: Path) -> dict | None:
    """The checkpoint to continue from, or None; refuses one trained with another model or data."""
    if not cfg.run.resume or not path.is_file():
        return None
    state = load_checkpoint(path)
    saved = state.get("config") or {}
    if "model" not in saved or "data" not in saved or "optimizer" not in state:
        raise UserError(f"{path}: not a MultiBox training checkpoint")
    if saved["model"] != to_dict(cfg.model) or saved["data"]["train"] != cfg.data.train:
        raise ConfigError(f"{path}: was trained with model {saved['model']} on {saved['data']['train']!r}; "
                          f"use another run.output_dir or run.resume=false to start over")
    return state


def train_multibox(cfg: MultiBoxTrainConfig) -> Path:
    """Train (or resume) to cfg.optim.epochs; returns the checkpoint path (a MultiBoxProposer loads it)."""
    device = resolve_device(cfg.run.device, dist_utils.local_rank())
    distributed = dist_utils.init_distributed(device)
    try:
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        out_dir = Path(cfg.run.output_dir)
        ckpt_path = out_dir / CHECKPOINT_NAME
        train_set = build_dataset(cfg.data.train)
        if len(train_set) == 0:
            raise UserError(f"{cfg.data.train}: the training set has no images")
        state = resume_state(cfg, ckpt_path)
        if state is not None and state["epoch"] >= cfg.optim.epochs and not state["batches_done"]:
            print(f"{ckpt_path}: already trained for {state['epoch']} epochs; nothing to do")
            return ckpt_path
        if state is None:
            priors, boxes_per_image = initial_priors(cfg, train_set)
        else:
            priors, boxes_per_image = state["model"]["priors"], 0.0
        model = MultiBoxNet(cfg.model.backbone, priors, width=cfg.model.width, input_size=cfg.model.input_size,
                            grid_size=cfg.model.grid_size, hidden=cfg.model.hidden, dropout=cfg.model.dropout,
                            backbone_weights=cfg.model.backbone_weights)
        model.init_confidence(boxes_per_image / model.num_priors)
        model = prepare_model(model, device)
        optimizer = build_optimizer(cfg.optim, model)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg.optim.milestones, cfg.optim.gamma)
        epoch, batches_done, step = 0, 0, 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            epoch, batches_done, step = state["epoch"], state["batches_done"], state["step"]
            print(f"resuming {ckpt_path} at epoch {epoch + 1}, batch {batches_done + 1}")
        net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
        samples = MultiBoxSamples(train_set, cfg.model.input_size, cfg.data.hflip, cfg.data.vflip, cfg.run.seed)
        sampler = DistributedSampler(samples, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(),
                                     shuffle=True, seed=cfg.run.seed)
        val_set = build_dataset(cfg.data.val) if cfg.data.val else None
        scaler = grad_scaler(device, cfg.run.amp)

        def checkpoint(finished: bool = False) -> None:
            if dist_utils.is_main_process():
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch, "batches_done": batches_done,
                    "step": step, "rng": rng_state(), "config": to_dict(cfg), "finished": finished})

        with MetricLogger(out_dir) as logger, GracefulStop() as stop:
            while epoch < cfg.optim.epochs:
                sampler.set_epoch(epoch)
                samples.epoch = epoch
                order = list(sampler)[batches_done * cfg.optim.batch_size:]
                # its own generator: creating the iterator must not draw from the global RNG (dropout's),
                # or a run resumed mid-epoch would see other dropout masks than an uninterrupted one
                loader = DataLoader(samples, batch_size=cfg.optim.batch_size, sampler=order, collate_fn=collate,
                                    num_workers=cfg.data.workers, pin_memory=device.type == "cuda",
                                    worker_init_fn=init_loader_worker,
                                    generator=torch.Generator().manual_seed(cfg.run.seed + epoch))
                net.train()
                progress = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                                disable=not dist_utils.is_main_process())
                for images, gt_boxes in progress:
                    images = images.to(device, non_blocking=True)
                    with autocast(device, cfg.run.amp):
                        boxes, logits = net(images)
                    match_to = model.priors if cfg.loss.match_to == "priors" else None
                    losses = multibox_loss(boxes.float(), logits.float(), gt_boxes, cfg.loss.alpha, match_to,
                                           cfg.loss.match_confidence)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(losses["loss"]).backward()
                    if cfg.optim.grad_clip:
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    step += 1
                    batches_done += 1
                    progress.set_postfix(loss=f"{losses['loss'].item():.3f}")
                    if step % cfg.run.log_every == 0:
                        logger.log(step, {k: dist_utils.all_reduce_mean(v.detach()) for k, v in losses.items()}
                                   | {"lr": optimizer.param_groups[0]["lr"], "epoch": epoch})
                    if stop.requested:  # `detect` exits 130 (SIGINT) / 143 (SIGTERM), see detect/cli.py
                        checkpoint()
                        raise Interrupted(stop.signal_name, ckpt_path, step, resume_flag=None)  # run.resume: rerun
                scheduler.step()
                epoch, batches_done = epoch + 1, 0
                if val_set is not None and dist_utils.is_main_process():
                    metrics = validate(model, val_set, cfg, device)
                    logger.log(step, metrics, split="val")
                    print(f"epoch {epoch}: val " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                checkpoint(finished=epoch >= cfg.optim.epochs)
        dist_utils.barrier()
        return ckpt_path
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
