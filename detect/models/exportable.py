"""The detector as one tensor function, for ONNX and TorchScript: (image, proposals) -> (scores, boxes).

Why a separate module: `Detector.forward` takes lists, chunks the regions in Python loops and ends in
NMS, none of which traces into a graph with a dynamic image size and proposal count. This wrapper
runs the same layers of the same `Detector` (normalise, rescale to test_scale, pad to the stride,
region features of all proposals at once, classifier, localisation head, decode, clip, back to the
input's pixels) on one image, and stops before the score threshold and per-class NMS: those are
left to the caller (`detect.models.postprocess.detect_objects` in Python, a few lines of numpy
elsewhere), since their output size depends on the data.

    image     float32 [3, H, W] in [0, 1] (RGB)
    proposals float32 [R, 4] x1 y1 x2 y2 in the image's pixels
    -> scores float32 [R, C+1] (soft-max, column 0 = background),
       boxes  float32 [R, C, 4] one box per foreground class, clipped, in the image's pixels

With model.rpn_proposals the graph also runs the trunk's RPN and scores its top N boxes after the given
ones: R given proposals give R + (up to N) rows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import clip_boxes_to_image

from detect.models.auxiliary_rpn import traceable_rpn_boxes
from detect.models.detector import Detector
from detect.models.postprocess import clip_to_size, decode_class_boxes, mirror_boxes
from detect.models.region_features import PooledRegions, with_context


class ExportableDetector(nn.Module):
    """forward(image [3,H,W], proposals [R,4]) -> (scores [R,C+1], boxes [R,C,4]); see the module docstring."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector.eval()

    def forward(self, image: torch.Tensor, proposals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proposals = self.with_rpn_proposals(image, proposals)
        scores, boxes = self.unflipped(image, proposals)
        if not self.detector.inference.flip:  # Detector.region_predictions' test.flip: mean with the mirror's
            return scores, boxes
        width = torch._shape_as_tensor(image)[-1].to(torch.float32)
        m_scores, m_boxes = self.unflipped(image.flip(-1), mirror_boxes(proposals, width))
        return (scores + m_scores) / 2, (boxes + mirror_boxes(m_boxes, width)) / 2

    def with_rpn_proposals(self, image: torch.Tensor, proposals: torch.Tensor) -> torch.Tensor:
        """Detector.with_rpn_proposals: with model.rpn_proposals the trunk RPN's top N follow the given ones."""
        detector = self.detector
        if not detector.cfg.rpn_proposals or detector.auxiliary_rpn is None:
            return proposals
        batch, size, to_network = self.network_input(image)
        learned = traceable_rpn_boxes(detector.auxiliary_rpn, batch, size, detector.regions.trunk(batch))
        return torch.cat([proposals.to(batch.dtype), learned / to_network])

    def network_input(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The padded batch of one, its size before padding [h, w] and the scale to it (x, y, x, y)."""
        transform = self.detector.transform
        original = torch._shape_as_tensor(image)[-2:].to(torch.float32)
        normalised = transform.normalize(image)
        if self.detector.cfg.mode == "fast":
            normalised, _ = transform.resize(normalised)
        size = torch._shape_as_tensor(normalised)[-2:].to(torch.float32)
        batch = transform.batch_images([normalised], size_divisible=transform.size_divisible)
        return batch, size, torch.stack([size[1] / original[1], size[0] / original[0]]).repeat(2)

    def unflipped(self, image: torch.Tensor, proposals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        detector = self.detector
        batch, size, to_network = self.network_input(image)
        boxes = proposals.to(batch.dtype) * to_network
        class_logits, deltas = self.score(batch, boxes)
        iterations = [self.scores_and_boxes(class_logits, deltas, boxes, size)]
        for _ in range(detector.inference.refine_iterations):
            boxes = self.refine(class_logits, deltas, boxes, size)
            class_logits, deltas = self.score(batch, boxes)
            iterations.append(self.scores_and_boxes(class_logits, deltas, boxes, size))
        if detector.inference.refine_pool:  # Detector.region_predictions' order: iteration after iteration
            scores, clipped = torch.cat([s for s, _ in iterations]), torch.cat([b for _, b in iterations])
        else:
            scores, clipped = iterations[-1]
        return scores, clipped / to_network

    def scores_and_boxes(self, class_logits, deltas, boxes, size) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft-max scores [R,C+1] and per-class boxes [R,C,4], clipped, in the network's pixels."""
        detector = self.detector
        scores = F.softmax(class_logits, dim=-1)
        if detector.localisation is None:
            decoded = boxes[:, None, :].expand(-1, detector.num_classes, 4)
        else:
            decoded = decode_class_boxes(detector.box_coder, deltas, boxes, detector.num_classes)
        return scores, clip_to_size(decoded, size)

    def score(self, batch: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All regions at once (no chunking: the proposal count stays a dynamic dimension)."""
        regions = self.detector.regions
        rois = torch.cat([torch.zeros_like(boxes[:, :1]), boxes], dim=1)
        if isinstance(regions, PooledRegions):
            features = regions.head(regions._pool_op(regions.trunk(batch), rois))
        else:
            rois = torch.cat([rois[:, :1], with_context(rois[:, 1:], regions.warp_size, regions.context)], dim=1)
            features = regions.head(regions.trunk(regions.warp(batch, rois)))
        localisation = self.detector.localisation
        deltas = localisation(features) if localisation is not None else features.new_zeros((features.shape[0], 4))
        return self.detector.classifier(features), deltas

    def refine(self, class_logits, deltas, boxes, size) -> torch.Tensor:
        """Detector.refine on one image: each region moves to the box of its best foreground class."""
        detector = self.detector
        decoded = decode_class_boxes(detector.box_coder, deltas, boxes, detector.num_classes)
        best = class_logits[:, 1:].argmax(dim=1)
        picked = decoded[torch.arange(best.shape[0], device=best.device), best]
        return clip_boxes_to_image(picked, (size[0], size[1]))
