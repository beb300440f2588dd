"""Generate the synthetic shapes dataset on disk and print its statistics.

A placeholder until the detector lands: the demo will then train and evaluate a thin detector here.
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_output", help="output folder (default ./demo_output)")
    parser.add_argument("--images", type=int, default=200, help="number of synthetic images (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def main(args) -> int:
    from detect.data.shapes import write_shapes
    from detect.data.spec import build_dataset
    from detect.data.stats import dataset_statistics, format_statistics

    root = write_shapes(Path(args.out) / "shapes", args.images, args.seed, "voc")
    print(f"wrote {args.images} synthetic images (VOC layout) to {root}\n")
    for split in ("trainval", "test"):
        print(format_statistics(dataset_statistics(build_dataset(f"voc:{root}:{split}"))) + "\n")
    print("detect demo: the detector is not built yet; this demo will train and evaluate it on this data.")
    return 0
