"""ImageNet-style classification evaluation: top-1 / top-5 error under the VGG paper's test protocols.

Per image and per checkpoint, one pass computes the soft-max posteriors of every protocol:

- single-scale: shortest side rescaled to Q, one centre crop;
- multi-scale: centre crops at each Q in a list, posteriors averaged;
- dense: the fully convolutional net on the whole rescaled image, class score map spatially
  averaged, image and its flip averaged, over every Q;
- multi-crop: a 5x5 grid of crops x 2 flips per scale (50 per Q), posteriors averaged;
- dense+multi-crop: the average of the two;
and an ensemble of checkpoints averages their posteriors protocol by protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from detect.data.samplers import init_loader_worker
from detect.utils.progress import progress_bar

PROTOCOLS = ("single-scale", "multi-scale", "dense", "multi-crop", "dense+multi-crop")


@dataclass
class ClassificationEvalConfig:
    scale: int = 256  # Q of single-scale evaluation
    scales: list[int] = field(default_factory=lambda: [224, 256, 288])  # Q list of the multi-scale protocols
    grid: int = 5  # multi-crop: grid x grid crop positions per scale (x2 flips)
    crop_batch: int = 50  # crops run through the model at once
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))  # which of the protocols to run
    workers: int = 2  # DataLoader worker processes (0: in the main process)

    def validate(self) -> None:
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown:
            raise ValueError(f"unknown protocol(s) {unknown}; valid: {', '.join(PROTOCOLS)}")
        if not self.scales or min(self.scales + [self.scale]) <= 0:
            raise ValueError(f"scales must be positive, got scale={self.scale} scales={self.scales}")
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")


def topk_errors(probs: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Top-k error in percent: the true class is not among the k highest posteriors (k capped at K)."""
    out = {}
    for k in ks:
        top = probs.topk(min(k, probs.shape[1]), dim=1).indices
        correct = (top == labels[:, None]).any(dim=1).float()
        out[f"top{k}_error"] = 100.0 * (1.0 - correct.mean().item()) if len(labels) else float("nan")
    return out


