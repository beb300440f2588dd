"""Which proposals a training step looks at, and what each one should be called.

R-CNN fine-tuning: every proposal with IoU >= 0.5 to a ground-truth box is foreground (its class),
the rest background; each SGD batch draws 32 foreground and 96 background regions *across* all its
images. Fast R-CNN: 64 RoIs *per image*, 25% foreground (IoU >= 0.5), background from IoU in
[0.1, 0.5), the rest ignored. Both add the ground-truth boxes to the proposals first. The balanced
draw itself is torchvision's BalancedPositiveNegativeSampler.

`gt_jitter` (off in the papers' settings) also adds randomly shifted and rescaled copies of each
ground-truth box: Selective Search leaves few regions tightly around an object (BCCD: IoU >= 0.7 for
64% of the cells), while an RPN-fed head trains on dense, well-placed proposals around every object
and the near misses beside them. The copies span IoU ~0.3-1 to their box: foreground at every
overlap, and background that sits just off an object.

`hard_negative_pool` (off in the papers' settings) picks the background RoIs by their loss, as online
hard example mining does (Shrivastava et al., CVPR 2016): that many background candidates per image
are scored by the current network (no gradient) and the worst-classified of them fill the background
share of the batch. Drawn at random, most background RoIs are regions the classifier already rejects;
an RPN-fed head (the peer's) sees mostly object-like ones, the mined ones are those.
`hard_negative_jitter` (with the pool) goes one step further towards an RPN's proposals: the hardest
quarter (for 3 copies) of the mined background lends jittered copies of itself that stay background,
so the head sees each confusing region (an unlabelled object, say) from many nearby boxes, as it sees
every labelled object through `gt_jitter`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler
from torchvision.ops import box_iou

IGNORE = -1


@dataclass
class SamplerConfig:
    """Paper settings: `rcnn_sampler()` and `fast_rcnn_sampler()` below."""

    batch_size: int = 64  # regions per image (per_image) or per whole batch (R-CNN)
    fg_fraction: float = 0.25  # at most this fraction of batch_size foreground
    fg_iou: float = 0.5  # foreground: IoU >= this to a ground-truth box
    bg_iou_low: float = 0.1  # background: IoU in [bg_iou_low, bg_iou_high)
    bg_iou_high: float = 0.5  # upper end of the background IoU range
    per_image: bool = True  # balance per image (Fast R-CNN) or over the whole batch (R-CNN)
    gt_jitter: int = 0  # training: this many jittered copies of each ground-truth box join the proposals; 0 off
    hard_negative_pool: int = 0  # background candidates per image scored to keep the hardest (OHEM); 0: drawn at random
    hard_negative_jitter: int = 0  # with the pool: jittered copies of each of the hardest 1/(N+1) mined boxes replace the rest; 0 off

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.fg_fraction <= 1.0:
            raise ValueError(f"fg_fraction must be in (0, 1], got {self.fg_fraction}")
        if not 0.0 <= self.bg_iou_low <= self.bg_iou_high <= self.fg_iou:
            raise ValueError("need 0 <= bg_iou_low <= bg_iou_high <= fg_iou, got "
                             f"{self.bg_iou_low}, {self.bg_iou_high}, {self.fg_iou}")
        if not isinstance(self.gt_jitter, int) or isinstance(self.gt_jitter, bool) or self.gt_jitter < 0:
            raise ValueError(f"gt_jitter must be a whole number >= 0, got {self.gt_jitter!r}")
        if not isinstance(self.hard_negative_pool, int) or isinstance(self.hard_negative_pool, bool) \
                or self.hard_negative_pool < 0:
            raise ValueError(f"hard_negative_pool must be a whole number >= 0, got {self.hard_negative_pool!r}")
        if not isinstance(self.hard_negative_jitter, int) or isinstance(self.hard_negative_jitter, bool) \
                or self.hard_negative_jitter < 0:
            raise ValueError(f"hard_negative_jitter must be a whole number >= 0, got {self.hard_negative_jitter!r}")
        if self.hard_negative_jitter and not self.hard_negative_pool:
            raise ValueError("hard_negative_jitter needs hard_negative_pool > 0 (it jitters the mined background)")
        if self.hard_negative_pool and not self.per_image:
            raise ValueError("hard_negative_pool needs per_image: true (hard negatives are chosen per image)")


def rcnn_sampler() -> SamplerConfig:
    """R-CNN: 128 regions per batch, 32 foreground, background = every IoU below 0.5."""
    return SamplerConfig(batch_size=128, fg_fraction=0.25, fg_iou=0.5, bg_iou_low=0.0, bg_iou_high=0.5,
                         per_image=False)


def fast_rcnn_sampler() -> SamplerConfig:
    """Fast R-CNN: 64 RoIs per image, 25% foreground, background IoU in [0.1, 0.5)."""
    return SamplerConfig(batch_size=64, fg_fraction=0.25, fg_iou=0.5, bg_iou_low=0.1, bg_iou_high=0.5,
                         per_image=True)


@dataclass
class SampledRegions:
    """One image's training regions: boxes [S,4], labels [S] (0 = background), the matched
    ground-truth box [S,4] and its IoU [S] (for the localisation head's IoU threshold)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    matched_gt: torch.Tensor
    ious: torch.Tensor


def add_ground_truth(proposals: torch.Tensor, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Training sees each ground-truth box as a (perfect) proposal too."""
    return torch.cat([proposals, gt_boxes.to(proposals)], dim=0)


# jittered copies: each copy draws a strength in [0, 1); its centre moves by up to strength x this
# fraction of the box's width / height and each side scales by up to this factor ** strength either
# way. Their IoU to the box spreads evenly over 0.5-1 (83% of copies) with the rest in 0.3-0.5.
JITTER_SHIFT = 0.4
JITTER_SCALE = 1.5


def jitter_ground_truth(gt_boxes: torch.Tensor, copies: int) -> torch.Tensor:
    """[G * copies, 4] boxes near the ground truth (box after box): centres shifted, sides rescaled, at random."""
    if copies == 0 or gt_boxes.numel() == 0:
        return gt_boxes.new_zeros((0, 4))
    size = (gt_boxes[:, 2:] - gt_boxes[:, :2])[:, None, :]
    centre = (gt_boxes[:, :2] + gt_boxes[:, 2:])[:, None, :] / 2
    shift, scale = torch.rand((2, len(gt_boxes), copies, 2), device=gt_boxes.device, dtype=gt_boxes.dtype) * 2 - 1
    strength = torch.rand((len(gt_boxes), copies, 1), device=gt_boxes.device, dtype=gt_boxes.dtype)
    centre = centre + shift * strength * JITTER_SHIFT * size
    size = size * torch.exp(scale * strength * math.log(JITTER_SCALE))
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1).reshape(-1, 4)


def assign_labels(proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                  cfg: SamplerConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """labels [R] (class, 0 background, -1 ignored), matched gt [R,4], best IoU [R].

    An image whose proposals have no background candidate in [bg_iou_low, bg_iou_high) (an image
    without objects, say) takes every proposal below bg_iou_high as background, so it still
    teaches the classifier what is not an object.
    """
    num = proposals.shape[0]
    if gt_boxes.numel() == 0:
        ious = proposals.new_zeros(num)
        matched = proposals.new_zeros((num, 4))
        labels = torch.zeros(num, dtype=torch.int64, device=proposals.device)
        return labels, matched, ious
    ious, index = box_iou(proposals, gt_boxes).max(dim=1)
    matched = gt_boxes[index]
    labels = gt_labels[index].clone()
    background = (ious >= cfg.bg_iou_low) & (ious < cfg.bg_iou_high)
    if not background.any():
        background = ious < cfg.bg_iou_high
    labels[ious < cfg.fg_iou] = IGNORE
    labels[background] = 0
    return labels, matched, ious


# background_loss(boxes per image) -> each box's loss as background, per image (no gradient needed)
BackgroundLoss = Callable[[list[torch.Tensor]], list[torch.Tensor]]


class RegionSampler:
    """__call__(proposals: list [R_i,4], targets: list of {"boxes","labels"}, background_loss=None)
    -> list[SampledRegions]. With hard_negative_pool, `background_loss` scores the candidates."""

    def __init__(self, cfg: SamplerConfig) -> None:
        cfg.validate()
        self.cfg = cfg

    def __call__(self, proposals: list[torch.Tensor], targets: list[dict],
                 background_loss: BackgroundLoss | None = None) -> list[SampledRegions]:
        boxes, labels, matched, ious, truths = [], [], [], [], []
        for props, target in zip(proposals, targets):
            gt_boxes = target["boxes"].to(props)
            props = torch.cat([add_ground_truth(props, gt_boxes), jitter_ground_truth(gt_boxes, self.cfg.gt_jitter)])
            lab, gt, iou = assign_labels(props, gt_boxes, target["labels"].to(props.device), self.cfg)
            boxes.append(props), labels.append(lab), matched.append(gt), ious.append(iou)
            truths.append((gt_boxes, target["labels"].to(props.device)))
        keep = self._draw(labels)
        if self.cfg.hard_negative_pool and background_loss is not None:
            keep = self._mine_background(boxes, labels, keep, background_loss)
            if self.cfg.hard_negative_jitter:
                keep = [self._jitter_hard_negatives(i, boxes, labels, matched, ious, k, *truth)
                        for i, (k, truth) in enumerate(zip(keep, truths))]
        return [SampledRegions(b[k], lab[k], gt[k], iou[k])
                for b, lab, gt, iou, k in zip(boxes, labels, matched, ious, keep)]

    def _mine_background(self, boxes: list[torch.Tensor], labels: list[torch.Tensor], keep: list[torch.Tensor],
                         background_loss: BackgroundLoss) -> list[torch.Tensor]:
        """Per image, the drawn background RoIs replaced by the same number of the hardest among
        `hard_negative_pool` background candidates drawn at random (at least as many as it replaces)."""
        wanted = [int((lab[k] == 0).sum()) for lab, k in zip(labels, keep)]
        pools = []
        for lab, n in zip(labels, wanted):
            candidates = torch.where(lab == 0)[0]
            order = torch.randperm(len(candidates), device=candidates.device)
            pools.append(candidates[order[:max(self.cfg.hard_negative_pool, n)]])
        losses = background_loss([b[pool] for b, pool in zip(boxes, pools)])
        return [torch.cat([k[lab[k] != 0], pool[loss.topk(n).indices]])
                for lab, k, pool, loss, n in zip(labels, keep, pools, losses, wanted)]

    def _jitter_hard_negatives(self, i: int, boxes, labels, matched, ious, keep: torch.Tensor,
                               gt_boxes: torch.Tensor, gt_labels: torch.Tensor) -> torch.Tensor:
        """Image i's kept indices with its background share rebuilt: the hardest 1/(N+1) of the mined
        boxes (mined hardest first), their jittered copies that stay background (appended to image i's
        regions), then the next hardest mined ones if copies fall short."""
        foreground, background = keep[labels[i][keep] != 0], keep[labels[i][keep] == 0]
        n = len(background)
        seeds = background[:-(-n // (self.cfg.hard_negative_jitter + 1))]
        copies = jitter_ground_truth(boxes[i][seeds], self.cfg.hard_negative_jitter)
        lab, gt, iou = assign_labels(copies, gt_boxes, gt_labels, self.cfg)
        chosen = torch.where(lab == 0)[0][:n - len(seeds)]
        added = torch.arange(len(boxes[i]), len(boxes[i]) + len(chosen), device=keep.device)
        boxes[i], labels[i] = torch.cat([boxes[i], copies[chosen]]), torch.cat([labels[i], lab[chosen]])
        matched[i], ious[i] = torch.cat([matched[i], gt[chosen]]), torch.cat([ious[i], iou[chosen]])
        rest = background[len(seeds):len(seeds) + n - len(seeds) - len(chosen)]
        return torch.cat([foreground, seeds, added, rest])

    def _draw(self, labels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Indices kept per image: balanced per image, or balanced over the whole batch (R-CNN)."""
        balanced = BalancedPositiveNegativeSampler(self.cfg.batch_size, self.cfg.fg_fraction)
        if self.cfg.per_image:
            pos, neg = balanced(labels)
        else:
            pos, neg = balanced([torch.cat(labels)])
            sizes = [len(lab) for lab in labels]
            pos, neg = pos[0].split(sizes), neg[0].split(sizes)
        return [torch.where((p | n).bool())[0] for p, n in zip(pos, neg)]
