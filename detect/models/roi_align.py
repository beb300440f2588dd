"""torchvision's RoIAlign with a faster CPU backward: its forward, the same gradient in two matrix products.

Why: torchvision's CPU `_roi_align_backward` walks every RoI, channel and sample in one thread; in
custom_cpu.yaml's training step (512 RoIs of a 64-channel map) it took ~19% of the step, more than
the trunk's convolutions' backward. RoIAlign with a fixed grid of samples per bin is separable: each
output bin is  sum_y sum_x Ay[p, y] * F[c, y, x] * Ax[q, x]  with Ay, Ax the bilinear weights of the
bin's sample rows and columns (zero for samples that torchvision drops, outside the map by more than
a pixel). The gradient of an image's map is then  Ay^T @ G @ Ax  summed over its RoIs: a batched and
one plain matrix product, which run on every core. An adaptive grid (sampling_ratio <= 0, a grid per
RoI), another device, or no gradient wanted: torchvision's op as is.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align as torchvision_roi_align

__all__ = ["roi_align"]


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int | tuple[int, int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1, aligned: bool = False) -> torch.Tensor:
    """torchvision.ops.roi_align's arguments and results (rois a [R, 5] tensor: image index, x1, y1, x2, y2)."""
    if (features.device.type == "cpu" and sampling_ratio > 0 and torch.is_grad_enabled()
            and features.requires_grad and rois.dim() == 2):
        return _RoIAlignSeparableBackward.apply(features, rois, _pair(output_size), spatial_scale,
                                               sampling_ratio, aligned)
    return torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)


def axis_weights(start: torch.Tensor, length: torch.Tensor, bins: int, samples: int, size: int) -> torch.Tensor:
    """[R, bins, size]: how much each bin's mean over its `samples` bilinear samples along one axis takes
    from each row (or column) of a map `size` long; torchvision's sample positions, clamping and cut-off."""
    offsets = (torch.arange(bins * samples, dtype=start.dtype, device=start.device) + 0.5) / samples  # in bins
    coords = start[:, None] + offsets[None, :] * (length / bins)[:, None]  # [R, bins * samples]
    kept = (coords >= -1.0) & (coords <= size)  # torchvision drops a sample further than one pixel outside
    coords = coords.clamp(min=0)
    low = coords.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coords), coords - low.to(coords.dtype))
    weights = torch.zeros((len(start), bins * samples, size), dtype=start.dtype, device=start.device)
    kept = kept.to(start.dtype)
    weights.scatter_add_(2, low[..., None], ((1 - frac) * kept)[..., None])
    weights.scatter_add_(2, high[..., None], (frac * kept)[..., None])
    return weights.view(len(start), bins, samples, size).sum(2) / samples


class _RoIAlignSeparableBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.shape, ctx.dtype = features.shape, features.dtype
        ctx.channels_last = (features.is_contiguous(memory_format=torch.channels_last)
                             and not features.is_contiguous())  # the gradient comes back in the map's layout
        ctx.params = (output_size, spatial_scale, sampling_ratio, aligned)
        return torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        (rois,) = ctx.saved_tensors
        (bins_h, bins_w), spatial_scale, samples, aligned = ctx.params
        n, channels, height, width = ctx.shape
        count = len(rois)
        if count == 0:
            return grad_output.new_zeros(ctx.shape, dtype=ctx.dtype), None, None, None, None, None
        boxes = rois[:, 1:].to(grad_output.dtype) * spatial_scale - (0.5 if aligned else 0.0)
        sizes = boxes[:, 2:] - boxes[:, :2]
        if not aligned:  # torchvision's legacy mode: RoIs at least one cell wide and high
            sizes = sizes.clamp(min=1.0)
        along_y = axis_weights(boxes[:, 1], sizes[:, 1], bins_h, samples, height)  # [R, P, H]
        along_x = axis_weights(boxes[:, 0], sizes[:, 0], bins_w, samples, width)  # [R, Q, W]
        image = rois[:, 0].long()
        if bool((image[1:] < image[:-1]).any()):  # RoIs grouped by image: each image's block is one product
            order = torch.argsort(image, stable=True)
            image, grad_output, along_y, along_x = image[order], grad_output[order], along_y[order], along_x[order]
        # per RoI and bin row p: G[p, c, :] @ Ax -> [R, P, C, W]; then per image, over its RoIs' rows, Ay^T @ that
        spread_x = torch.bmm(grad_output.permute(0, 2, 1, 3).reshape(count, bins_h * channels, bins_w), along_x)
        grad = grad_output.new_zeros((n, height, channels * width))
        counts = torch.bincount(image, minlength=n).tolist()
        for i, (rows, spread) in enumerate(zip(along_y.split(counts), spread_x.split(counts))):
            if len(rows):
                grad[i] = rows.reshape(-1, height).t() @ spread.reshape(-1, channels * width)
        layout = torch.channels_last if ctx.channels_last else torch.contiguous_format
        grad = grad.view(n, height, channels, width).permute(0, 2, 1, 3).contiguous(memory_format=layout)
        return grad.to(ctx.dtype), None, None, None, None, None
