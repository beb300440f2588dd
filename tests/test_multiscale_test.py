"""Multi-scale test (test.scales): each RoI is scored at the pyramid scale where its scaled area is
closest to scale_roi_size², with that scale's own features; one scale equals single-scale testing."""
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from detect.config import load_config
from detect.engine.detection_config import DetectionConfig
from detect.errors import ConfigError
from detect.models.image_pyramid import assign_levels, pyramid_region_features, pyramid_transforms

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_assign_levels_picks_the_area_closest_to_224_squared():
    boxes = torch.tensor([[0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 300, 150]], dtype=torch.float)
    factors = torch.tensor([0.25, 1.0, 4.0]).repeat(4, 1)  # levels at half, same and double the image's size
    assert assign_levels(boxes, factors, 224).tolist() == [2, 1, 0, 1]


def _setup(bccd_checkpoint):
    from detect import Predictor

    checkpoint, _, images = bccd_checkpoint
    predictor = Predictor(checkpoint, device="cpu")
    image = np.asarray(Image.open(images[0]).convert("RGB"))
    proposals = predictor.proposals_of(image)
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255.0)
    return predictor, tensor, proposals


def test_each_roi_gets_its_scales_features(bccd_checkpoint):
    predictor, image, proposals = _setup(bccd_checkpoint)
    model = predictor.model
    scales, max_size = [64, 128], 200
    trunk_calls = []
    model.regions.trunk.register_forward_hook(lambda *_: trunk_calls.append(1))
    with torch.no_grad():
        alone = [pyramid_region_features(model.regions, pyramid_transforms(model.transform, [s], max_size), [image],
                                         [proposals], 224) for s in scales]
        areas = (proposals[:, 2] - proposals[:, 0]) * (proposals[:, 3] - proposals[:, 1])
        middle = float(areas.median().sqrt()) * 128 / 480  # about half the RoIs each way
        mixed = pyramid_region_features(model.regions, pyramid_transforms(model.transform, scales, max_size), [image],
                                        [proposals], round(middle))
    assert len(trunk_calls) == 4  # once per scale alone, then once per scale in the pyramid
    factors = torch.tensor([(s / 480) ** 2 for s in scales]).repeat(len(proposals), 1)
    level = assign_levels(proposals, factors, round(middle))
    assert 0 < int(level.sum()) < len(level)  # both scales used
    torch.testing.assert_close(mixed, torch.where(level[:, None] == 0, alone[0], alone[1]))
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)


def test_one_scale_pyramid_is_single_scale_and_skips_unused_scales(bccd_checkpoint):
    predictor, image, proposals = _setup(bccd_checkpoint)
    model = predictor.model
    with torch.no_grad():
        expected = model([image], [proposals])[0]
    trunk_calls = []
    model.regions.trunk.register_forward_hook(lambda *_: trunk_calls.append(1))
    # every RoI is closest to a 1 px target at the smallest scale, 96 = model.test_scale: 128 is never computed
    model.inference = replace(model.inference, scales=[96, 128], scale_roi_size=1, max_size=128)
    with torch.no_grad():
        found = model([image], [proposals])[0]
    assert len(trunk_calls) == 1
    np.testing.assert_array_equal(found["labels"].numpy(), expected["labels"].numpy())
    np.testing.assert_allclose(found["boxes"].numpy(), expected["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(found["scores"].numpy(), expected["scores"].numpy(), atol=1e-5)


def test_scales_are_validated():
    with pytest.raises(ConfigError, match="scales"):
        load_config(DetectionConfig, None, ["test.scales=[8, 600]"])
    with pytest.raises(ConfigError, match="max_size"):
        load_config(DetectionConfig, None, ["test.scales=[600, 3000]"])
    with pytest.raises(ConfigError, match="mode=fast"):
        load_config(DetectionConfig, None, ["test.scales=[480, 600]", "model.mode=rcnn"])
