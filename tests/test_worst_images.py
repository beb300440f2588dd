"""`detect test`'s gallery of worst images: the images with the most errors (confusion matrix counts,
per image), drawn with detections and ground truth, ranked in worst_images.json."""
import json

import numpy as np

from detect.cli import main as cli
from detect.data.images import read_image_rgb


def test_detect_test_draws_the_worst_images(bccd_checkpoint, tmp_path, capsys):
    checkpoint, config, _ = bccd_checkpoint
    out = tmp_path / "test"
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out),
                "--metrics", "voc07", "--confusion-threshold", "0.2", "--worst-images", "3"]) == 0
    assert "worst images: 3 drawn" in capsys.readouterr().out
    listing = json.loads((out / "worst_images" / "worst_images.json").read_text())
    images = listing["images"]
    assert [i["rank"] for i in images] == [1, 2, 3] and listing["score_threshold"] == 0.2
    errors = [i["errors"] for i in images]
    assert errors == sorted(errors, reverse=True) and errors[-1] > 0
    for item in images:
        assert item["errors"] == item["confused"] + item["mislocalised"] + item["background"] + item["missed"]
        drawn = read_image_rgb(out / "worst_images" / item["file"])
        assert drawn.shape == (480, 640, 3) and item["file"].startswith(f"{item['rank']:02d}_")
        assert (drawn == 255).all(axis=2).sum() > 100  # the white ground-truth boxes are there
    # with room for every image, the per-image counts add up to the confusion matrix's errors
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(out),
                "--metrics", "voc07", "--confusion-threshold", "0.2", "--worst-images", "10"]) == 0
    every = json.loads((out / "worst_images" / "worst_images.json").read_text())["images"]
    matrix = np.array(json.loads((out / "confusion_matrix.json").read_text())["matrix"])
    assert sum(i["errors"] for i in every) == matrix.sum() - np.trace(matrix[:3, :3]) > sum(errors) - 1
    assert cli(["test", "--config", str(config), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "t2"),
                "--metrics", "voc07", "--worst-images", "0"]) == 0
    assert not (tmp_path / "t2" / "worst_images").exists()
