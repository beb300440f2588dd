"""data.color_jitter: photometric training augmentation drawn from the sample's seed."""
import pytest
import torch

from detect.config import ConfigError, load_config
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import jitter_colours


def image() -> torch.Tensor:
    return torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))


def test_same_seed_same_colours_other_seed_other_colours():
    a, b, c = jitter_colours(image(), 0.4, 7), jitter_colours(image(), 0.4, 7), jitter_colours(image(), 0.4, 8)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, image())


def test_stays_an_image_in_range():
    out = jitter_colours(image(), 0.9, 3)
    assert out.shape == image().shape and out.min() >= 0.0 and out.max() <= 1.0


def test_zero_strength_leaves_the_image_alone():
    assert torch.allclose(jitter_colours(image(), 0.0, 5), image(), atol=1e-6)


def test_out_of_range_strength_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data: {color_jitter: 1.5}\n")
    with pytest.raises(ConfigError, match="color_jitter"):
        load_config(DetectionConfig, str(path), [])
