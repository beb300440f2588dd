"""An RPN trained beside the region head as extra supervision of the trunk, and dropped at test.

Why: in fast mode a from-scratch trunk learns only from the head's sampled regions (256 per image at
most). torchvision's Faster R-CNN, on the same trunk and budget, also trains it through its RPN: an
objectness and a box target at every anchor of every feature cell, every step. This adds that dense
signal and nothing else: the detector's proposals still come from `proposals:` (Selective Search,
MultiBox), the RPN's own boxes are not used, and inference and export do not run it; unless
`model.rpn_proposals: N` asks for them: then its top N per image join the cached proposals, in training
(the boxes without gradient) and at test (`detect export` too), as a Faster R-CNN's RPN feeds its head.

The RPN is torchvision's (`RegionProposalNetwork`, `RPNHead`, `AnchorGenerator`) with its Faster R-CNN
defaults: anchors with IoU >= 0.7 to a ground-truth box are objects, < 0.3 background, 256 per image,
half of them objects at most; binary cross-entropy on objectness and smooth L1 on the anchor deltas.
Without rpn_proposals it is asked for one proposal per image (the cheapest setting), since nothing reads them.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import nms

from detect.models.postprocess import clip_to_size

ANCHOR_SIZES = (32, 64, 128, 256, 512)  # pixels of the network's input, as torchvision's Faster R-CNN
ANCHOR_RATIOS = (0.5, 1.0, 2.0)


def build_auxiliary_rpn(in_channels: int, proposals: int = 0) -> RegionProposalNetwork:
    """`proposals` (model.rpn_proposals): how many it proposes per image after NMS 0.7, from the 2x as many
    best-scored anchors (torchvision's Faster R-CNN: 2000 of 2000 in training, 1000 of 1000 at test)."""
    anchors = AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ANCHOR_RATIOS,))
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0])
    kept, ranked = max(1, proposals), max(1, 2 * proposals)
    return RegionProposalNetwork(anchors, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
                                 positive_fraction=0.5, pre_nms_top_n={"training": ranked, "testing": ranked},
                                 post_nms_top_n={"training": kept, "testing": kept}, nms_thresh=0.7)


def auxiliary_rpn_losses(rpn: RegionProposalNetwork, batch: torch.Tensor, image_sizes: list[tuple[int, int]],
                         features: torch.Tensor, targets: list[dict], weight: float
                         ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The RPN's proposals per image (the batch's pixels) and its objectness and anchor-box losses on the
    trunk's `features` of the padded `batch`, ground truth in the batch's pixels; each loss times `weight`.

    In float32 even under autocast: the anchors take the features' dtype, and bf16 would round their
    corners and the ground truth's (377 -> 376) before matching and encoding; the RPN head is small."""
    targets = [{"boxes": t["boxes"].float()} for t in targets]
    with torch.autocast(features.device.type, enabled=False):
        boxes, losses = rpn(ImageList(batch, image_sizes), {"0": features.float()}, targets)
    return boxes, {"loss_rpn_objectness": weight * losses["loss_objectness"],
                   "loss_rpn_box": weight * losses["loss_rpn_box_reg"]}


def rpn_boxes(rpn: RegionProposalNetwork, batch: torch.Tensor, image_sizes: list[tuple[int, int]],
              features: torch.Tensor) -> list[torch.Tensor]:
    """Test time: the RPN's proposals per image, best first, in the batch's pixels (float32, as above)."""
    with torch.autocast(features.device.type, enabled=False):
        boxes, _ = rpn(ImageList(batch, image_sizes), {"0": features.float()})
    return boxes


def traceable_rpn_boxes(rpn: RegionProposalNetwork, batch: torch.Tensor, size: torch.Tensor,
                        features: torch.Tensor) -> torch.Tensor:
    """`rpn_boxes` for one image in tensor operations only, for `detect export`: torchvision's RPN takes the
    image size as Python ints, which a trace would freeze; here `size` ([h, w], float, the image before
    padding) and the feature map's shape stay inputs of the graph. Same anchors, decoding, clipping,
    small-box removal, NMS and top-N as its `filter_proposals` with one feature level."""
    objectness, deltas = rpn.head([features])
    anchor_count = rpn.anchor_generator.num_anchors_per_location()[0]
    grid = torch._shape_as_tensor(features)[-2:]
    padded = torch._shape_as_tensor(batch)[-2:]
    stride = padded // grid  # as AnchorGenerator: the padded input's size over the feature map's, rounded down
    shifts_x = torch.arange(grid[1], dtype=torch.int64) * stride[1]
    shifts_y = torch.arange(grid[0], dtype=torch.int64) * stride[0]
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
    shifts = torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)) * 2, dim=1)
    base = rpn.anchor_generator.cell_anchors[0].to(features)
    anchors = (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)
    # [1, A, H, W] -> [H*W*A] and [1, A*4, H, W] -> [H*W*A, 4], torchvision's permute_and_flatten order
    scores = objectness[0].reshape(anchor_count, -1).permute(1, 0).reshape(-1)
    deltas = deltas[0].reshape(anchor_count, 4, -1).permute(2, 0, 1).reshape(-1, 4)
    order = scores.argsort(descending=True)[: rpn._pre_nms_top_n["testing"]]
    boxes = clip_to_size(rpn.box_coder.decode_single(deltas[order], anchors[order]), size)
    probabilities = torch.sigmoid(scores[order])
    kept = (((boxes[:, 2] - boxes[:, 0]) >= rpn.min_size) & ((boxes[:, 3] - boxes[:, 1]) >= rpn.min_size)
            & (probabilities >= rpn.score_thresh))
    boxes, probabilities = boxes[kept], probabilities[kept]
    return boxes[nms(boxes, probabilities, rpn.nms_thresh)[: rpn._post_nms_top_n["testing"]]]
