"""An ensemble of detectors over the same proposals (GoogLeNet's ILSVRC-2014 detection entry).

Why: detectors trained apart make partly independent errors, so averaging them is a cheap gain at
test time. Every member scores the same proposals of each image; their soft-max class posteriors
[R,C+1] and per-class boxes [R,C,4] (in the image's pixels) are averaged, and only then thresholded and
NMS'd, once, with the ensemble's own test settings. Members may differ in backbone and test scale;
they must share the class list.
"""
from __future__ import annotations

import torch
from torch import nn

from detect.models.detector import Detector
from detect.models.postprocess import InferenceConfig, detect_objects


class DetectorEnsemble(nn.Module):
    """forward(images: list [3,H,W], proposals: list [R_i,4]) -> list of {"boxes","scores","labels"}; test only."""

    def __init__(self, members: list[Detector], inference: InferenceConfig) -> None:
        super().__init__()
        if len({m.num_classes for m in members}) != 1:
            raise ValueError("the ensemble's detectors must predict the same classes")
        self.members = nn.ModuleList(members)
        self.inference = inference
        self.num_classes = members[0].num_classes

    def forward(self, images: list[torch.Tensor], proposals: list[torch.Tensor]) -> list[dict]:
        if self.training:
            raise RuntimeError("DetectorEnsemble is for testing: train its detectors one by one")
        for member in self.members:  # the same regions for all: every member's RPN proposals (model.rpn_proposals)
            proposals = member.with_rpn_proposals(images, proposals)
        scored = [member.region_predictions(images, proposals, add_rpn_proposals=False) for member in self.members]
        detections = []
        for index, image in enumerate(images):
            scores = torch.stack([s[index][0] for s in scored]).mean(dim=0)
            boxes = torch.stack([s[index][1] for s in scored]).mean(dim=0)
            detections.append(detect_objects(scores, boxes, tuple(image.shape[-2:]), self.inference))
        return detections
