"""MultiBox (Erhan et al., CVPR 2014; Szegedy et al. 2014): a learned, class-agnostic box proposer.

A backbone's trunk features, pooled to a small grid, feed an FC layer, then one FC that predicts K
boxes and one that predicts K confidence logits. Box i is prior i plus a predicted offset, in
coordinates normalised by the image size (x1/W, y1/H, x2/W, y2/H), and the K priors are k-means
centres of the training boxes in those coordinates, so an untrained head already proposes the
typical boxes of the dataset.

Training matches ground truth to predictions one-to-one (linear_sum_assignment) and minimises the
paper's objective F = alpha * F_match + F_conf with, for an assignment x_ij (prediction i <-> box j),
    F_match = sum_ij x_ij * 1/2 ||l_i - g_j||^2
    F_conf  = -sum_ij x_ij log c_i - sum_i (1 - sum_j x_ij) log(1 - c_i)
Matching prediction i to box j changes F by  alpha/2 ||l_i - g_j||^2 - log c_i + log(1 - c_i)
= alpha/2 ||l_i - g_j||^2 - logit_i, so that is the cost handed to linear_sum_assignment: the
assignment that minimises the very loss being trained (the paper's x* = argmin F). The trainer's
default instead matches by location alone against the priors (Erhan et al.'s "training with
priors"): on BCCD the confidence term let a few confident predictions claim every box.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.vq import kmeans2
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import clip_boxes_to_image, nms, remove_small_boxes

from backbones import BackboneError, build_backbone, load_weights
from detect.errors import UserError
from detect.proposals.boxes import as_rgb_image
from detect.utils.checkpoint import load_checkpoint
from detect.utils.device import resolve_device

MATCH_TARGETS = ("predictions", "priors")


# ---------------------------------------------------------------- priors


def normalised_boxes(boxes: np.ndarray, width: float, height: float) -> np.ndarray:
    """Pixel xyxy [N,4] -> [N,4] in [0,1] (divided by the image size)."""
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / np.array([width, height, width, height])


def dataset_normalised_boxes(dataset) -> np.ndarray:
    """Every non-degenerate, non-crowd training box of a DetectionDataset, normalised: [M,4] float64."""
    parts = []
    for record in dataset.records:
        boxes = record.boxes[~record.iscrowd]
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        parts.append(normalised_boxes(boxes[keep], record.width, record.height))
    return np.concatenate(parts) if parts else np.zeros((0, 4))


def kmeans_priors(boxes: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """K-means centres of normalised boxes [M,4] -> priors [k,4] float32, sorted by (y1, x1) for stability.

    scipy's kmeans2 with k-means++ seeding from a fixed seed, so the same data gives the same priors.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if k < 1:
        raise UserError(f"MultiBox needs at least one prior, got num_priors={k}")
    if len(boxes) < k:
        raise UserError(f"cannot cluster {len(boxes)} training boxes into {k} priors: lower num_priors "
                        f"or train on more images")
    centres, _ = kmeans2(boxes, k, iter=iterations, minit="++", seed=seed)
    order = np.lexsort((centres[:, 0], centres[:, 1]))
    return centres[order].astype(np.float32)


# ---------------------------------------------------------------- matching and loss


def match_cost(locations: torch.Tensor, logits: torch.Tensor, gt: torch.Tensor, alpha: float) -> torch.Tensor:
    """Cost [K,G] of matching prediction i to box j: alpha/2 ||l_i - g_j||^2 - logit_i (see module doc).

    locations [K,4] and gt [G,4] are normalised xyxy; logits [K] are the confidence logits.
    """
    distance = (locations[:, None, :] - gt[None, :, :]).pow(2).sum(-1)
    return 0.5 * alpha * distance - logits[:, None]


