"""detect.Predictor on a thin detector trained on 3 BCCD images: README's example runs, every input kind
gives the same detections, `detect infer` gives exactly the Predictor's, bad input is a clear error."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detect.cli import main as cli
from detect.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def readme_python_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "README's Python section holds one python example"
    return blocks[0]


def test_readme_example_runs(bccd_checkpoint, tmp_path):
    checkpoint, _, _ = bccd_checkpoint
    code = readme_python_example()
    assert "runs/mine/best.pth" in code
    script = tmp_path / "example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + code.replace("runs/mine/best.pth", str(checkpoint)))
    # a fresh interpreter in the repository root, as a user would run it: `from detect import Predictor` works
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "detections in each:" in done.stdout


def test_import_detect_stays_light():
    done = subprocess.run([sys.executable, "-c", "import sys, detect; print('torch' in sys.modules); "
                           "from detect import Predictor; print(Predictor.__module__)"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "detect.engine.predictor"], done.stderr
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        import detect

        detect.Nothing  # noqa: B018


def test_every_input_kind_gives_the_same_detections(bccd_checkpoint):
    from detect import Predictor

    checkpoint, _, images = bccd_checkpoint
    predictor = Predictor(checkpoint, device="cpu")
    from_path = predictor(str(images[0]))
    assert len(from_path["boxes"]) > 0 and from_path["boxes"].shape[1] == 4
    assert from_path["class_names"] == [predictor.classes[i - 1] for i in from_path["labels"]]
    assert set(from_path["class_names"]) <= {"Platelets", "RBC", "WBC"}
    pil = Image.open(images[0])
    array = np.asarray(pil.convert("RGB"))
    as_list = predictor([images[0], array, pil])
    assert isinstance(as_list, list) and len(as_list) == 3
    for found in as_list:
        for key in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(found[key], from_path[key])
    # boxes in the image's own pixels (640x480), not the network's 96 px scale
    assert from_path["boxes"][:, 2].max() > 200 and from_path["boxes"][:, 2].max() <= 640
    # the caller's proposals replace the method: the method's own boxes give the same answer, others another
    proposals = predictor.proposals_of(array).numpy()
    same = predictor(array, proposals=proposals)
    np.testing.assert_array_equal(same["boxes"], from_path["boxes"])
    one = predictor(array, proposals=np.array([[10.0, 10.0, 120.0, 100.0]]))
    assert len(one["boxes"]) <= len(predictor.classes)  # one region: at most one box per class


def test_batches_give_one_result_per_image_in_order(bccd_checkpoint):
    from detect import Predictor

    checkpoint, _, images = bccd_checkpoint
    one_by_one = Predictor(checkpoint, device="cpu")(images[:3])
    batched = Predictor(checkpoint, device="cpu", batch_size=2)(images[:3])  # a batch of 2, then 1
    assert len(batched) == 3
    for alone, together in zip(one_by_one, batched):
        # padding to a common size moves features near the border a little; the detections stay those of that image
        assert abs(len(alone["boxes"]) - len(together["boxes"])) <= max(3, len(alone["boxes"]) // 5)
        assert together["boxes"][:, 2].max() <= 640 and together["boxes"][:, 3].max() <= 480
    with pytest.raises(UserError, match="batch_size must be at least 1"):
        Predictor(checkpoint, device="cpu", batch_size=0)


def test_infer_gives_exactly_the_predictors_detections(bccd_checkpoint, tmp_path):
    from detect import Predictor

    checkpoint, _, images = bccd_checkpoint
    assert cli(["infer", "--checkpoint", str(checkpoint), *map(str, images[:3]), "--out", str(tmp_path / "out"),
                "--device", "cpu"]) == 0
    written = json.loads((tmp_path / "out" / "detections.json").read_text())
    predictor = Predictor(checkpoint, device="cpu")
    expected = []
    for path, found in zip(images[:3], predictor(images[:3])):
        for (x1, y1, x2, y2), score, name in zip(found["boxes"].astype(np.float64).tolist(),
                                                 found["scores"].tolist(), found["class_names"]):
            expected.append({"image_id": path.stem, "category_id": name, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "score": score, "file_name": str(path)})
    assert len(written) == len(expected) > 0
    for got, want in zip(written, expected):
        assert {k: got[k] for k in ("image_id", "category_id", "score", "file_name")} == \
            {k: want[k] for k in ("image_id", "category_id", "score", "file_name")}
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-9)


def test_bad_inputs_are_clear_errors(bccd_checkpoint, tmp_path):
    from detect import Predictor

    checkpoint, _, images = bccd_checkpoint
    predictor = Predictor(checkpoint, device="cpu")
    with pytest.raises(UserError, match="cannot read an image from a int"):
        predictor(3)
    with pytest.raises(UserError, match="missing.jpg: image file not found"):
        predictor(str(tmp_path / "missing.jpg"))
    with pytest.raises(UserError, match=r"proposals of image 0: expected an \[R,4\] array"):
        predictor(str(images[0]), proposals=np.zeros((3, 5)))
    with pytest.raises(UserError, match="2 arrays for 1 images"):
        predictor([str(images[0])], proposals=[np.zeros((1, 4)), np.zeros((1, 4))])
    not_a_checkpoint = tmp_path / "weights.pth"
    import torch

    torch.save({"model": {}}, not_a_checkpoint)
    with pytest.raises(UserError, match="weights.pth: not a detector checkpoint"):
        Predictor(not_a_checkpoint, device="cpu")
