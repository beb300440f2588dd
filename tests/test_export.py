"""`detect export`: the ONNX file (onnxruntime) and the TorchScript module give PyTorch's detections on
5 BCCD images of different sizes (boxes within 1e-3 px, same labels); README's onnxruntime example runs
without this package."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detect.cli import main as cli
from detect.errors import UserError
from detect.models.postprocess import detect_objects

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def rpn_checkpoint(bccd_checkpoint, tmp_path_factory):
    """bccd_checkpoint's config trained with the trunk RPN's proposals (model.rpn_proposals) joining the given ones."""
    _, config, images = bccd_checkpoint
    out = tmp_path_factory.mktemp("rpn_run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(["train", "--config", str(config), f"train.out_dir={out}", "model.auxiliary_rpn_weight=1.0",
                    "model.rpn_proposals=50"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out / "last.pth", config, images


def export_both(checkpoint, out: Path) -> None:
    assert cli(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out / "d.onnx")]) == 0
    assert cli(["export", "--checkpoint", str(checkpoint), "--format", "torchscript", "--out", str(out / "d.pt")]) == 0


@pytest.fixture(scope="module", params=["given proposals", "and the RPN's"])
def exported(request, tmp_path_factory):
    checkpoint, _, images = request.getfixturevalue("bccd_checkpoint" if request.param == "given proposals"
                                                    else "rpn_checkpoint")
    out = tmp_path_factory.mktemp("export")
    export_both(checkpoint, out)
    return out, checkpoint, images


def test_onnx_and_torchscript_give_pytorchs_detections(exported):
    from detect import Predictor

    out, checkpoint, images = exported
    predictor = Predictor(checkpoint, device="cpu")
    session = ort.InferenceSession(str(out / "d.onnx"), providers=["CPUExecutionProvider"])
    scripted = torch.jit.load(str(out / "d.pt"))
    meta = json.loads((out / "d.onnx.json").read_text())
    assert meta["classes"] == predictor.classes and meta["postprocess"]["nms_iou"] == predictor.cfg.test.nms_iou
    rpn = meta["rpn_proposals"]
    assert rpn == predictor.cfg.model.rpn_proposals
    worst, sizes, counts = {"onnx": 0.0, "torchscript": 0.0}, set(), set()
    for k, path in enumerate(images):  # 640x480 and four crops, 100 to 48 proposals: both sizes are dynamic
        image = np.array(np.asarray(Image.open(path).convert("RGB"))[: 480 - 50 * k, : 640 - 77 * k])
        proposals = predictor.proposals_of(image)[: 100 - 13 * k]
        sizes.add(image.shape)
        counts.add(len(proposals))
        expected = predictor(image, proposals=proposals.numpy())
        assert len(expected["boxes"]) > 0
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
        with torch.no_grad():
            outputs = {"onnx": [torch.from_numpy(o) for o in session.run(None, {"image": tensor.numpy(),
                                                                                "proposals": proposals.numpy()})],
                       "torchscript": list(scripted(tensor, proposals))}
        for fmt, (scores, boxes) in outputs.items():
            regions = len(scores)  # the given proposals, then up to model.rpn_proposals of the RPN's
            assert len(proposals) + (rpn > 0) <= regions <= len(proposals) + rpn
            assert scores.shape == (regions, len(predictor.classes) + 1)
            assert boxes.shape == (regions, len(predictor.classes), 4)
            found = detect_objects(scores, boxes, tuple(image.shape[:2]), predictor.model.inference)
            np.testing.assert_array_equal(found["labels"].numpy(), expected["labels"], err_msg=f"{fmt} {path.name}")
            np.testing.assert_allclose(found["scores"].numpy(), expected["scores"], atol=1e-5)
            worst[fmt] = max(worst[fmt], float(np.abs(found["boxes"].numpy() - expected["boxes"]).max()))
    print(f"max box difference against PyTorch: onnx {worst['onnx']:.2e} px, torchscript {worst['torchscript']:.2e} px")
    assert len(sizes) == 5 and len(counts) > 1
    assert max(worst.values()) <= 1e-3, worst


def test_readme_onnx_example_runs_without_this_package(exported, tmp_path):
    from detect import Predictor

    out, checkpoint, images = exported
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Export: ONNX and TorchScript\n", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(code) == 1
    for name in ("d.onnx", "d.onnx.json"):
        (tmp_path / name.replace("d.", "detector.")).write_bytes((out / name).read_bytes())
    predictor = Predictor(checkpoint, device="cpu")
    image = np.asarray(Image.open(images[0]).convert("RGB"))
    np.save(tmp_path / "proposals.npy", predictor.proposals_of(image).numpy())
    Image.fromarray(image).save(tmp_path / "image.jpg", quality=100)
    decoded = np.asarray(Image.open(tmp_path / "image.jpg").convert("RGB"))
    # `detect` cannot be imported in the example's interpreter: it needs numpy, Pillow and onnxruntime only
    script = tmp_path / "example.py"
    script.write_text("import sys\nsys.modules['detect'] = None\nsys.modules['torch'] = None\n" + code[0])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed = [line.split() for line in done.stdout.splitlines()]
    expected = predictor(decoded, proposals=np.load(tmp_path / "proposals.npy"))
    assert len(printed) == len(expected["boxes"]) > 0
    top = printed[0]
    assert top[0] == expected["class_names"][0] and float(top[1]) == pytest.approx(expected["scores"][0], abs=1e-4)
    assert [float(v) for v in top[2:]] == pytest.approx(expected["boxes"][0].tolist(), abs=0.01)


def test_export_errors_name_the_file(tmp_path, bccd_checkpoint, capsys):
    from detect.engine.export import export_detector

    checkpoint, _, _ = bccd_checkpoint
    bad = tmp_path / "weights.pth"
    torch.save({"model": {}}, bad)
    assert cli(["export", "--checkpoint", str(bad), "--format", "onnx", "--out", str(tmp_path / "d.onnx")]) == 2
    assert "weights.pth: not a detector checkpoint" in capsys.readouterr().err
    assert cli(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(UserError, match="--format 'tflite'"):
        export_detector(checkpoint, "tflite", tmp_path / "d.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.pth"], "nothing half-written"