def bipartite_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one matching of a [K,G] cost: (prediction indices, gt indices), each [min(K,G)]."""
    if cost.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    return torch.from_numpy(rows).long(), torch.from_numpy(cols).long()


def multibox_loss(boxes: torch.Tensor, logits: torch.Tensor, gt_boxes: list[torch.Tensor], alpha: float = 0.3,
                  match_locations: torch.Tensor | None = None,
                  match_confidence: bool = True) -> dict[str, torch.Tensor]:
    """The paper's loss, summed over predictions and averaged over the B images of a batch.

    boxes [B,K,4] predicted normalised boxes, logits [B,K], gt_boxes: B tensors [G_b,4] normalised.
    Per image: alpha * 1/2 sum_matched ||l_i - g_j||^2 + sum_i BCE(c_i, matched_i).
    `match_locations` [K,4] matches against fixed boxes (e.g. the priors) instead of the predictions;
    `match_confidence=False` drops the -logit term from the matching cost (pure location matching).
    Returns loss, loc (the alpha-weighted term), conf, and matched (mean matched boxes per image).
    """
    batch = boxes.shape[0]
    targets = torch.zeros_like(logits)
    loc = boxes.new_zeros(())
    matched = 0
    for b, gt in enumerate(gt_boxes):
        gt = gt.to(boxes)
        locations = boxes[b].detach() if match_locations is None else match_locations.to(boxes)
        match_logits = logits[b].detach() if match_confidence else torch.zeros_like(logits[b])
        pred_idx, gt_idx = bipartite_match(match_cost(locations, match_logits, gt, alpha))
        pred_idx, gt_idx = pred_idx.to(boxes.device), gt_idx.to(boxes.device)
        targets[b, pred_idx] = 1.0
        loc = loc + 0.5 * alpha * (boxes[b, pred_idx] - gt[gt_idx]).pow(2).sum()
        matched += len(pred_idx)
    conf = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    loc, conf = loc / batch, conf / batch
    return {"loss": loc + conf, "loc": loc, "conf": conf, "matched": torch.tensor(matched / max(batch, 1))}


# ---------------------------------------------------------------- the network


class MultiBoxNet(nn.Module):
    """Image [B,3,S,S] in [0,1] -> (boxes [B,K,4] normalised xyxy, confidence logits [B,K]).

    trunk (stride-16 features) -> average-pooled to a G x G grid -> FC (hidden, ReLU, dropout) ->
    one FC for the 4K box offsets and one for the K logits. Not the backbone's own head: ResNet's and
    GoogLeNet's end in global average pooling, which forgets *where* things are, and MultiBox must say
    where; an FC over a spatial grid does, as Erhan et al.'s fc6 over AlexNet's pool5 (for VGG-16,
    G = 7 and hidden = 4096 is fc6's very shape). Both output FCs start at zero: the first boxes are
    the priors and the first confidences are the bias.
    """

    def __init__(self, backbone: str, priors: torch.Tensor, width: float = 1.0, input_size: int = 224,
                 grid_size: int = 7, hidden: int = 1024, dropout: float = 0.5,
                 backbone_weights: str | None = None) -> None:
        super().__init__()
        try:
            model = build_backbone(backbone, width=width)
            if backbone_weights:
                load_weights(model, backbone_weights)
        except BackboneError as err:
            raise UserError(f"MultiBox backbone: {err}") from None
        parts = model.detection_parts()
        self.trunk = parts.trunk
        self.input_size = int(input_size)
        self.grid_size = int(grid_size)
        priors = torch.as_tensor(priors, dtype=torch.float32).reshape(-1, 4)
        self.register_buffer("priors", priors)
        self.register_buffer("mean", torch.tensor(parts.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(parts.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(parts.out_channels * self.grid_size ** 2, hidden),
                                nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.box_fc = nn.Linear(hidden, 4 * len(priors))
        self.conf_fc = nn.Linear(hidden, len(priors))
        for layer in (self.box_fc, self.conf_fc):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def num_priors(self) -> int:
        return self.priors.shape[0]

    def init_confidence(self, probability: float) -> None:
        """Start every confidence at the expected fraction of matched predictions (a stable first step)."""
        p = min(max(float(probability), 1e-4), 1 - 1e-4)
        nn.init.constant_(self.conf_fc.bias, float(np.log(p / (1 - p))))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk((images - self.mean) / self.std)
        hidden = self.fc(F.adaptive_avg_pool2d(features, self.grid_size))
        deltas = self.box_fc(hidden).view(-1, self.num_priors, 4)
        return self.priors + deltas, self.conf_fc(hidden)


def image_to_input(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 RGB [H,W,3] -> float [3,size,size] in [0,1], resized (anisotropically) like the training images."""
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return torch.from_numpy(resized).permute(2, 0, 1).float().div_(255.0)


def boxes_to_pixels(boxes: torch.Tensor, scores: torch.Tensor, width: int, height: int, top_k: int | None = None,
                    nms_iou: float | None = None, min_size: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised predictions [K,4], scores [K] -> pixel boxes clipped to the image, best first.

    Corners are re-ordered (a prediction may swap x1 and x2), boxes under `min_size` pixels dropped,
    then optional NMS (torchvision) and the top_k by score.
    """
    scale = boxes.new_tensor([width, height, width, height])
    boxes = boxes * scale
    boxes = torch.cat([torch.minimum(boxes[:, :2], boxes[:, 2:]), torch.maximum(boxes[:, :2], boxes[:, 2:])], 1)
    boxes = clip_boxes_to_image(boxes, (height, width))
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores = boxes[keep], scores[keep]
    if nms_iou is not None:
        keep = nms(boxes, scores, nms_iou)
    else:
        keep = torch.argsort(scores, descending=True, stable=True)
    if top_k is not None:
        keep = keep[:top_k]
    return boxes[keep], scores[keep]


# ---------------------------------------------------------------- the proposer


def build_model_from_checkpoint(state: dict) -> MultiBoxNet:
    """A MultiBoxNet with the architecture recorded in a checkpoint's config and its trained weights."""
    model_cfg = state["config"]["model"]
    model = MultiBoxNet(model_cfg["backbone"], state["model"]["priors"], width=model_cfg["width"],
                        input_size=model_cfg["input_size"], grid_size=model_cfg["grid_size"],
                        hidden=model_cfg["hidden"], dropout=model_cfg["dropout"])
    model.load_state_dict(state["model"])
    return model


class MultiBoxProposer:
    """`propose(image_uint8_rgb) -> (boxes [N,4], scores [N])` from a checkpoint of `detect train-multibox`.

    Scores are the predicted confidences (sigmoid of the logits); `top_k` best after optional NMS.
    """

    method = "multibox"

    def __init__(self, checkpoint: str, top_k: int = 200, nms_iou: float | None = None, min_size: float = 1.0,
                 device: str = "cpu") -> None:
        if not checkpoint:
            raise UserError("method multibox needs checkpoint=PATH (a model written by `detect train-multibox`)")
        self.checkpoint = Path(checkpoint).resolve()
        state = load_checkpoint(self.checkpoint)
        if not isinstance(state, dict) or "model" not in state or "priors" not in state.get("model", {}):
            raise UserError(f"{self.checkpoint}: not a MultiBox checkpoint (no model with priors in it)")
        self.device = resolve_device(device)
        self.model = build_model_from_checkpoint(state).to(self.device).eval()
        self.top_k = None if top_k in (None, 0) else int(top_k)
        self.nms_iou = None if nms_iou in (None, 0) else float(nms_iou)
        self.min_size = float(min_size)
        self._digest = hashlib.sha1(self.checkpoint.read_bytes()).hexdigest()[:16]

    def params(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "checkpoint_sha1": self._digest, "top_k": self.top_k,
                "nms_iou": self.nms_iou, "min_size": self.min_size}

    @torch.no_grad()
    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = as_rgb_image(image)
        height, width = image.shape[:2]
        batch = image_to_input(image, self.model.input_size)[None].to(self.device)
        boxes, logits = self.model(batch)
        boxes, scores = boxes_to_pixels(boxes[0].float().cpu(), logits[0].float().sigmoid().cpu(), width, height,
                                        self.top_k, self.nms_iou, self.min_size)
        return boxes.numpy().astype(np.float32), scores.numpy().astype(np.float32)
