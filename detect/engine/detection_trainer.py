"""Training the detector (`detect train`) as a task of the shared loop (engine/train_loop.py).

SGD with momentum over images sampled by (seed, epoch) — each sample's seed also decides its flip —
so a run stopped at any step and resumed from its checkpoint (model, optimizer, scheduler, step,
position in the epoch, every RNG state) continues the same schedule on the same samples.
Separate localisation training (model.box_training=separate) first trains the classifier for
train.steps steps, then only the localisation head for train.box_steps steps on regions with
IoU >= model.box_iou (R-CNN used 0.6). A non-finite loss stops the run with a message and leaves
the last good checkpoint untouched. Under torchrun: DistributedDataParallel, rank 0 logs and saves.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from detect.config import to_dict
from detect.data.dataset import DatasetSubset
from detect.data.samplers import BatchStream, SeededSampler, batches_in_epoch, init_loader_worker, seeded_order
from detect.data.spec import build_dataset
from detect.engine.detection_checks import check_before_proposals, training_header
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import ProposalDataset, cached_proposals, collate, join_datasets
from detect.engine.detection_inference import check_compatible, evaluate_predictions, predict
from detect.engine.train_loop import (BEST_CHECKPOINT, LAST_CHECKPOINT, BestCheckpointer, EvalHook,
                                     LRScheduler, MetricsWriter, NaNCheck, PeriodicCheckpointer, ProgressBar,
                                     StopAgreement, StreamBatches, TrainerBase, TrainingDiverged,
                                      optimizer_update)
from detect.engine.weight_average import WeightAverage
from detect.evaluation.fit_diagnosis import FitDiagnosis, side_by_side
from detect.models.detector import build_detector
from detect.utils import distributed as dist_utils
from detect.utils.device import autocast, grad_scaler, prepare_model, resolve_device

__all__ = ["BEST_CHECKPOINT", "LAST_CHECKPOINT", "DetectionTrainer", "TrainingDiverged", "lr_factor", "train_detector"]


def lr_factor(step: int, milestones: list[int], gamma: float, warmup_steps: int) -> float:
    """Step decay (x gamma at each milestone) after a linear warm-up from 1/10 of the base lr."""
    factor = gamma ** sum(step >= m for m in milestones)
    if warmup_steps and step < warmup_steps:
        factor *= 0.1 + 0.9 * step / warmup_steps
    return factor


class DetectionTrainer(TrainerBase):
    """The detection task on the shared loop: proposals, the detector, its step and its evaluation."""

    def __init__(self, cfg: DetectionConfig, weights: str | None = None, resume: str | bool = False) -> None:
        self.cfg = cfg
        t = cfg.train
        device = resolve_device(t.device, dist_utils.local_rank())
        if t.threads:
            torch.set_num_threads(t.threads)
        self.distributed = dist_utils.init_distributed(device)
        total = t.steps + (t.box_steps if cfg.model.box_training == "separate" else 0)
        super().__init__(t.out_dir, total, device)
        torch.manual_seed(t.seed)  # same initial weights in every process

        check_before_proposals(cfg, weights)  # backbone, --weights file, output folder: seconds, not after proposals
        train_set = join_datasets(cfg.data.train, cfg.data.classes)
        self.classes = train_set.classes
        if dist_utils.is_main_process():
            print(training_header(cfg, train_set, self.device, weights), flush=True)
        proposals = {"progress": t.progress, "strict_images": cfg.data.strict_images}
        self.train_data = ProposalDataset(train_set, cached_proposals(train_set, cfg.proposals, **proposals),
                                          cfg.proposals.max_per_image, flip=cfg.data.flip,
                                          color_jitter=cfg.data.color_jitter)
        self.val_data = None
        if cfg.data.val:
            val_set = build_dataset(cfg.data.val, self.classes)
            self.val_data = ProposalDataset(val_set, cached_proposals(val_set, cfg.proposals, **proposals),
                                            cfg.proposals.max_per_image)
        self.fit_data = self.training_subset(train_set, t.fit_check_images)
        self.diagnosis = FitDiagnosis(min_train_map=t.fit_check_min_map)

        self.model = prepare_model(build_detector(cfg.model, len(self.classes), cfg.test, weights), self.device,
                                   t.channels_last)
        self.average = WeightAverage(self.model, t.weight_average) if t.weight_average else None
        self.ddp = self.model
        if self.distributed:
            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                                               find_unused_parameters=cfg.model.box_training == "separate")
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, t.lr_steps, t.lr_gamma, t.warmup_steps))
        self.scaler = grad_scaler(self.device, t.amp)
        self.sampler = SeededSampler(self.train_data, num_replicas=dist_utils.world_size(), rank=dist_utils.rank(),
                                     seed=t.seed)
        self.batches = StreamBatches(self.loader, lambda start: batches_in_epoch(
                                         self.sampler.num_samples, start, t.images_per_batch, drop_last=True),
                                     t.images_per_batch, f"{self.train_data.dataset.name}: fewer images ({len(self.train_data)}) than "
                                     f"train.images_per_batch x processes")
        torch.manual_seed(t.seed + 1000 * dist_utils.rank())  # independent region sampling per process
        self.last_eval: dict[str, dict] = {}
        self.writer = MetricsWriter(self.optimizer, t.log_every)
        self.register_hooks([
            NaNCheck(f"Lower train.lr (now {t.lr}) or add train.grad_clip"),
            ProgressBar(t.progress),
            self.writer,
            EvalHook(every=t.eval_every) if self.evaluates else None,
            BestCheckpointer(f"{t.metrics[0]}_mAP") if self.val_data is not None else None,
            LRScheduler(self.scheduler),
            PeriodicCheckpointer(every=t.checkpoint_every),
            StopAgreement("--resume"),
        ])
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
        return self.max_steps

    def loader(self, epoch: int, start: int) -> DataLoader:
        """The run's one loader (StreamBatches makes it once, or again on a resume): this rank's batches
        from `start` samples into `epoch` on, epoch after epoch, its workers started once."""
        stream = BatchStream(seeded_order(self.sampler), self.cfg.train.images_per_batch, drop_last=True,
                             epoch=epoch, start=start)
        return DataLoader(self.train_data, batch_sampler=stream, num_workers=self.cfg.data.workers, collate_fn=collate,
                          worker_init_fn=init_loader_worker, pin_memory=self.device.type == "cuda",
                          # its own generator: starting the loader must not draw from the global RNG
                          generator=torch.Generator().manual_seed(self.cfg.train.seed))

    # ------------------------------------------------------------------ checkpoints
    @property
    def evaluated_model(self) -> torch.nn.Module:
        """What evaluation scores and checkpoints hand to `detect test`: the weight average when on."""
        return self.average.module if self.average is not None else self.model

    def state_dict(self) -> dict:
        average = ({"trained_model": self.model.state_dict(), "average_updates": self.average.updates}
                   if self.average is not None else {})
        return {"kind": "detector", "model": self.evaluated_model.state_dict(), **average,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "classes": self.classes, "config": to_dict(self.cfg),
                "best_map": self.best if self.best is not None else float("-inf")}  # validation mAP of best.pth

    def load_state_dict(self, checkpoint: dict, path: Path) -> None:
        check_compatible(checkpoint, path, self.cfg, self.classes)
        self.model.load_state_dict(checkpoint.get("trained_model", checkpoint["model"]))
        if self.average is not None:  # resumed from a run without the average: it starts from the weights
            self.average.module.load_state_dict(checkpoint["model"])
            self.average.updates = checkpoint.get("average_updates", 0)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        if checkpoint.get("best_map", float("-inf")) > float("-inf"):  # written before the shared loop's "best"
            self.best = checkpoint["best_map"]

    # ------------------------------------------------------------------ the task
    def fit(self) -> dict[str, dict]:
        """Train to the end (evaluating on the way and at the end); the last evaluation."""
        self.train()
        return self.last_eval

    def run_step(self) -> None:
        images, targets, proposals = self.batches.next(self)
        self.set_stage()
        self.ddp.train()
        images = [i.to(self.device, non_blocking=True) for i in images]
        proposals = [p.to(self.device, non_blocking=True) for p in proposals]
        targets = [{"boxes": tg["boxes"].to(self.device), "labels": tg["labels"].to(self.device)} for tg in targets]
        with autocast(self.device, self.cfg.train.amp):
            losses = self.ddp(images, proposals, targets)
        loss = sum(losses.values())
        self.before_update({"loss": loss, **losses})  # NaN check: before anything is updated
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        optimizer_update(self.optimizer, self.scaler, self.model.parameters(), self.cfg.train.grad_clip)
        if self.average is not None:
            self.average.update(self.model)

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

    def evaluate(self) -> dict[str, float]:
        """Validation metrics and, beside them, the training subset's mAP; the fit verdict."""
        t = self.cfg.train
        metric = t.metrics[0]
        results = self.score(self.val_data, t.metrics, "val") if self.val_data is not None else {}
        fit = self.score(self.fit_data, [metric], "train_subset") if self.fit_data is not None else {}
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
        self.last_eval = {"step": self.step, **results}
        return {f"{m}_mAP": r["mAP"] for m, r in results.items()}

    def score(self, data: ProposalDataset, metrics: list[str], split: str) -> dict[str, dict]:
        t = self.cfg.train
        predictions = predict(self.evaluated_model, data, self.device, t.amp, t.progress)
        if not dist_utils.is_main_process():
            return {}
        results = evaluate_predictions(data.dataset, predictions, metrics)
        self.writer.log({f"{m}_mAP": r["mAP"] for m, r in results.items()}, split=split)
        return results


def train_detector(cfg: DetectionConfig, weights: str | None = None, resume: str | bool = False) -> dict:
    """Train, evaluate on data.val at the end; returns the last evaluation ({} without data.val)."""
    trainer = DetectionTrainer(cfg, weights, resume)
    try:
        return trainer.fit()
    finally:
        dist_utils.shutdown_distributed()
