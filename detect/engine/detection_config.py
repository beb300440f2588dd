"""`detect train` / `detect test` configuration: YAML (configs/*.yaml) -> these dataclasses.

Every field can be overridden on the command line as `section.key=value`, e.g.
`train.steps=2000 model.mode=rcnn data.train=voc:/data/VOC2007:trainval`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    workers: int = 2


@dataclass
class ProposalConfig:
    method: str = "selective_search"
    params: dict = field(default_factory=lambda: {"strategy": "fast"})
    cache_dir: str = "cache/proposals"
    workers: int = 2  # processes computing missing proposals
    max_per_image: int = 2000  # the top-ranked proposals kept (R-CNN: ~2000 Selective Search boxes)

    def validate(self) -> None:
        if self.max_per_image < 1:
            raise ValueError(f"max_per_image must be >= 1, got {self.max_per_image}")


@dataclass
class TrainConfig:
    steps: int = 40000  # SGD steps (classifier + joint localisation)
    box_steps: int = 0  # model.box_training=separate: steps afterwards training only the localisation head
    images_per_batch: int = 2  # per process (Fast R-CNN: 2 images x 64 RoIs; R-CNN: 128 regions over them)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: list[int] = field(default_factory=lambda: [30000])  # lr *= lr_gamma at these steps
    lr_gamma: float = 0.1
    warmup_steps: int = 0  # linear warm-up from lr / 10
    grad_clip: float | None = None
    seed: int = 0
    checkpoint_every: int = 1000
    eval_every: int = 0  # 0: only at the end
    log_every: int = 20
    metrics: list[str] = field(default_factory=lambda: ["voc07", "coco"])
    out_dir: str = "runs/detector"
    device: str = "auto"
    threads: int | None = None  # torch CPU threads (None: torch's default); 1 is fastest on a busy CPU
    amp: bool = True
    progress: bool = True

    def validate(self) -> None:
        if self.steps < 0 or self.box_steps < 0 or self.images_per_batch < 1:
            raise ValueError("steps and box_steps must be >= 0 and images_per_batch >= 1")
        bad = [m for m in self.metrics if m not in METRICS]
        if bad:
            raise ValueError(f"unknown metric(s) {bad}; choose from {list(METRICS)}")


@dataclass
class DetectionConfig:
    data: DataConfig = field(default_factory=DataConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: InferenceConfig = field(default_factory=InferenceConfig)

    def validate(self) -> None:
        if self.model.box_training == "separate" and self.train.box_steps == 0 and self.model.box_regression != "none":
            raise ValueError("model.box_training=separate needs train.box_steps > 0 (the localisation stage)")
