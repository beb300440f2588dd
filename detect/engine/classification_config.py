"""Configuration of `detect pretrain`: nested dataclasses filled from configs/pretrain_*.yaml + overrides.

The recipes' numbers live in the YAML files (configs/pretrain_vgg16.yaml etc.); the defaults here
are the VGG paper's where a field has one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from detect.data.classification_transforms import AugmentConfig
from detect.evaluation.classification import ClassificationEvalConfig


@dataclass
class SyntheticFolderConfig:
    """Generate a synthetic image folder at data.root when it does not exist yet (tests, demos)."""

    num_classes: int = 4  # classes of the synthetic folder
    train_per_class: int = 40  # training images per class
    val_per_class: int = 10  # validation images per class
    size: int = 64  # image side in pixels
    seed: int = 0  # seed of the generated images


@dataclass
class DataConfig:
    root: str = "data/imagenet"  # ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg
    train_split: str = "train"  # the training folder under root
    val_split: str = "val"  # the validation folder under root
    workers: int = 2  # DataLoader worker processes (0: in the main process)
    synthetic: SyntheticFolderConfig | None = None  # generate a synthetic folder at root if missing (None: off)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation and input normalisation


@dataclass
class ClassifierModelConfig:
    name: str = "vgg16"  # a name of `detect backbones`
    width: float = 1.0  # channel multiplier (thin versions of the same topology)
    options: dict[str, Any] = field(default_factory=dict)  # passed to backbones.build_backbone
    init_from: str | None = None  # a trained VGG-A checkpoint: pre-initialise a deeper VGG from it


@dataclass
class OptimConfig:
    lr: float = 0.01  # base learning rate (SGD)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 weight decay
    batch_size: int = 256  # per process, per micro-batch
    accumulate: int = 1  # micro-batches per optimizer step: effective batch = batch_size*accumulate*processes
    aux_loss_weight: float = 0.3  # GoogLeNet's auxiliary classifiers (ignored for other nets)
    grad_clip: float | None = None  # clip the gradient norm to this (None: no clipping)

    def validate(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.accumulate < 1:
            raise ValueError("lr must be > 0, batch_size and accumulate >= 1")
        if self.grad_clip is not None and not 0 < self.grad_clip < float("inf"):
            raise ValueError(f"grad_clip must be a positive finite number, got {self.grad_clip}")


@dataclass
class ScheduleConfig:
    """plateau: lr x factor when val top-1 accuracy stops improving (VGG, ResNet);
    step: lr x gamma every step_epochs epochs (GoogLeNet: 0.96 every 8); constant."""

    kind: Literal["plateau", "step", "constant"] = "plateau"  # the learning-rate schedule
    factor: float = 0.1  # plateau: lr multiplier when validation accuracy stalls
    patience: int = 2  # plateau: epochs without improvement before lowering lr
    min_lr: float = 0.0  # plateau: lr never goes below this
    gamma: float = 0.96  # step: lr multiplier every step_epochs
    step_epochs: int = 8  # step: epochs between lr decays


@dataclass
class RunConfig:
    out_dir: str = "runs/pretrain"  # checkpoints (last.pth, best.pth), metrics.jsonl, TensorBoard logs
    epochs: int = 74  # training epochs
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimizer steps
    seed: int = 0  # sample order, augmentation and initial weights
    device: str = "auto"  # auto | cpu | cuda[:i]
    amp: Literal["auto", "bf16", "fp16", "off"] | bool = "auto"  # autocast: auto = on CUDA only (bf16 where supported, else fp16); bf16 | fp16 on any device, the CPU included; off (true = auto, false = off)
    channels_last: Literal["auto"] | bool = "auto"  # channels_last memory layout: auto = on CUDA only; true | false on any device
    checkpoint_every: int = 1000  # optimizer steps; also at every epoch end and on SIGTERM/SIGINT
    log_every: int = 20  # optimizer steps between log lines
    polyak_decay: float | None = None  # exponential moving average of weights (GoogLeNet); None = off
    best_metric: Literal["val_top1_accuracy", "val_top1_accuracy_polyak"] = "val_top1_accuracy"  # best.pth keeps its highest
    tensorboard: bool = True  # also log to TensorBoard (metrics.jsonl always)
    progress: bool = True  # progress bars


@dataclass
class PretrainConfig:
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)  # the backbone to pretrain
    data: DataConfig = field(default_factory=DataConfig)  # the image folder and its augmentation
    optim: OptimConfig = field(default_factory=OptimConfig)  # SGD and batch size
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # learning-rate schedule
    run: RunConfig = field(default_factory=RunConfig)  # length, outputs, device, checkpoints
    eval: ClassificationEvalConfig = field(default_factory=ClassificationEvalConfig)  # top-1/top-5 evaluation protocols
