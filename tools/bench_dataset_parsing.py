"""Benchmark: parse the 364 BCCD VOC XMLs (target: well under 1 s) and generate synthetic shapes.

    python tools/bench_dataset_parsing.py [--bccd ../shared/datasets/BCCD] [--repeats 5] [--shapes 500]

Prints the best of `repeats` wall times; run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from detect.data.shapes import ShapesDataset
from detect.data.voc import read_voc


def best_time(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bccd", default=str(Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", type=int, default=500)
    args = parser.parse_args()

    if Path(args.bccd).is_dir():
        seconds, dataset = best_time(lambda: read_voc(args.bccd), args.repeats)
        print(f"BCCD VOC parse: {len(dataset)} XMLs in {seconds:.3f} s (target < 1 s: {1.0 / seconds:.1f}x under)")
    else:
        print(f"BCCD not found at {args.bccd}; skipping the VOC parse benchmark")
    seconds, shapes = best_time(lambda: ShapesDataset(args.shapes, seed=0), args.repeats)
    print(f"shapes layout: {len(shapes)} images in {seconds:.3f} s")
    seconds, _ = best_time(lambda: [shapes.load_image(i) for i in range(len(shapes))], 1)
    print(f"shapes render: {len(shapes)} images of {shapes.image_size}px in {seconds:.3f} s")


if __name__ == "__main__":
    main()
