"""detect.models.roi_align: torchvision's RoIAlign forward, and a CPU backward that equals torchvision's gradient."""
import pytest
import torch
from torchvision.ops import roi_align as torchvision_roi_align

from detect.models.roi_align import roi_align


def random_rois(count: int, images: int, height: int, width: int, stride: int, generator: torch.Generator):
    """Boxes anywhere around the map (some partly or wholly outside it, some thinner than a cell), unsorted images."""
    corner = torch.rand(count, 2, generator=generator, dtype=torch.float64) * torch.tensor(
        [width * stride + 80.0, height * stride + 80.0], dtype=torch.float64) - 40
    size = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 10 * stride
    image = torch.randint(0, images, (count, 1), generator=generator).to(torch.float64)
    rois = torch.cat([image, corner, corner + size], dim=1)
    rois[0, 1:] = torch.tensor([0.0, 0.0, width * stride, height * stride])  # the whole map: samples on its last row
    rois[1, 1:] = torch.tensor([-60.0, -60.0, -30.0, -30.0])  # wholly outside: torchvision drops its samples
    rois[2, 1:] = torch.tensor([5.0, 5.0, 5.5, 5.2])  # under a cell
    return rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
@pytest.mark.parametrize("output_size", [7, (5, 3)])
def test_gradient_equals_torchvisions(aligned, sampling_ratio, output_size):
    generator = torch.Generator().manual_seed(sampling_ratio)
    features = torch.randn(3, 6, 11, 15, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = random_rois(60, 3, 11, 15, 16, generator)
    ours = roi_align(features, rois, output_size, 1 / 16, sampling_ratio, aligned)
    theirs = torchvision_roi_align(features, rois, output_size, 1 / 16, sampling_ratio, aligned)
    upstream = torch.randn(theirs.shape, generator=generator, dtype=torch.float64)
    (ours_grad,) = torch.autograd.grad(ours, features, upstream)
    (theirs_grad,) = torch.autograd.grad(theirs, features, upstream)
    assert torch.equal(ours, theirs)
    assert theirs_grad.abs().max() > 1  # the gradient is not trivially zero
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=1e-12)


def test_float32_gradient_and_an_image_without_rois():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(3, 64, 24, 32, generator=generator, requires_grad=True)
    rois = random_rois(256, 2, 24, 32, 16, generator).float()  # image 2 has none: its gradient is zero
    upstream = torch.randn(256, 64, 7, 7, generator=generator)
    grads = [torch.autograd.grad(op(features, rois, 7, 1 / 16, 1, True), features, upstream)[0]
             for op in (roi_align, torchvision_roi_align)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)  # float32 sums in another order
    assert grads[0][2].abs().max() == 0


def test_a_channels_last_map_gets_its_gradient_in_that_layout():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(2, 16, 12, 20, generator=generator).contiguous(memory_format=torch.channels_last)
    features.requires_grad_(True)
    rois = random_rois(50, 2, 12, 20, 16, generator).float()
    upstream = torch.randn(50, 16, 7, 7, generator=generator)
    (ours,) = torch.autograd.grad(roi_align(features, rois, 7, 1 / 16, 1, True), features, upstream)
    (theirs,) = torch.autograd.grad(torchvision_roi_align(features, rois, 7, 1 / 16, 1, True), features, upstream)
    assert ours.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_no_rois_give_a_zero_gradient_of_the_maps_shape():
    features = torch.randn(1, 4, 5, 5, requires_grad=True)
    pooled = roi_align(features, torch.zeros((0, 5)), 7, 1 / 16, 1, True)
    (grad,) = torch.autograd.grad(pooled.sum(), features, allow_unused=True)
    assert grad is None or (grad.shape == features.shape and grad.abs().max() == 0)


def test_adaptive_grid_and_no_gradient_use_torchvisions_op():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(2, 4, 9, 9, generator=generator, requires_grad=True)
    rois = random_rois(20, 2, 9, 9, 16, generator).float()
    adaptive = roi_align(features, rois, 7, 1 / 16, 0, True)  # a grid per RoI: torchvision's op, its backward
    assert "torchvision_roi_align" in adaptive.grad_fn.name()
    assert "Separable" in roi_align(features, rois, 7, 1 / 16, 1, True).grad_fn.name()
    with torch.no_grad():
        assert torch.equal(roi_align(features, rois, 7, 1 / 16, 1, True),
                           torchvision_roi_align(features, rois, 7, 1 / 16, 1, True))
