"""The detector: proposals in, detections out, on any backbone, in R-CNN or Fast R-CNN mode.

    normalise (and, in fast mode, rescale) -> region features (warped crops through the whole
    backbone, or one trunk pass + RoI pooling + head) -> classifier (C+1 soft-max) + localisation
    head -> losses (training) or soft-max, decode, per-class NMS (test). At test time, fast mode
    may score each RoI at one scale of an image pyramid (test.scales; detect/models/image_pyramid.py).

Shapes: N images, R regions, F features, C foreground classes; boxes [R,4] xyxy in pixels.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import clip_boxes_to_image

import backbones
from detect.errors import UserError
from detect.models.auxiliary_rpn import auxiliary_rpn_losses, build_auxiliary_rpn, rpn_boxes
from detect.models.box_coder import BoxCoder
from detect.models.image_pyramid import pyramid_region_features, pyramid_transforms
from detect.models.localisation_head import LocalisationHead, box_loss
from detect.models.postprocess import InferenceConfig, decode_class_boxes, detect_objects, mirror_boxes
from detect.models.region_features import PooledRegions, WarpedRegions, running_statistics_frozen
from detect.models.samplers import RegionSampler, SampledRegions, SamplerConfig, fast_rcnn_sampler, rcnn_sampler


@dataclass
class ModelConfig:
    backbone: str = "vgg16"  # a name of `detect backbones` (vgg16, resnet101, googlenet, ...)
    width: float = 1.0  # channel multiplier: thin versions of the same topology for CPU demos and tests
    backbone_options: dict = field(default_factory=dict)  # passed to backbones.build_backbone
    mode: Literal["fast", "rcnn"] = "fast"  # fast: Fast R-CNN (RoI pooling); rcnn: R-CNN (warped regions)
    # fast mode: shortest side drawn from train_scales per image, test_scale at test, longest <= max_size
    train_scales: list[int] = field(default_factory=lambda: [600])  # fast mode: training shorter sides, one drawn per image
    test_scale: int = 600  # fast mode: shorter side at test
    max_size: int = 1000  # fast mode: longest side at most
    roi_pool: Literal["align", "pool"] = "align"  # fast mode: RoIAlign or RoIPool
    # RoIAlign samples per bin side: 1 costs a quarter of torchvision's usual 2 (at 2000 RoIs on a CPU that
    # is ~10% of the whole detector's time); Mask R-CNN found AP insensitive to the number of samples
    roi_sampling_ratio: int = 1  # RoIAlign samples per bin side
    roi_context: float = 1.0  # fast mode: each RoI pooled over its box grown by this factor (1.5: half its size of surround)
    # Fast R-CNN: the RoI layer replaces the head's first max-pool (VGG pool5, GoogLeNet pool4) and
    # pools straight to 7x7; false pools to 14x14 and keeps that pool. ResNet (conv5) always takes 14x14.
    roi_replaces_pool: bool = True  # RoIs pooled to 7x7 in place of the head's first max-pool
    # rcnn mode: every region warped to warp_size with context_padding pixels of surround
    warp_size: int = 224  # rcnn mode: regions warped to this square size
    context_padding: int = 16  # rcnn mode: pixels of surrounding context in the warp
    chunk_size: int = 256  # regions through the head (fast) or the whole backbone (rcnn) at once
    # localisation head: per-class (pcr), single-class (scr) or none; trained jointly with the
    # classifier or as a separate stage (see detection_trainer); on regions with IoU >= box_iou
    box_regression: Literal["pcr", "scr", "none"] = "pcr"  # localisation: per-class, single-class or none
    box_training: Literal["joint", "separate"] = "joint"  # with the classifier, or a stage after it
    box_iou: float = 0.5  # regions with IoU >= this to a box train the localisation head
    box_stds: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.2, 0.2])  # box targets divided by these (x, y, w, h)
    box_loss_weight: float = 1.0  # weight of the box loss against the classifier's
    box_loss: Literal["euclidean", "smooth_l1"] = "euclidean"  # the VGG paper's L2, or Fast R-CNN's smooth L1
    box_loss_beta: float = 1.0  # smooth_l1: quadratic below this (Fast R-CNN 1; torchvision's Faster R-CNN 1/9)
    # divide the summed box loss by the regressed regions, or by every sampled region ("sampled": Fast
    # R-CNN's and torchvision's normalisation, so the box term does not outweigh the classifier by 1/fg_fraction)
    box_loss_average: Literal["regressed", "sampled"] = "regressed"  # box loss per regressed or per sampled region
    sampler: SamplerConfig | None = None  # None: the paper's sampler for the mode
    # fast mode: weight of an RPN's losses trained beside the head as extra supervision of the trunk (its
    # proposals unused and not run at test unless rpn_proposals; detect/models/auxiliary_rpn.py); 0: off, as in the papers
    auxiliary_rpn_weight: float = 0.0  # fast mode: dense objectness supervision of the trunk; 0 off
    # fast mode, with the RPN above: its top N proposals (learned on the shared trunk, as Faster R-CNN's) join each
    # image's cached ones (Selective Search's) in training and at test, so the head trains and tests on both
    rpn_proposals: int = 0  # fast mode: the trunk RPN's top N proposals join the cached ones; 0 off

    def validate(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if not self.train_scales or min(self.train_scales) < 16 or self.test_scale < 16:
            raise ValueError("train_scales and test_scale must be >= 16 pixels")
        if self.max_size < max(self.train_scales + [self.test_scale]):
            raise ValueError(f"max_size {self.max_size} is below a scale in {self.train_scales} / {self.test_scale}")
        if len(self.box_stds) != 4 or min(self.box_stds) <= 0:
            raise ValueError(f"box_stds must be 4 positive numbers, got {self.box_stds}")
        if self.box_loss_beta <= 0:
            raise ValueError(f"box_loss_beta must be > 0, got {self.box_loss_beta}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 1.0 <= self.roi_context < float("inf"):
            raise ValueError(f"roi_context must be a finite factor >= 1 (1: the box alone), got {self.roi_context}")
        if self.auxiliary_rpn_weight < 0:
            raise ValueError(f"auxiliary_rpn_weight must be >= 0, got {self.auxiliary_rpn_weight}")
        if self.sampler is not None and self.sampler.hard_negative_pool and self.mode != "fast":
            raise ValueError("sampler.hard_negative_pool needs mode fast (one trunk pass scores the candidates)")
        if self.auxiliary_rpn_weight > 0 and self.mode != "fast":
            raise ValueError("auxiliary_rpn_weight needs mode fast (one trunk pass per image); rcnn mode warps crops")
        if not isinstance(self.rpn_proposals, int) or isinstance(self.rpn_proposals, bool) or self.rpn_proposals < 0:
            raise ValueError(f"rpn_proposals must be a whole number >= 0, got {self.rpn_proposals!r}")
        if self.rpn_proposals and not self.auxiliary_rpn_weight > 0:
            raise ValueError("rpn_proposals needs auxiliary_rpn_weight > 0 (the RPN that makes them is trained by its loss)")

    def sampler_config(self) -> SamplerConfig:
        if self.sampler is not None:
            return self.sampler
        return rcnn_sampler() if self.mode == "rcnn" else fast_rcnn_sampler()


class Detector(nn.Module):
    """forward(images: list [3,H,W] in [0,1], proposals: list [R_i,4], targets=None)
    -> dict of losses (training) or list of {"boxes","scores","labels"} (eval), image coordinates."""

    def __init__(self, transform: GeneralizedRCNNTransform, regions: nn.Module, num_features: int,
                 num_classes: int, cfg: ModelConfig, inference: InferenceConfig) -> None:
        super().__init__()
        self.transform = transform
        self.regions = regions
        self.classifier = nn.Linear(num_features, num_classes + 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.localisation = (LocalisationHead(num_features, num_classes, per_class=cfg.box_regression == "pcr")
                             if cfg.box_regression != "none" else None)
        self.box_coder = BoxCoder(tuple(cfg.box_stds))
        self.sampler = RegionSampler(cfg.sampler_config())
        self.num_classes = num_classes
        self.cfg = cfg
        self.inference = inference
        self.auxiliary_rpn = (build_auxiliary_rpn(regions.trunk.out_channels, cfg.rpn_proposals)
                              if cfg.auxiliary_rpn_weight > 0 and cfg.mode == "fast" else None)
        # "joint": both losses; "classify" / "localise": the two stages of separate box training.
        self.stage: Literal["joint", "classify", "localise"] = "joint"

    def forward(self, images: list[torch.Tensor], proposals: list[torch.Tensor], targets: list[dict] | None = None):
        if not self.training:
            return [detect_objects(scores, boxes, tuple(image.shape[-2:]), self.inference)
                    for (scores, boxes), image in zip(self.region_predictions(images, proposals), images)]
        batch, sizes, proposals, targets = self.prepare(images, proposals, targets)
        if self.cfg.mode == "rcnn":  # warped crops through the whole backbone: no shared trunk features
            sampled = self.sampler(proposals, targets)
            return self.losses(*self.score_regions(batch, [s.boxes for s in sampled]), sampled)
        features = self.regions.trunk(batch)
        rpn_losses = {}
        if self.auxiliary_rpn is not None and self.cfg.rpn_proposals:  # its boxes join the proposals before sampling
            learned, rpn_losses = auxiliary_rpn_losses(self.auxiliary_rpn, batch, sizes, features, targets,
                                                       self.cfg.auxiliary_rpn_weight)
            # no gradient through the boxes, as in Faster R-CNN's approximate joint training
            proposals = [torch.cat([p, b.detach().to(p)]) for p, b in zip(proposals, learned)]
        sampled = self.sampler(proposals, targets, partial(self.background_loss, features))
        class_logits, deltas = self.score_features(self.regions.from_features(features, [s.boxes for s in sampled]))
        losses = {**self.losses(class_logits, deltas, sampled), **rpn_losses}
        if self.auxiliary_rpn is not None and not self.cfg.rpn_proposals:  # after the head: its draws as without it
            losses.update(auxiliary_rpn_losses(self.auxiliary_rpn, batch, sizes, features, targets,
                                               self.cfg.auxiliary_rpn_weight)[1])
        return losses

    @torch.no_grad()
    def with_rpn_proposals(self, images: list[torch.Tensor], proposals: list[torch.Tensor]) -> list[torch.Tensor]:
        """Test time: each image's proposals and, with model.rpn_proposals, the trunk RPN's top N after them (in the
        image's pixels): the regions every later step (flip, scales, refinement, an ensemble) then shares."""
        if not self.cfg.rpn_proposals or self.auxiliary_rpn is None:
            return proposals
        batch, sizes, _, _ = self.prepare(images, [p[:0] for p in proposals], None)
        learned = rpn_boxes(self.auxiliary_rpn, batch, sizes, self.regions.trunk(batch))
        return [torch.cat([p.to(b), resize_boxes(b, size, tuple(image.shape[-2:]))])
                for p, b, size, image in zip(proposals, learned, sizes, images)]

    @torch.no_grad()
    def background_loss(self, features: torch.Tensor, boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each region's classification loss as background (-log p_bg), per image: hard-negative mining's
        score. Batch norms in the head normalise as in training but keep their running statistics."""
        with running_statistics_frozen(self.regions):
            logits = self.classifier(self.regions.from_features(features, boxes))
        loss = -F.log_softmax(logits.float(), dim=-1)[:, 0]
        return list(loss.split([len(b) for b in boxes]))

    def region_predictions(self, images: list[torch.Tensor], proposals: list[torch.Tensor],
                           add_rpn_proposals: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Test time, before the threshold and NMS: per image, soft-max scores [R,C+1] and per-class boxes
        [R,C,4] in the image's own pixels (what an ensemble averages). One scale, or test.scales' pyramid;
        with refine_pool, the regions of every refinement iteration one after the other; with test.flip,
        the mean of the image's and its mirror's (the same regions, mirrored, then mirrored back). With
        model.rpn_proposals the regions are the proposals and the RPN's (with_rpn_proposals), unless
        `add_rpn_proposals` is false (an ensemble adds every member's first)."""
        if add_rpn_proposals:
            proposals = self.with_rpn_proposals(images, proposals)
        found = self.unflipped_region_predictions(images, proposals)
        if not self.inference.flip:
            return found
        widths = [image.shape[-1] for image in images]
        mirrored = self.unflipped_region_predictions(
            [image.flip(-1) for image in images], [mirror_boxes(p, w) for p, w in zip(proposals, widths)])
        return [((scores + m_scores) / 2, (boxes + mirror_boxes(m_boxes, w)) / 2)
                for (scores, boxes), (m_scores, m_boxes), w in zip(found, mirrored, widths)]

    def unflipped_region_predictions(self, images: list[torch.Tensor], proposals: list[torch.Tensor]
                                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        if self.inference.scales and self.cfg.mode == "fast":
            proposals = [p.to(images[0]) for p in proposals]
            pyramid = pyramid_transforms(self.transform, self.inference.scales, self.inference.max_size)
            image_sizes = original_sizes

            def score(boxes):
                return self.score_features(pyramid_region_features(
                    self.regions, pyramid, images, boxes, self.inference.scale_roi_size))
        else:
            batch, image_sizes, proposals, _ = self.prepare(images, proposals, None)

            def score(boxes):
                return self.score_regions(batch, boxes)
        class_logits, deltas = score(proposals)
        iterations = [self.scores_and_boxes(class_logits, deltas, proposals, image_sizes, original_sizes)]
        for _ in range(self.inference.refine_iterations):
            proposals = self.refine(class_logits, deltas, proposals, image_sizes)
            class_logits, deltas = score(proposals)
            iterations.append(self.scores_and_boxes(class_logits, deltas, proposals, image_sizes, original_sizes))
        if not self.inference.refine_pool:
            return iterations[-1]
        return [(torch.cat([s for s, _ in per_image]), torch.cat([b for _, b in per_image]))
                for per_image in zip(*iterations)]

    def prepare(self, images, proposals, targets):
        """Normalise, rescale (fast mode), pad into one batch; move proposals and targets along."""
        if self.cfg.mode == "fast":
            image_list, targets = self.transform(images, targets)
            batch, sizes = image_list.tensors, [tuple(s) for s in image_list.image_sizes]
        else:  # rcnn warps regions straight from the original image
            normalised = [self.transform.normalize(image) for image in images]
            batch = self.transform.batch_images(normalised, size_divisible=self.transform.size_divisible)
            sizes = [tuple(image.shape[-2:]) for image in images]
        proposals = [resize_boxes(p.to(batch), tuple(image.shape[-2:]), size)
                     for p, image, size in zip(proposals, images, sizes)]
        return batch, sizes, proposals, targets

    def train(self, mode: bool = True) -> "Detector":
        """Training draws each image's scale from train_scales; testing uses test_scale."""
        super().train(mode)
        self.transform.min_size = tuple(self.cfg.train_scales) if mode else (self.cfg.test_scale,)
        return self

    def score_regions(self, batch: torch.Tensor, boxes: list[torch.Tensor]):
        """class logits [R, C+1] and box deltas [R, 4 or 4C] for every region of the batch."""
        return self.score_features(self.regions(batch, boxes))

    def score_features(self, features: torch.Tensor):
        """class logits [R, C+1] and box deltas [R, 4 or 4C] from region features [R, F]."""
        deltas = self.localisation(features) if self.localisation is not None else features.new_zeros((len(features), 4))
        return self.classifier(features), deltas

    def losses(self, class_logits: torch.Tensor, deltas: torch.Tensor, sampled: list[SampledRegions]) -> dict:
        labels = torch.cat([s.labels for s in sampled])
        losses = {}
        if self.stage != "localise":
            losses["loss_classifier"] = F.cross_entropy(class_logits, labels)
        if self.localisation is not None and self.stage != "classify" and self.cfg.box_loss_weight > 0:
            ious = torch.cat([s.ious for s in sampled])
            regress = (labels > 0) & (ious >= self.cfg.box_iou)
            targets = self.box_coder.encode(torch.cat([s.matched_gt for s in sampled])[regress],
                                            torch.cat([s.boxes for s in sampled])[regress])
            predicted = self.localisation.select(deltas[regress], labels[regress])
            loss = box_loss(predicted, targets, self.cfg.box_loss, self.cfg.box_loss_beta)
            if self.cfg.box_loss_average == "sampled" and self.stage != "localise":
                loss = loss * (predicted.shape[0] / max(1, labels.numel()))
            losses["loss_box"] = self.cfg.box_loss_weight * loss
        return losses

    def refine(self, class_logits, deltas, proposals, image_sizes) -> list[torch.Tensor]:
        """Iterative refinement: each region moves to the regressed box of its best foreground class."""
        boxes = decode_class_boxes(self.box_coder, deltas, torch.cat(proposals), self.num_classes)
        best = class_logits[:, 1:].argmax(dim=1)
        boxes = boxes[torch.arange(len(best), device=best.device), best]
        refined = boxes.split([len(p) for p in proposals])
        return [clip_boxes_to_image(b, size) for b, size in zip(refined, image_sizes)]

    def scores_and_boxes(self, class_logits, deltas, proposals, image_sizes, original_sizes
                         ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Soft-max, decode, clip (in the network's pixels), back to each image's own pixels."""
        scores = F.softmax(class_logits.float(), dim=-1)
        boxes = decode_class_boxes(self.box_coder, deltas.float(), torch.cat(proposals).float(), self.num_classes)
        if self.localisation is None:
            boxes = torch.cat(proposals).float()[:, None, :].expand(-1, self.num_classes, 4)
        counts = [len(p) for p in proposals]
        out = []
        for s, b, size, original in zip(scores.split(counts), boxes.split(counts), image_sizes, original_sizes):
            b = resize_boxes(clip_boxes_to_image(b.reshape(-1, 4), size), size, original)
            out.append((s, b.reshape(-1, self.num_classes, 4)))
        return out


def build_detector(cfg: ModelConfig, num_classes: int, inference: InferenceConfig | None = None,
                   weights: str | None = None) -> Detector:
    """A detector on `cfg.backbone`, optionally starting from pretrained backbone weights
    (a local file, or "torchvision" for torchvision's ImageNet weights of the same architecture)."""
    try:
        backbone = backbones.build_backbone(cfg.backbone, width=cfg.width, **cfg.backbone_options)
        if weights:
            _, left_out = backbones.load_detection_weights(backbone, weights)  # any class count: classifier left out
            if left_out:
                logging.getLogger(__name__).warning(
                    "%s: %d entries not used for detection left out (%s): the detector trains its own classifier",
                    weights, len(left_out), ", ".join(left_out[:4]) + (", ..." if len(left_out) > 4 else ""))
    except backbones.BackboneError as err:
        raise UserError(f"model: {err}{pretraining_hint(weights, cfg)}") from None
    parts = backbone.detection_parts()
    if cfg.mode == "fast":
        head, roi_size = parts.head, parts.head_input_size
        if cfg.roi_replaces_pool and parts.roi_head is not None:
            head, roi_size = parts.roi_head, parts.roi_head_input_size
        regions = PooledRegions(parts.trunk, head, parts.num_features, roi_size,
                                parts.stride, cfg.roi_pool, cfg.chunk_size, cfg.roi_sampling_ratio, cfg.roi_context)
    else:
        regions = WarpedRegions(parts.trunk, parts.head, parts.num_features, cfg.warp_size, cfg.context_padding,
                                cfg.chunk_size)
    transform = GeneralizedRCNNTransform(cfg.test_scale, cfg.max_size, list(parts.mean), list(parts.std),
                                         size_divisible=parts.stride)
    return Detector(transform, regions, parts.num_features, num_classes, cfg, inference or InferenceConfig())


def pretraining_hint(weights: str | None, cfg: ModelConfig) -> str:
    """When `weights` is a `detect pretrain` checkpoint built with other backbone options than the
    detector's (a recipe's fc_width, say), the two settings side by side: what to make equal."""
    if not weights or str(weights) == "torchvision":
        return ""
    try:
        saved = torch.load(weights, map_location="cpu", weights_only=True)["config"]["model"]
        theirs = {"backbone": saved["name"], "width": saved["width"], **(saved.get("options") or {})}
    except Exception:  # not a pretrain checkpoint (a plain state_dict, say): nothing to compare
        return ""
    ours = {"backbone": cfg.backbone, "width": cfg.width, **cfg.backbone_options}
    differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if not differ:
        return ""
    def show(side: dict) -> str:
        return ", ".join(f"{k} {side.get(k, 'default')}" for k in differ)

    return (f". The file was pretrained with {show(theirs)}; this detector asks for {show(ours)} "
            "(model.backbone, model.width, model.backbone_options): build both with the same shapes, e.g. "
            "`detect pretrain ... model.options.fc_width=1024` for a recipe with fc_width 1024")
