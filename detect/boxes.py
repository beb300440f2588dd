"""Box utilities in the project's convention, thin on top of torchvision.ops.

Ours: float [N,4] x1,y1,x2,y2, absolute pixels, 0-based continuous. Formats other parts meet:
`xywh` (COCO bbox), `cxcywh` (box regression), `voc` (the 1-based inclusive pixel indices of VOC
XML and devkit result files; a VOC box (xmin,ymin,xmax,ymax) is ours (xmin-1, ymin-1, xmax, ymax)).
`convert_boxes` takes numpy arrays or tensors and returns the same type, because annotation and
result-file code works in numpy. For IoU, NMS, clipping and small-box removal use torchvision.ops.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_convert

BOX_FORMATS = ("xyxy", "xywh", "cxcywh", "voc")


def convert_boxes(boxes, in_fmt: str, out_fmt: str):
    """Convert [N,4] boxes between `xyxy` (ours), `xywh`, `cxcywh` and `voc`; numpy in, numpy out."""
    for fmt in (in_fmt, out_fmt):
        if fmt not in BOX_FORMATS:
            raise ValueError(f"unknown box format {fmt!r}; expected one of {', '.join(BOX_FORMATS)}")
    is_numpy = isinstance(boxes, np.ndarray)
    tensor = torch.as_tensor(boxes).reshape(-1, 4)
    if in_fmt == "voc":
        tensor, in_fmt = tensor - tensor.new_tensor([1, 1, 0, 0]), "xyxy"
    target = "xyxy" if out_fmt == "voc" else out_fmt
    tensor = box_convert(tensor, in_fmt, target) if in_fmt != target else tensor.clone()
    if out_fmt == "voc":
        tensor = tensor + tensor.new_tensor([1, 1, 0, 0])
    return tensor.numpy() if is_numpy else tensor
