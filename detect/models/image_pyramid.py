"""Multi-scale testing (SPP / Fast R-CNN): an image pyramid, each RoI scored at one scale.

Why: a single test scale sees small objects with few feature cells and large ones beyond the head's
receptive field. With `test.scales` the image is resized to every shorter side in the list (longest
side at most `test.max_size`), the trunk runs once per scale, and each RoI is pooled from the scale
where its scaled area is closest to `test.scale_roi_size`² (224²: the backbone's pretraining
input), as in Fast R-CNN's `_project_im_rois`. Scales no RoI picked are not computed.

Shapes: N images, R_i proposals of image i in its own pixels, L scales, F features.
"""
from __future__ import annotations

import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes


def pyramid_transforms(transform: GeneralizedRCNNTransform, scales: list[int], max_size: int
                       ) -> list[GeneralizedRCNNTransform]:
    """One test-time resize + normalise + pad per scale, with the detector's mean, std and stride."""
    return [GeneralizedRCNNTransform(scale, max_size, transform.image_mean, transform.image_std,
                                     size_divisible=transform.size_divisible).eval() for scale in scales]


def assign_levels(boxes: torch.Tensor, area_factors: torch.Tensor, roi_size: int) -> torch.Tensor:
    """boxes [R,4] in image pixels, area_factors [R,L] (scale_x * scale_y of each box's image at each
    level) -> level [R]: the level where the box's scaled area is closest to roi_size²."""
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0)
    return (areas[:, None] * area_factors - roi_size ** 2).abs().argmin(dim=1)


def scale_factor(height: int, width: int, scale: int, max_size: int) -> float:
    """The resize factor of a test scale: shorter side to `scale`, longer side at most `max_size`
    (torchvision's GeneralizedRCNNTransform rule)."""
    return min(scale / min(height, width), max_size / max(height, width))


def pyramid_region_features(regions, transforms: list[GeneralizedRCNNTransform], images: list[torch.Tensor],
                            proposals: list[torch.Tensor], roi_size: int) -> torch.Tensor:
    """[sum R_i, F] features of every proposal (images in order), each pooled at its own level by
    `regions` (a PooledRegions: trunk + RoI pooling + head)."""
    boxes = torch.cat(proposals)
    image_of = torch.cat([torch.full((len(p),), i, dtype=torch.long, device=boxes.device)
                          for i, p in enumerate(proposals)])
    factors = torch.tensor([[scale_factor(*image.shape[-2:], t.min_size[-1], t.max_size) ** 2 for t in transforms]
                            for image in images], dtype=boxes.dtype, device=boxes.device)  # [N, L]
    level = assign_levels(boxes, factors[image_of], roi_size)
    features = boxes.new_zeros((len(boxes), regions.num_features))
    for index, transform in enumerate(transforms):
        chosen = [torch.where((level == index) & (image_of == i))[0] for i in range(len(images))]
        if sum(len(c) for c in chosen) == 0:
            continue
        image_list = transform(images)[0]
        scaled = [resize_boxes(boxes[c], tuple(image.shape[-2:]), tuple(size))
                  for c, image, size in zip(chosen, images, image_list.image_sizes)]
        found = regions(image_list.tensors, scaled)  # image by image, each image's boxes in order
        features = features.to(found.dtype)
        features[torch.cat(chosen)] = found
    return features
