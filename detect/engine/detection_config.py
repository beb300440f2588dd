"""`detect train` / `detect test` configuration: YAML (configs/*.yaml) -> these dataclasses.

Every field can be overridden on the command line as `section.key=value`, e.g.
`train.steps=2000 model.mode=rcnn data.train=voc:/data/VOC2007:trainval`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from detect.models.detector import ModelConfig
from detect.models.postprocess import InferenceConfig

METRICS = ("voc07", "voc12", "coco")


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # dataset specs, joined (VOC07+12: two voc: specs)
    val: str | None = None  # evaluated every train.eval_every steps and at the end
    test: str | None = None  # `detect test` default
    classes: list[str] | None = None  # None: the training set's own class list
    flip: bool = True  # horizontal flips in training (image, boxes and proposals together)
    color_jitter: float = 0.0  # training photometric jitter: brightness, contrast, saturation x [1-v, 1+v] (0: off)
    workers: int = 2  # DataLoader worker processes reading training images (0: in the main process)
    strict_images: bool = False  # an image that cannot be decoded is an error (default: skipped, counted, named)

    def validate(self) -> None:
        if not 0.0 <= self.color_jitter < 1.0:
            raise ValueError(f"color_jitter must be in [0, 1), got {self.color_jitter}")


@dataclass
class ProposalConfig:
    method: str = "selective_search"  # proposer: selective_search | selectivesearch | multibox | combined
    params: dict = field(default_factory=lambda: {"strategy": "fast"})  # the proposer's parameters (see `detect propose`)
    cache_dir: str = "cache/proposals"  # proposal caches, one folder per dataset spec
    workers: int = 2  # processes computing missing proposals
    max_per_image: int = 2000  # the top-ranked proposals kept (R-CNN: ~2000 Selective Search boxes)

    def validate(self) -> None:
        if self.max_per_image < 1:
            raise ValueError(f"max_per_image must be >= 1, got {self.max_per_image}")


@dataclass
class TrainConfig:
    steps: int = 40000  # SGD steps (classifier + joint localisation)
    box_steps: int | None = None  # model.box_training=separate: steps afterwards training only the localisation head (None: a quarter of train.steps, rounded up, as R-CNN; 0 under joint training)
    images_per_batch: int = 2  # per process (Fast R-CNN: 2 images x 64 RoIs; R-CNN: 128 regions over them)
    lr: float = 1e-3  # base learning rate (SGD)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # L2 weight decay
    lr_steps: list[int] = field(default_factory=lambda: [30000])  # lr *= lr_gamma at these steps
    lr_gamma: float = 0.1  # lr multiplier at each of lr_steps
    warmup_steps: int = 0  # linear warm-up from lr / 10
    grad_clip: float | None = None  # clip the gradient norm to this (None: no clipping)
    weight_average: float | None = None  # decay of an exponential moving average of the weights, evaluated and saved as the model (None: off)
    seed: int = 0  # initial weights, sample order, flips and region sampling
    checkpoint_every: int = 1000  # steps between checkpoints (out_dir/last.pth); also at the end and on SIGTERM/SIGINT
    eval_every: int = 0  # 0: only at the end
    fit_check_images: int = 50  # training images scored beside data.val at each evaluation (0: none)
    fit_check_min_map: float = 0.3  # training mAP below this after half the run: warn "not fitting"
    log_every: int = 20  # steps between log lines (metrics.jsonl, TensorBoard)
    metrics: list[str] = field(default_factory=lambda: ["voc07", "coco"])  # evaluation on data.val: voc07 | voc12 | coco; the first one's mAP decides best.pth
    out_dir: str = "runs/detector"  # checkpoints (last.pth), metrics.jsonl and TensorBoard logs
    device: str = "auto"  # auto | cpu | cuda[:i]
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 is fastest on a busy CPU
    amp: Literal["auto", "bf16", "fp16", "off"] | bool = "auto"  # autocast: auto = on CUDA only (bf16 where supported, else fp16); bf16 | fp16 on any device, the CPU included; off (true = auto, false = off)
    channels_last: Literal["auto"] | bool = "auto"  # channels_last memory layout: auto = on CUDA only; true | false on any device
    progress: bool = True  # progress bars

    def validate(self) -> None:
        if self.steps < 0 or (self.box_steps is not None and self.box_steps < 0) or self.images_per_batch < 1:
            raise ValueError("steps and box_steps must be >= 0 and images_per_batch >= 1")
        positive = {"lr": self.lr, "lr_gamma": self.lr_gamma,
                    **({"grad_clip": self.grad_clip} if self.grad_clip is not None else {})}
        for key, value in positive.items():
            if not value > 0 or value == float("inf"):
                raise ValueError(f"{key} must be a positive finite number, got {value}")
        for key in ("momentum", "weight_decay", "warmup_steps", "eval_every", "checkpoint_every", "log_every"):
            value = getattr(self, key)
            if not value >= 0 or value == float("inf"):
                raise ValueError(f"{key} must be >= 0, got {value}")
        if self.weight_average is not None and not 0.0 < self.weight_average < 1.0:
            raise ValueError(f"weight_average (the average's decay) must be in (0, 1), got {self.weight_average}")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; choose from {list(METRICS)}")


@dataclass
class DetectionConfig:
    data: DataConfig = field(default_factory=DataConfig)  # datasets (spec strings, see README)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)  # region proposals and their cache
    model: ModelConfig = field(default_factory=ModelConfig)  # the detector: backbone, mode, region features, box head
    train: TrainConfig = field(default_factory=TrainConfig)  # the training run
    test: InferenceConfig = field(default_factory=InferenceConfig)  # detection post-processing (scores, NMS)

    def validate(self) -> None:
        if self.train.box_steps is None:  # follows train.steps: `train.steps=N` bounds the whole run
            self.train.box_steps = box_stage_steps(self.train.steps, self.model)
        if self.model.box_training == "separate" and self.train.box_steps == 0 and self.model.box_regression != "none":
            raise ValueError("model.box_training=separate needs train.box_steps > 0 (the localisation stage)")
        if self.test.scales and self.model.mode != "fast":
            raise ValueError("test.scales (multi-scale test) needs model.mode=fast: R-CNN warps every region to one size")


def box_stage_steps(steps: int, model: ModelConfig) -> int:
    """The default length of the separate localisation stage: a quarter of the classifier's steps,
    rounded up (R-CNN's schedules: 10,000 after 40,000), so that overriding train.steps alone bounds
    the whole run; 0 when the box head trains jointly (or there is none)."""
    if model.box_training != "separate" or model.box_regression == "none":
        return 0
    return max(1, -(-steps // 4))


def schedule_line(cfg: DetectionConfig) -> str:
    """One line saying how many steps of what will run (printed before training starts)."""
    t, m = cfg.train, cfg.model
    if m.box_training != "separate" or not t.box_steps:
        return f"steps    {t.steps} ({m.mode} mode; classifier and box regression trained jointly)"
    return (f"steps    {m.mode}: {t.steps} classifier steps, then {t.box_steps} box-regression steps "
            f"(train.box_steps; by default a quarter of train.steps): {t.steps + t.box_steps} in all")