def pad_to(image: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad [3,H,W] on the bottom/right so both sides are at least `size`."""
    h, w = image.shape[-2:]
    return F.pad(image, (0, max(0, size - w), 0, max(0, size - h))) if h < size or w < size else image


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """[3,H,W] -> [3,size,size] from the middle (zero-padded if the image is smaller)."""
    image = pad_to(image, size)
    h, w = image.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return image[:, top:top + size, left:left + size]


def grid_crops(image: torch.Tensor, size: int, grid: int) -> torch.Tensor:
    """grid x grid crops of size `size`, evenly spaced over the image, and their flips: [2*grid^2,3,size,size]."""
    image = pad_to(image, size)
    h, w = image.shape[-2:]
    tops = torch.linspace(0, h - size, grid).round().long().tolist()
    lefts = torch.linspace(0, w - size, grid).round().long().tolist()
    crops = torch.stack([image[:, t:t + size, l:l + size] for t in tops for l in lefts])
    return torch.cat([crops, crops.flip(-1)])


def _softmax_batches(model: nn.Module, crops: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([F.softmax(model(crops[i:i + batch]).float(), dim=1) for i in range(0, len(crops), batch)])


def dense_posterior(dense_model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Fully convolutional scores of the image and its flip: score map averaged, soft-max, flips averaged."""
    pair = torch.stack([image, image.flip(-1)])
    scores = dense_model(pair)
    if scores.dim() == 4:  # [2,K,h,w] class score map -> spatial average
        scores = scores.mean(dim=(2, 3))
    return F.softmax(scores.float(), dim=1).mean(0)


@torch.no_grad()
def image_posteriors(model: nn.Module, dense_model: nn.Module, scaled: dict[int, torch.Tensor], crop: int,
                     cfg: ClassificationEvalConfig) -> dict[str, torch.Tensor]:
    """Posteriors [K] of every requested protocol for one image given as {Q: float [3,H_Q,W_Q]}."""
    want = set(cfg.protocols)
    out: dict[str, torch.Tensor] = {}
    if "single-scale" in want:
        out["single-scale"] = _softmax_batches(model, centre_crop(scaled[cfg.scale], crop)[None], 1)[0]
    if "multi-scale" in want:
        centres = torch.stack([centre_crop(scaled[q], crop) for q in cfg.scales])
        out["multi-scale"] = _softmax_batches(model, centres, cfg.crop_batch).mean(0)
    if want & {"dense", "dense+multi-crop"}:
        out["dense"] = torch.stack([dense_posterior(dense_model, scaled[q]) for q in cfg.scales]).mean(0)
    if want & {"multi-crop", "dense+multi-crop"}:
        crops = torch.cat([grid_crops(scaled[q], crop, cfg.grid) for q in cfg.scales])
        out["multi-crop"] = _softmax_batches(model, crops, cfg.crop_batch).mean(0)
    if "dense+multi-crop" in want:
        out["dense+multi-crop"] = (out["dense"] + out["multi-crop"]) / 2
    return {p: out[p] for p in cfg.protocols}


def _first(items):
    return items[0]


@torch.no_grad()
def collect_posteriors(model: nn.Module, dense_model: nn.Module, dataset, crop: int, cfg: ClassificationEvalConfig,
                       device: torch.device, desc: str = "eval") -> tuple[dict[str, torch.Tensor], torch.Tensor, list[int]]:
    """Run every protocol over `dataset` (whose transform is a MultiScaleTransform over the needed Qs).

    Returns ({protocol: posteriors [N,K]}, labels [N], dataset indices of skipped corrupt images).
    """
    qs = sorted(set(cfg.scales) | {cfg.scale})
    model.eval()
    dense_model.eval()
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=cfg.workers, collate_fn=_first,
                        worker_init_fn=init_loader_worker)
    posteriors: dict[str, list[torch.Tensor]] = {p: [] for p in cfg.protocols}
    labels, corrupt = [], []
    for images, label, index in progress_bar(loader, desc=desc, leave=False, dynamic_ncols=True):
        if images is None:
            corrupt.append(int(index))
            continue
        scaled = {q: img.to(device, non_blocking=True) for q, img in zip(qs, images)}
        for name, p in image_posteriors(model, dense_model, scaled, crop, cfg).items():
            posteriors[name].append(p.cpu())
        labels.append(label)
    stacked = {name: torch.stack(ps) if ps else torch.empty(0, 0) for name, ps in posteriors.items()}
    return stacked, torch.tensor(labels, dtype=torch.int64), corrupt


def evaluation_table(per_model: dict[str, dict[str, torch.Tensor]], labels: torch.Tensor) -> list[dict]:
    """Rows {model, protocol, top1_error, top5_error}, one per checkpoint and protocol, plus the ensemble
    (averaged posteriors of all checkpoints) when there is more than one."""
    rows = []
    for name, posteriors in per_model.items():
        rows += [{"model": name, "protocol": p, **topk_errors(probs, labels)} for p, probs in posteriors.items()]
    if len(per_model) > 1:
        protocols = next(iter(per_model.values())).keys()
        for p in protocols:
            mean = torch.stack([post[p] for post in per_model.values()]).mean(0)
            rows.append({"model": f"ensemble of {len(per_model)}", "protocol": p, **topk_errors(mean, labels)})
    return rows


def format_table(rows: list[dict]) -> str:
    width = max([len("model")] + [len(r["model"]) for r in rows])
    lines = [f"{'model':<{width}}  {'protocol':<17} {'top-1 err %':>11} {'top-5 err %':>11}"]
    lines += [f"{r['model']:<{width}}  {r['protocol']:<17} {r['top1_error']:>11.2f} {r['top5_error']:>11.2f}" for r in rows]
    return "\n".join(lines)
