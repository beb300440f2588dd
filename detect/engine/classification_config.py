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

    num_classes: int = 4
    train_per_class: int = 40
    val_per_class: int = 10
    size: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    root: str = "data/imagenet"  # ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg
    train_split: str = "train"
    val_split: str = "val"
    workers: int = 2
    synthetic: SyntheticFolderConfig | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    name: str = "vgg16"
    width: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # passed to backbones.build_backbone
    init_from: str | None = None  # a trained VGG-A checkpoint: pre-initialise a deeper VGG from it


@dataclass
class OptimConfig:
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256  # per process, per micro-batch
    accumulate: int = 1  # micro-batches per optimizer step: effective batch = batch_size*accumulate*processes
    aux_loss_weight: float = 0.3  # GoogLeNet's auxiliary classifiers (ignored for other nets)

    def validate(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.accumulate < 1:
            raise ValueError("lr must be > 0, batch_size and accumulate >= 1")


@dataclass
class ScheduleConfig:
    """plateau: lr x factor when val top-1 accuracy stops improving (VGG, ResNet);
    step: lr x gamma every step_epochs epochs (GoogLeNet: 0.96 every 8); constant."""

    kind: Literal["plateau", "step", "constant"] = "plateau"
    factor: float = 0.1
    patience: int = 2
    min_lr: float = 0.0
    gamma: float = 0.96
    step_epochs: int = 8


@dataclass
class RunConfig:
    out_dir: str = "runs/pretrain"
    epochs: int = 74
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimizer steps
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # CUDA only
    checkpoint_every: int = 1000  # optimizer steps; also at every epoch end and on SIGTERM/SIGINT
    log_every: int = 20
    polyak_decay: float | None = None  # exponential moving average of weights (GoogLeNet); None = off
    tensorboard: bool = True
    progress: bool = True


@dataclass
class PretrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: ClassificationEvalConfig = field(default_factory=ClassificationEvalConfig)
