"""Write a trained detector as an ONNX or TorchScript file that runs without this package.

Why: serving a detector should need only onnxruntime (or libtorch), not the training code. The file
holds `ExportableDetector` (detect/models/exportable.py): image and proposals in, per-region class
scores and per-class boxes out, with a dynamic image size and proposal count. Proposals stay an
input (Selective Search is a CPU pre-step, not a graph), and so do the score threshold and
per-class NMS (their output size depends on the data): `FILE.json` beside the export records the
class names and the checkpoint's threshold, NMS IoU and detections per image to apply them with.
"""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch

from detect.engine.detection_inference import load_detector
from detect.errors import UserError
from detect.models.exportable import ExportableDetector
from detect.utils.files import atomic_write_bytes

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


def example_inputs(test_scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A non-square image and a handful of proposals: shapes to trace with (the sizes stay dynamic)."""
    generator = torch.Generator().manual_seed(0)
    height, width = test_scale + 37, test_scale * 3 // 2 + 11
    image = torch.rand(3, height, width, generator=generator)
    corners = torch.rand(7, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6])
    sizes = 8 + torch.rand(7, 2, generator=generator) * torch.tensor([width * 0.3, height * 0.3])
    return image, torch.cat([corners, corners + sizes], dim=1)


def export_detector(checkpoint: str | Path, fmt: str, out: str | Path,
                    svd_rank: int | dict[str, int] | None = None) -> tuple[Path, Path]:
    """Write the detector in `checkpoint` to `out` (atomically) and its metadata to `out`.json; with
    `svd_rank` (or the checkpoint config's test.svd_rank) the head's truncated SVD is baked in."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    model, cfg, classes = load_detector(checkpoint, device="cpu", svd_rank=svd_rank)
    wrapper = ExportableDetector(model).eval()
    inputs = example_inputs(cfg.model.test_scale)
    out = Path(out)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic, which stays dynamic by design
        if fmt == "onnx":
            torch.onnx.export(wrapper, inputs, buffer, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["image", "proposals"], output_names=["scores", "boxes"],
                              dynamic_axes={"image": {1: "height", 2: "width"}, "proposals": {0: "regions"},
                                            "scores": {0: "regions"}, "boxes": {0: "regions"}})
        else:
            traced = torch.jit.trace(wrapper, inputs, check_trace=False)
            torch.jit.save(traced, buffer)
    atomic_write_bytes(out, lambda fh: fh.write(buffer.getvalue()))
    meta = out.with_name(out.name + ".json")
    text = json.dumps(metadata(cfg, classes, fmt, checkpoint), indent=1)
    atomic_write_bytes(meta, lambda fh: fh.write(text.encode()))
    return out, meta


def metadata(cfg, classes: list[str], fmt: str, checkpoint: str | Path) -> dict:
    return {
        "format": fmt, "checkpoint": str(checkpoint), "classes": classes,
        "inputs": {"image": "float32 [3,H,W] RGB in [0,1]", "proposals": "float32 [R,4] x1,y1,x2,y2 image pixels"},
        "outputs": {"scores": "float32 [R,C+1] soft-max, column 0 background",
                    "boxes": "float32 [R,C,4] per foreground class, image pixels"},
        # model.rpn_proposals: the graph's RPN adds up to N regions after the given R (rows R.. of the outputs)
        "rpn_proposals": cfg.model.rpn_proposals,
        "postprocess": {"score_threshold": cfg.test.score_threshold, "nms_iou": cfg.test.nms_iou,
                        "max_detections": cfg.test.max_detections, "nms": "per class, outside the graph"},
        "svd_rank": cfg.test.svd_rank,
        "proposals": {"method": cfg.proposals.method, "params": cfg.proposals.params,
                      "max_per_image": cfg.proposals.max_per_image},
    }
