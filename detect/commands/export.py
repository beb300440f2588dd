"""Write a trained detector for serving: `detect export --checkpoint CKPT --format onnx|torchscript --out FILE`.

The file takes an image (float32 [3,H,W] RGB in [0,1], any size) and its proposals (float32 [R,4],
any count) and returns per-region scores [R,C+1] and per-class boxes [R,C,4] in the image's pixels.
Proposals (Selective Search runs on the CPU, outside the graph), the score threshold and per-class
NMS stay outside; FILE.json beside it records the class names and the checkpoint's thresholds.
"""
from __future__ import annotations

from detect.errors import UserError


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="detector checkpoint from `detect train`")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="output format")
    parser.add_argument("--out", required=True, help="output file (e.g. detector.onnx or detector.pt)")
    parser.add_argument("--svd-rank", metavar="RANK", type=svd_rank_value,
                        help="bake in the truncated SVD of the head's fc layers: one rank (e.g. 256) or a mapping "
                             "'{fc6: 1024, fc7: 256}' (default: the checkpoint config's test.svd_rank)")


def svd_rank_value(text: str):
    """An integer, or a YAML mapping layer -> rank."""
    import argparse

    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not (isinstance(value, (int, dict)) and not isinstance(value, bool)):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a rank such as 256 or a mapping such as '{{fc6: 1024, fc7: 256}}'")
    return value


def main(args) -> int:
    from pathlib import Path

    from detect.engine.export import export_detector
    from detect.utils.files import output_folder

    out = Path(args.out)
    if out.is_dir():
        suffix = "onnx" if args.format == "onnx" else "pt"
        raise UserError(f"--out {out}: is a folder; give a file name such as {out / ('detector.' + suffix)}")
    output_folder(out.parent if str(out.parent) else ".")
    written, meta = export_detector(args.checkpoint, args.format, out, args.svd_rank)
    print(f"wrote {args.format} detector to {written} (image + proposals in, scores + boxes out; "
          f"threshold and per-class NMS outside, settings and classes in {meta})")
    return 0
