"""A trained detector in three lines: `Predictor("runs/x/best.pth")("image.jpg")`.

Why: a program that wants detections should not rebuild the checkpoint loading, the proposal method
and the tensor plumbing by hand. The Predictor loads the detector, builds the proposal method its
config names (`proposals:` section) and turns images of any common kind into detections in the
input image's pixels. `detect infer` is built on it.

Inputs: a path, a uint8 RGB numpy array [H,W,3] (grayscale [H,W] and RGBA are converted), a PIL image,
or a list of these. Output per image: {"boxes" float32 [M,4] xyxy, "scores" float32 [M],
"labels" int64 [M] (1..C), "class_names" list of M str}; one dict for one image, a list for a list.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detect.data.images import read_image_rgb, to_rgb_uint8
from detect.engine.detection_inference import load_detector
from detect.errors import UserError
from detect.proposals import build_proposer
from detect.utils.device import autocast, resolve_device


class Predictor:
    """Predictor(checkpoint, device="auto", batch_size=1, amp=False, svd_rank=None)(images, proposals=None).

    `proposals` (one [R,4] xyxy array per image, or one array for a single image) replaces the
    checkpoint's proposal method. `batch_size` > 1 runs that many images through the network at once
    (faster on a GPU; padding to a common size can move scores slightly against batch_size=1).
    `svd_rank` (an int, or {"fc6": r6, "fc7": r7}) factorises the head's fc layers by truncated SVD
    (Fast R-CNN §3.1; detect/models/truncated_svd.py); default: the checkpoint config's test.svd_rank.
    """

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "auto", batch_size: int = 1,
                 amp: bool = False, svd_rank: int | dict[str, int] | None = None) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        self.device = device if isinstance(device, torch.device) else resolve_device(str(device))
        self.model, self.cfg, self.classes = load_detector(checkpoint, device=self.device, svd_rank=svd_rank)
        self.proposer = build_proposer(self.cfg.proposals.method, **self.cfg.proposals.params)
        self.batch_size, self.amp = batch_size, amp

    def __call__(self, images, proposals=None):
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        if proposals is not None:
            proposals = [proposals] if single else list(proposals)
            if len(proposals) != len(images):
                raise UserError(f"proposals: {len(proposals)} arrays for {len(images)} images")
        arrays = [as_rgb_array(image) for image in images]
        boxes = [self.proposals_of(a) for a in arrays] if proposals is None else [
            as_proposals(p, i) for i, p in enumerate(proposals)]
        results = []
        for start in range(0, len(arrays), self.batch_size):
            results += self.detect(arrays[start:start + self.batch_size], boxes[start:start + self.batch_size])
        return results[0] if single else results

    def proposals_of(self, image: np.ndarray) -> torch.Tensor:
        """The checkpoint's proposal method on one image: its top `proposals.max_per_image` boxes."""
        boxes, _ = self.proposer.propose(image)
        return torch.as_tensor(boxes[: self.cfg.proposals.max_per_image]).reshape(-1, 4)

    @torch.no_grad()
    def detect(self, images: list[np.ndarray], proposals: list[torch.Tensor]) -> list[dict]:
        tensors = [torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0).to(self.device) for image in images]
        with autocast(self.device, self.amp):
            found = self.model(tensors, [p.to(self.device) for p in proposals])
        return [self.named(f) for f in found]

    def named(self, found: dict) -> dict:
        out = {"boxes": found["boxes"].float().cpu().numpy(), "scores": found["scores"].float().cpu().numpy(),
               "labels": found["labels"].cpu().numpy().astype(np.int64)}
        out["class_names"] = [self.classes[int(label) - 1] for label in out["labels"]]
        return out


def as_rgb_array(image) -> np.ndarray:
    """A path, numpy array or PIL image -> uint8 RGB [H,W,3]; anything else is a clear error."""
    if isinstance(image, (str, Path)):
        return read_image_rgb(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image, without importing PIL here
        return np.asarray(image.convert("RGB")).copy()
    if isinstance(image, np.ndarray):
        try:
            return np.require(to_rgb_uint8(image), requirements=["W"])  # torch wants a writable array
        except ValueError as err:
            raise UserError(f"image array: {err}") from None
    raise UserError(f"cannot read an image from a {type(image).__name__}: pass a file path, a uint8 RGB "
                    f"numpy array [H,W,3] or a PIL image")


def as_proposals(boxes, index: int) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(boxes, dtype=np.float32))
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise UserError(f"proposals of image {index}: expected an [R,4] array of xyxy boxes, got shape "
                        f"{tuple(tensor.shape)}")
    return tensor
