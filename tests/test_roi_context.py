"""model.roi_context: fast mode pools each RoI over its box grown about the centre (the head sees the surround)."""
import pytest
import torch

import backbones
from detect.models.detector import ModelConfig, build_detector
from detect.models.region_features import PooledRegions, grown

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def regions(context: float) -> PooledRegions:
    parts = backbones.build_backbone("vgg11", width=0.0625).eval().detection_parts()
    return PooledRegions(parts.trunk, parts.head, parts.num_features, context=context)


def test_context_pools_the_grown_box():
    torch.manual_seed(0)
    features = torch.randn(1, 32, 12, 16)
    boxes = torch.tensor([[40.0, 30.0, 120.0, 90.0], [0.0, 0.0, 48.0, 64.0]])
    rois = torch.cat([torch.zeros(2, 1), boxes], dim=1)
    with torch.no_grad():
        wide = regions(1.5)._pool_op(features, rois)
        plain_of_grown = regions(1.0)._pool_op(features, torch.cat([torch.zeros(2, 1), grown(boxes, 1.5)], dim=1))
        plain = regions(1.0)._pool_op(features, rois)
    torch.testing.assert_close(wide, plain_of_grown, rtol=0, atol=0)
    assert not torch.allclose(wide, plain)
    torch.testing.assert_close(grown(boxes, 1.5)[0], torch.tensor([20.0, 15.0, 140.0, 105.0]))


@pytest.mark.parametrize("context", [0.9, 0.0, float("inf")])
def test_context_below_one_is_refused(context):
    with pytest.raises(ValueError, match="RoI context must be a finite factor >= 1"):
        regions(context)


def test_config_reaches_the_pooling():
    cfg = ModelConfig(backbone="vgg11", width=0.0625, mode="fast", roi_context=1.25)
    assert build_detector(cfg, num_classes=2).regions.context == 1.25


def test_config_refuses_a_shrinking_context():
    with pytest.raises(ValueError, match="roi_context must be a finite factor >= 1"):
        ModelConfig(roi_context=0.5).validate()
