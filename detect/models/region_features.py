"""Per-region feature vectors [R, F] from a backbone's trunk and head, in the two classic ways.

`WarpedRegions` (R-CNN): crop every proposal with context padding from the image, warp it to the
backbone's input size and run the *whole* backbone (trunk + head) on the crops.
`PooledRegions` (SPP / Fast R-CNN): run the trunk once per image, pool each proposal's window of
the feature map to the head's input size (RoIAlign or RoIPool), and run only the head per region.

Both stream the regions in chunks, so thousands of proposals never hold more than `chunk_size`
crops or RoI feature maps in memory at once. Images come in normalised and padded to one batch
[N,3,H,W]; boxes are in that batch's pixel coordinates, one [R_i,4] tensor per image.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import roi_align as torchvision_roi_align
from torchvision.ops import roi_pool

from detect.models.roi_align import roi_align


@contextmanager
def running_statistics_frozen(module: nn.Module):
    """Batch norms still normalise by the batch but leave running mean/var (and their count) as they are."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
             and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


def boxes_to_rois(boxes: list[torch.Tensor]) -> torch.Tensor:
    """[R,5] rows (image index, x1, y1, x2, y2): the format torchvision's RoI ops take."""
    if not boxes:
        return torch.zeros((0, 5))
    index = torch.cat([torch.full((len(b), 1), i, dtype=b.dtype, device=b.device) for i, b in enumerate(boxes)])
    return torch.cat([index, torch.cat(boxes)], dim=1)


def with_context(boxes: torch.Tensor, warp_size: int, context: int) -> torch.Tensor:
    """Grow each box so that, once warped to warp_size, `context` pixels of surround lie on every side."""
    if context <= 0:
        return boxes
    return grown(boxes, warp_size / (warp_size - 2.0 * context))


def grown(boxes: torch.Tensor, scale: float) -> torch.Tensor:
    """Each box's width and height times `scale`, about its centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) / 2 * scale
    return torch.cat([centre - half, centre + half], dim=1)


class PooledRegions(nn.Module):
    """Fast R-CNN: one trunk pass per image, RoI pooling to the head's input size, per-region head."""

    def __init__(self, trunk: nn.Module, head: nn.Module, num_features: int, output_size: int = 14,
                 stride: int = 16, pool: str = "align", chunk_size: int = 512, sampling_ratio: int = 1,
                 context: float = 1.0) -> None:
        super().__init__()
        if pool not in ("align", "pool"):
            raise ValueError(f"RoI pooling must be 'align' or 'pool', got {pool!r}")
        if not 1.0 <= context < float("inf"):
            raise ValueError(f"RoI context must be a finite factor >= 1, got {context}")
        self.context = context  # each RoI pooled over its box grown by this factor: the head sees the surround
        self.trunk, self.head = trunk, head
        self.output_size, self.spatial_scale = output_size, 1.0 / stride
        self.pool, self.chunk_size, self.num_features = pool, chunk_size, num_features
        self.sampling_ratio = sampling_ratio  # RoIAlign's bilinear samples per bin side

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        return self.from_features(self.trunk(images), boxes)

    def from_features(self, features: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """The head's features [R, F] of `boxes` (in the batch's pixels) from the trunk's `features`."""
        # fp32 RoIs even when autocast made the features bf16/fp16: a bf16 coordinate near 600 px moves
        # by up to 2 px (8 significant bits); torchvision's autocast wrapper pools in fp32 anyway
        rois = boxes_to_rois(boxes).to(features.device, torch.promote_types(features.dtype, torch.float32))
        outputs = [self.head(self._pool(features, chunk)) for chunk in rois.split(self.chunk_size)]
        return torch.cat(outputs) if outputs else features.new_zeros((0, self.num_features))

    def _pool(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        threads = torch.get_num_threads()
        if features.device.type != "cpu" or threads == 1 or torch.is_grad_enabled() or len(rois) < 2 * threads:
            return self._pool_op(features, rois)
        # torchvision's CPU RoI kernels use one core (and release the GIL): at test time, where
        # thousands of RoIs are pooled, give each core a slice of them.
        with ThreadPoolExecutor(threads) as workers:
            return torch.cat(list(workers.map(partial(self._pool_op, features), rois.chunk(threads))))

    def _pool_op(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """Pooled in fp32 whatever autocast made the features, cast back to their dtype: what torchvision's
        autocast wrapper of roi_align does, done here because autocast is thread-local (the workers
        above) and its CPU roi_pool kernel takes fp32 only."""
        dtype = features.dtype
        features, rois = features.float(), rois.float()
        if self.context != 1.0:
            rois = torch.cat([rois[:, :1], grown(rois[:, 1:], self.context)], dim=1)
        if self.pool == "pool":
            return roi_pool(features, rois, self.output_size, self.spatial_scale).to(dtype)
        return roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, aligned=True).to(dtype)


class WarpedRegions(nn.Module):
    """R-CNN: context-padded crops warped to warp_size (bilinear, via roi_align) through trunk + head.

    Outside the image the warp samples zeros, which after normalisation is the mean colour: R-CNN's
    padding. Crops are made chunk by chunk, right before the backbone needs them.

    With gradients and more than one chunk, each chunk's pass is recomputed in backward instead of
    kept (`recompute`): a full-width backbone's activations for 128 warped regions at 224 px are
    ~15 GB (ResNet-101), one chunk's a quarter of that. Batch-norm running statistics are updated on
    the first pass only, so the result equals the kept pass.
    """

    def __init__(self, trunk: nn.Module, head: nn.Module, num_features: int, warp_size: int = 224,
                 context: int = 16, chunk_size: int = 64, recompute: bool = True) -> None:
        super().__init__()
        if not 0 <= 2 * context < warp_size:
            raise ValueError(f"context padding {context} leaves nothing of a {warp_size}px warp")
        self.trunk, self.head = trunk, head
        self.warp_size, self.context, self.chunk_size = warp_size, context, chunk_size
        self.num_features, self.recompute = num_features, recompute

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        rois = boxes_to_rois(boxes).to(images)
        rois = torch.cat([rois[:, :1], with_context(rois[:, 1:], self.warp_size, self.context)], dim=1)
        chunks = rois.split(self.chunk_size)
        if self.recompute and len(chunks) > 1 and torch.is_grad_enabled():
            outputs = [checkpoint(self._recomputable(), images, chunk, use_reentrant=False) for chunk in chunks]
        else:
            outputs = [self.features(images, chunk) for chunk in chunks]
        return torch.cat(outputs) if outputs else images.new_zeros((0, self.num_features))

    def features(self, images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.warp(images, rois)))

    def _recomputable(self):
        """features() for checkpoint: the recomputation in backward leaves batch-norm statistics alone."""
        first = True

        def run(images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
            nonlocal first
            if first:
                first = False
                return self.features(images, rois)
            with running_statistics_frozen(self):
                return self.features(images, rois)
        return run

    def warp(self, images: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """[r, 3, warp_size, warp_size] crops (anisotropic scaling, as R-CNN)."""
        return torchvision_roi_align(images, rois, self.warp_size, 1.0, sampling_ratio=1, aligned=True)
