"""Benchmark: our Selective Search against the `selectivesearch` package, single thread, same images.

Targets (issue 5): our full `fast` mode (8 strategies) under 1.5 s per 640x480 BCCD image, and our
single strategy at least 10x faster than the package with a comparable strategy (same k, sigma and
minimum segment size: the package segments RGB and uses HSV colour histograms; ours is the paper's
best single strategy, HSV, C+T+S+F) at equal or higher recall. Reports wall and CPU seconds per
image (the CPU time is the fairer figure on a shared machine) and recall/MABO on the same images.

Usage: python tools/bench_selective_search.py [--data voc:ROOT:test] [--images 8] [--package-images 4] [--k 100]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single thread, set before numpy loads its BLAS

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detect.data.dataset import DetectionDataset  # noqa: E402
from detect.data.spec import build_dataset  # noqa: E402
from detect.evaluation.proposal_recall import proposal_recall  # noqa: E402
from detect.proposals import build_proposer  # noqa: E402

DEFAULT_DATA = f"voc:{Path(__file__).resolve().parents[2] / 'shared/datasets/BCCD'}:test"


def run(proposer, images: list[np.ndarray]) -> tuple[list[dict], float, float]:
    """Proposals for each image, with mean wall and CPU seconds per image."""
    out, wall, cpu = [], 0.0, 0.0
    for image in images:
        w0, c0 = time.perf_counter(), time.process_time()
        boxes, scores = proposer.propose(image)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        out.append({"boxes": boxes, "scores": scores, "seconds": time.perf_counter() - w0})
    return out, wall / len(images), cpu / len(images)


def summary(name: str, dataset, results: list[dict], wall: float, cpu: float) -> dict:
    table = proposal_recall(dataset, lambda i: results[i], top_n=(2000, None))
    print(f"{name:<34} wall {wall:7.3f} s/img  cpu {cpu:7.3f} s/img  boxes/img {table['boxes_per_image']:7.1f}  "
          f"recall@0.5 {table['recall']['0.5']['all']:.3f} (<=2000: {table['recall']['0.5']['2000']:.3f})  "
          f"recall@0.7 {table['recall']['0.7']['all']:.3f}  MABO {table['mabo']['all']:.3f}")
    return {"wall": wall, "cpu": cpu, "recall": table["recall"]["0.5"]["all"], "mabo": table["mabo"]["all"]}


def segmentation_cpu(images: list[np.ndarray], spaces: list[str], k: float) -> float:
    """CPU seconds per image of skimage's Felzenszwalb alone (the part no grouping code can speed up)."""
    from skimage.segmentation import felzenszwalb
    from skimage.util import img_as_float

    from detect.proposals.selective_search import convert_colour_space

    start = time.process_time()
    for image in images:
        for space in spaces:
            source = img_as_float(image) if space == "package" else convert_colour_space(image, space)
            felzenszwalb(source, scale=k, sigma=0.8, min_size=int(k), channel_axis=-1)
    return (time.process_time() - start) / len(images)


def subset(dataset, count: int) -> DetectionDataset:
    return DetectionDataset(dataset.records[:count], dataset.classes, name=f"{dataset.name}[:{count}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=8, help="images for our fast mode")
    parser.add_argument("--package-images", type=int, default=4, help="images for the single-strategy comparison")
    parser.add_argument("--k", type=int, default=100, help="Felzenszwalb k (= min segment size) of the comparison")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)  # the package's LBP-on-floats warning

    dataset = build_dataset(args.data)
    fast_set, single_set = subset(dataset, args.images), subset(dataset, args.package_images)
    images = [fast_set.load_image(i) for i in range(len(fast_set))]
    print(f"{args.data}: {images[0].shape[1]}x{images[0].shape[0]} images, single thread")
    build_proposer("selective_search", strategy="single").propose(images[0])  # warm-up (imports, caches)

    fast = summary(f"ours fast (8 strategies), {len(images)} img", fast_set,
                   *run(build_proposer("selective_search", strategy="fast"), images))
    few = images[: len(single_set)]
    ours = summary(f"ours single HSV k={args.k} CTSF, {len(few)} img", single_set,
                   *run(build_proposer("selective_search", strategy="single", ks=[args.k]), few))
    package = summary(f"selectivesearch k={args.k}, {len(few)} img", single_set,
                      *run(build_proposer("selectivesearch", scale=args.k, min_size=args.k), few))
    seg_ours = segmentation_cpu(few, ["HSV"], args.k)
    seg_package = segmentation_cpu(few, ["package"], args.k)
    print(f"of which skimage felzenszwalb (CPU s/img): ours {seg_ours:.3f}, package {seg_package:.3f}; "
          f"the rest (features + grouping): ours {ours['cpu'] - seg_ours:.3f}, package {package['cpu'] - seg_package:.3f} "
          f"-> {(package['cpu'] - seg_package) / max(ours['cpu'] - seg_ours, 1e-9):.1f}x")
    print(f"fast mode: {fast['wall']:.3f} s/img wall, {fast['cpu']:.3f} s/img CPU; "
          f"target 1.5 s -> ratio target/ours {1.5 / fast['wall']:.2f} (wall), {1.5 / fast['cpu']:.2f} (CPU)")
    print(f"single strategy speed-up over the package: {package['wall'] / ours['wall']:.1f}x wall, "
          f"{package['cpu'] / ours['cpu']:.1f}x CPU (target >= 10x); recall@0.5 ours {ours['recall']:.3f} vs "
          f"package {package['recall']:.3f}, MABO ours {ours['mabo']:.3f} vs package {package['mabo']:.3f}")


if __name__ == "__main__":
    main()
