"""Shared pytest fixtures."""
from pathlib import Path

import pytest
import torch


@pytest.fixture
def torch_one_thread():
    """Run small forward passes on one thread: on the shared CPU cores extra threads mostly spin
    (measured ~10x more CPU time for 64x64 inputs at load 10). Opt in with
    `pytestmark = pytest.mark.usefixtures("torch_one_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"
BCCD_TRAIN = ["BloodImage_00001", "BloodImage_00003", "BloodImage_00005"]
BCCD_TEST = ["BloodImage_00007", "BloodImage_00011", "BloodImage_00015", "BloodImage_00016", "BloodImage_00019"]


@pytest.fixture(scope="session")
def bccd_checkpoint(tmp_path_factory):
    """A thin VGG-11 Fast R-CNN trained for a few steps on 3 BCCD images (shared by the Predictor and export
    tests): (checkpoint path, config path, test image paths). Skips without ../shared/datasets/BCCD."""
    from detect.cli import main as cli
    from detector_setup import tiny_config

    if not BCCD.is_dir():
        pytest.skip("../shared/datasets/BCCD not present")
    tmp = tmp_path_factory.mktemp("bccd_tiny")
    (tmp / "train.txt").write_text("\n".join(BCCD_TRAIN) + "\n")
    (tmp / "test.txt").write_text("\n".join(BCCD_TEST) + "\n")
    spec = f"voc-dirs:{BCCD / 'Annotations'}:{BCCD / 'JPEGImages'}"
    config = tiny_config(tmp, tmp / "cache", "fast",
                         data={"train": [f"{spec}:{tmp / 'train.txt'}"], "test": f"{spec}:{tmp / 'test.txt'}"},
                         proposals={"params": {"strategy": "single", "max_side": 160, "scale_k": True},
                                    "max_per_image": 100},
                         model={"train_scales": [96], "test_scale": 96, "max_size": 128},
                         train={"steps": 3})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(["train", "--config", str(config)]) == 0
    finally:
        torch.set_num_threads(threads)
    images = [BCCD / "JPEGImages" / f"{name}.jpg" for name in BCCD_TEST]
    return tmp / "run" / "last.pth", config, images
