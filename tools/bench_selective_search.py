"""Benchmark: our Selective Search against the `selectivesearch` package, single thread, same images.

Targets (issue 5): our full `fast` mode (8 strategies) under 1.5 s per 640x480 BCCD image, and our
single strategy at least 10x faster than the package with a comparable strategy at equal or higher
recall. The package segments RGB with the same k, sigma and minimum segment size and uses HSV colour
histograms; ours is the paper's best single strategy (HSV, C+T+S+F). Our single strategy is
measured twice, both printed with recall and MABO on the same images as the package:
  - at full resolution (images up to the default max_side, 1000 px), as the paper runs it;
  - segmented at a reduced longer side (--reduced-sides, default 256 and 320) with k scaled to the
    pixel count (`max_side=S, scale_k=True`: k=100 becomes k=16 at 256x192, k=25 at 320x240), boxes
    mapped back. Recall is printed for all boxes and for the top 100 (about the package's count).
Timing is CPU seconds (the fair figure on a shared machine; wall is printed too), with the methods
interleaved image by image so that all of them see the same load; --repeats keeps the best of N
runs per image and method, the same for every method.

With --opencv PYTHON (a Python with opencv-contrib-python-headless, e.g. a separate venv: that
package replaces the cv2 this project uses) the script instead prints ours (`fast`, default settings)
against OpenCV ximgproc's switchToSelectiveSearchFast (base_k 150, inc_k 150, sigma 0.8, its own
defaults), side by side on the same --images images (issue: ours <= 0.8x OpenCV's CPU time at equal or
higher recall). What is fair, and done:
  - both see the same pixels: the image downscaled to our default max_side (1000 px; BCCD's 640x480
    and most raccoon images are left at full size), OpenCV's boxes mapped back like ours;
  - both single thread: OpenCV runs in a worker process with cv2.setNumThreads(1) and
    OMP_NUM_THREADS=1, started once (its imports are not timed); each image goes to ours, then to
    the worker, image by image, so both see the same load. CPU time is time.process_time() around
    the call in each process (OpenCV's includes only its segmentation + process(), not the image
    transfer);
  - OpenCV's boxes (x, y, w, h in its ranking order) get ours' post-processing: duplicates and boxes
    under 20 px a side dropped (outside the timed call; it helps OpenCV's recall at equal count);
  - recall@0.5 / @0.7 and MABO are computed with detect.evaluation.proposal_recall for each method's
    own full list and "at equal boxes": per image both lists truncated, in each method's own ranking
    order, to the shorter one's count.

Usage: python tools/bench_selective_search.py [--data voc:ROOT:test] [--images 8] [--compare-images 12]
       [--k 100] [--reduced-sides 256 320] [--repeats 1]
       python tools/bench_selective_search.py --opencv /path/to/ocv_venv/bin/python [--data ...] [--images 24]
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # single thread, set before numpy loads its BLAS

import argparse  # noqa: E402
import struct  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from skimage.segmentation import felzenszwalb  # noqa: E402
from skimage.util import img_as_float  # noqa: E402

from detect.data.dataset import DetectionDataset  # noqa: E402
from detect.data.spec import build_dataset  # noqa: E402
from detect.evaluation.proposal_recall import proposal_recall  # noqa: E402
from detect.proposals import build_proposer  # noqa: E402
from detect.proposals.boxes import (dedupe_boxes_keep_first, downscale_to_max_side, filter_small_boxes,  # noqa: E402
                                    map_back)
from detect.proposals.graph_segmentation import EdgeGraph  # noqa: E402
from detect.proposals.selective_search import STRATEGIES, convert_colour_space  # noqa: E402

DEFAULT_DATA = f"voc:{Path(__file__).resolve().parents[2] / 'shared/datasets/BCCD'}:test"
FAST_TARGET_S = 1.5
SPEEDUP_TARGET = 10.0
OPENCV_TARGET = 0.8  # ours / OpenCV switchToSelectiveSearchFast, CPU seconds per image


def run_interleaved(proposers: dict, images: list[np.ndarray], repeats: int) -> dict:
    """Per method: proposals per image and mean wall / CPU seconds per image (best of `repeats`)."""
    out = {name: {"results": [], "wall": 0.0, "cpu": 0.0} for name in proposers}
    for image in images:
        for name, proposer in proposers.items():
            best_wall = best_cpu = float("inf")
            for _ in range(repeats):
                w0, c0 = time.perf_counter(), time.process_time()
                boxes, scores = proposer.propose(image)
                best_cpu = min(best_cpu, time.process_time() - c0)
                best_wall = min(best_wall, time.perf_counter() - w0)
            out[name]["results"].append({"boxes": boxes, "scores": scores, "seconds": best_wall})
            out[name]["wall"] += best_wall / len(images)
            out[name]["cpu"] += best_cpu / len(images)
    return out


def summary(name: str, dataset, run: dict) -> dict:
    table = proposal_recall(dataset, lambda i: run["results"][i], top_n=(100, 2000, None))
    recall = table["recall"]
    print(f"{name:<58} wall {run['wall']:6.3f}  cpu {run['cpu']:6.3f} s/img  "
          f"boxes/img {table['boxes_per_image']:6.0f}  recall@0.5 {recall['0.5']['all']:.3f} "
          f"(top 100: {recall['0.5']['100']:.3f}, top 2000: {recall['0.5']['2000']:.3f})  "
          f"recall@0.7 {recall['0.7']['all']:.3f}  MABO {table['mabo']['all']:.3f}")
    return {"wall": run["wall"], "cpu": run["cpu"], "recall": recall["0.5"]["all"], "mabo": table["mabo"]["all"]}


class SegmentationOnly:
    """The Felzenszwalb segmentations a method makes, alone: the floor no grouping code can lower.

    Ours: our graph segmentation (detect/proposals/graph_segmentation.py, skimage's labels), one
    sorted edge graph per colour space shared by its k values, as SelectiveSearch runs it; the
    package: skimage's felzenszwalb on its RGB input. Timed like a proposer (interleaved with the real
    ones, so under the same load); no proposals.
    """

    def __init__(self, calls: list[tuple[str, float]], side: int | None = None) -> None:
        self.calls, self.side = calls, side  # (colour space, or "package" for its RGB input; k)

    def propose(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        image = downscale_to_max_side(image, self.side)
        graphs = {}
        for source, k in self.calls:
            if source == "package":
                felzenszwalb(img_as_float(image), scale=k, sigma=0.8, min_size=int(k), channel_axis=-1)
                continue
            if source not in graphs:
                graphs[source] = EdgeGraph.from_image(convert_colour_space(image, source), 0.8)
            graphs[source].segment(k, int(k))
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)


def subset(dataset, count: int) -> DetectionDataset:
    return DetectionDataset(dataset.records[:count], dataset.classes, name=f"{dataset.name}[:{count}]")


def verdict(ours: dict, package: dict) -> str:
    speedup = package["cpu"] / ours["cpu"]
    recall_ok = ours["recall"] >= package["recall"] and ours["mabo"] >= package["mabo"]
    met = "met" if speedup >= SPEEDUP_TARGET and recall_ok else "NOT met"
    return (f"{speedup:.1f}x CPU, {package['wall'] / ours['wall']:.1f}x wall (target >= {SPEEDUP_TARGET:.0f}x); "
            f"recall@0.5 {ours['recall']:.3f} vs {package['recall']:.3f}, MABO {ours['mabo']:.3f} vs "
            f"{package['mabo']:.3f} -> goal {met}")


OPENCV_WORKER = r"""
import os, struct, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import cv2
import numpy as np
cv2.setNumThreads(1)
ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
src, dst = sys.stdin.buffer, sys.stdout.buffer
dst.write(struct.pack("<q", len(cv2.__version__)) + cv2.__version__.encode()); dst.flush()
while True:
    head = src.read(16)
    if len(head) < 16:
        break
    h, w = struct.unpack("<qq", head)
    rgb = np.frombuffer(src.read(h * w * 3), np.uint8).reshape(h, w, 3)
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    c0, w0 = time.process_time(), time.perf_counter()
    ss.setBaseImage(bgr)
    ss.switchToSelectiveSearchFast()
    rects = np.asarray(ss.process(), np.int32).reshape(-1, 4)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    dst.write(struct.pack("<ddq", cpu, wall, len(rects)) + rects.tobytes()); dst.flush()
"""


class OpenCVWorker:
    """switchToSelectiveSearchFast in another Python (one with opencv-contrib), over pipes."""

    def __init__(self, python: str) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        self.proc = subprocess.Popen([python, "-c", OPENCV_WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=env)
        head = self.proc.stdout.read(8)
        if len(head) < 8:
            raise SystemExit(f"{python}: the OpenCV worker did not start (is opencv-contrib-python-headless installed?)")
        self.version = self.proc.stdout.read(struct.unpack("<q", head)[0]).decode()

    def propose(self, image: np.ndarray, min_box_size: float) -> tuple[np.ndarray, float, float]:
        """xyxy boxes in OpenCV's order (deduplicated, small ones dropped), CPU s and wall s of the call."""
        h, w = image.shape[:2]
        self.proc.stdin.write(struct.pack("<qq", h, w) + np.ascontiguousarray(image).tobytes())
        self.proc.stdin.flush()
        cpu, wall, n = struct.unpack("<ddq", self.proc.stdout.read(24))
        rects = np.frombuffer(self.proc.stdout.read(16 * n), np.int32).reshape(n, 4).astype(np.float64)
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        boxes = boxes[dedupe_boxes_keep_first(boxes)]
        return boxes[filter_small_boxes(boxes, min_box_size)], cpu, wall

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def compare_opencv(args) -> None:
    """Ours (`fast`) vs OpenCV's switchToSelectiveSearchFast, image by image, one table."""
    dataset = subset(build_dataset(args.data), args.images)
    images = [dataset.load_image(i) for i in range(len(dataset))]
    ours = build_proposer("selective_search", strategy="fast")
    worker = OpenCVWorker(args.opencv)
    print(f"{args.data}: {len(images)} images, single thread, ours `fast` ({ours.params()['ks']} x "
          f"{ours.color_spaces}) vs OpenCV {worker.version} switchToSelectiveSearchFast; both on the image at "
          f"max side {ours.max_side}; CPU s/img best of {args.repeats}")
    ours.propose(images[0])  # warm-up (imports, colour LUTs), as the worker's start-up is not timed either
    worker.propose(downscale_to_max_side(images[0], ours.max_side), ours.min_box_size)
    runs = {"ours": {"results": [], "cpu": 0.0, "wall": 0.0}, "opencv": {"results": [], "cpu": 0.0, "wall": 0.0}}
    for image in images:
        best = {"ours": [np.inf, np.inf], "opencv": [np.inf, np.inf]}
        for _ in range(args.repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            our_boxes, _ = ours.propose(image)
            best["ours"] = [min(best["ours"][0], time.process_time() - c0), min(best["ours"][1], time.perf_counter() - w0)]
            small = downscale_to_max_side(image, ours.max_side)
            cv_boxes, cpu, wall = worker.propose(small, ours.min_box_size)
            best["opencv"] = [min(best["opencv"][0], cpu), min(best["opencv"][1], wall)]
        cv_boxes = map_back(cv_boxes, small.shape[:2], image.shape[:2]).astype(np.float32)
        for name, boxes in (("ours", our_boxes), ("opencv", cv_boxes)):
            runs[name]["results"].append(boxes)
            runs[name]["cpu"] += best[name][0] / len(images)
            runs[name]["wall"] += best[name][1] / len(images)
    worker.close()

    def quality(name: str, equal: bool) -> dict:
        def one(i: int) -> dict:
            boxes = runs[name]["results"][i]
            if equal:
                boxes = boxes[: min(len(runs["ours"]["results"][i]), len(runs["opencv"]["results"][i]))]
            return {"boxes": boxes, "scores": np.zeros(len(boxes), np.float32)}
        return proposal_recall(dataset, one, top_n=(None,))

    print(f"{'method':<40} {'CPU s/img':>9} {'wall s/img':>10} {'boxes/img':>9} {'R@0.5':>6} {'R@0.7':>6} "
          f"{'MABO':>6}   | at equal boxes: {'boxes/img':>9} {'R@0.5':>6} {'R@0.7':>6} {'MABO':>6}")
    labels = {"ours": "ours fast (HSV+Lab, k 50/100, CTSF+TSF)", "opencv": "OpenCV ximgproc SelectiveSearchFast"}
    for name in ("ours", "opencv"):
        full, equal = quality(name, False), quality(name, True)
        print(f"{labels[name]:<40} {runs[name]['cpu']:9.3f} {runs[name]['wall']:10.3f} "
              f"{full['boxes_per_image']:9.0f} {full['recall']['0.5']['all']:6.3f} {full['recall']['0.7']['all']:6.3f} "
              f"{full['mabo']['all']:6.3f}   |                 {equal['boxes_per_image']:9.0f} "
              f"{equal['recall']['0.5']['all']:6.3f} {equal['recall']['0.7']['all']:6.3f} {equal['mabo']['all']:6.3f}")
    ratio = runs["ours"]["cpu"] / runs["opencv"]["cpu"]
    print(f"ours / OpenCV CPU time: {ratio:.2f}x (target <= {OPENCV_TARGET:.1f}x -> "
          f"{'met' if ratio <= OPENCV_TARGET else 'NOT met'}); wall {runs['ours']['wall'] / runs['opencv']['wall']:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=8, help="images for our fast mode")
    parser.add_argument("--compare-images", type=int, default=12,
                        help="images for the single-strategy comparison with the package (the same for all)")
    parser.add_argument("--k", type=int, default=100, help="Felzenszwalb k (= min segment size) of the comparison")
    parser.add_argument("--reduced-sides", type=int, nargs="+", default=[256, 320],
                        help="longer sides at which the reduced single strategy segments (k scaled to the pixels)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N runs per image and method")
    parser.add_argument("--opencv", metavar="PYTHON",
                        help="a Python with opencv-contrib-python-headless: compare ours (fast) with OpenCV's "
                             "switchToSelectiveSearchFast on --images images instead")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    if args.opencv:
        compare_opencv(args)
        return
    warnings.filterwarnings("ignore", category=UserWarning)  # the package's LBP-on-floats warning

    dataset = build_dataset(args.data)
    fast_set, compare_set = subset(dataset, args.images), subset(dataset, args.compare_images)
    fast_images = [fast_set.load_image(i) for i in range(len(fast_set))]
    compare_images = [compare_set.load_image(i) for i in range(len(compare_set))]
    height, width = compare_images[0].shape[:2]
    print(f"{args.data}: {width}x{height} images, single thread, CPU s/img best of {args.repeats}")
    build_proposer("selective_search", strategy="fast").propose(fast_images[0])  # warm-up (imports, colour LUTs)

    preset = STRATEGIES["fast"]
    fast_run = run_interleaved({
        "fast": build_proposer("selective_search", strategy="fast"),
        "segmentation": SegmentationOnly([(space, k) for space in preset["color_spaces"] for k in preset["ks"]]),
    }, fast_images, args.repeats)
    fast = summary(f"ours fast (8 strategies), full size, {len(fast_images)} img", fast_set, fast_run["fast"])

    reduced_ks = {}  # side -> the k that scale_k applies at that side
    for side in args.reduced_sides:
        small = downscale_to_max_side(compare_images[0], side)
        reduced_ks[side] = args.k * small.shape[0] * small.shape[1] / (height * width)
    proposers = {
        "package": build_proposer("selectivesearch", scale=args.k, min_size=args.k),
        "ours": build_proposer("selective_search", strategy="single", ks=[args.k]),
        ("segmentation", "package"): SegmentationOnly([("package", args.k)]),
        ("segmentation", "ours"): SegmentationOnly([("HSV", args.k)]),
    }
    for side, k in reduced_ks.items():
        proposers[side] = build_proposer("selective_search", strategy="single", ks=[args.k], max_side=side,
                                         scale_k=True)
        proposers[("segmentation", side)] = SegmentationOnly([("HSV", k)], side)
    runs = run_interleaved(proposers, compare_images, args.repeats)
    n = len(compare_images)
    package = summary(f"selectivesearch k={args.k}, full size, {n} img", compare_set, runs["package"])
    ours = summary(f"ours single HSV k={args.k} CTSF, full size, {n} img", compare_set, runs["ours"])
    reduced = {side: summary(f"ours single, max side {side}, k={k:g} (scaled), {n} img", compare_set, runs[side])
               for side, k in reduced_ks.items()}

    print("Felzenszwalb alone (ours: our graph segmentation; package: skimage's) and the rest (features + "
          "grouping), CPU s/img:")
    floors = [("fast mode (4 calls)", fast_run["fast"], fast_run["segmentation"]),
              ("package", runs["package"], runs[("segmentation", "package")]),
              ("ours single, full size", runs["ours"], runs[("segmentation", "ours")])]
    floors += [(f"ours single, max side {side}", runs[side], runs[("segmentation", side)]) for side in reduced_ks]
    for name, total, segmentation in floors:
        print(f"  {name:<30} segmentation {segmentation['cpu']:.3f}  the rest {total['cpu'] - segmentation['cpu']:.3f}")
    print(f"fast mode: {fast['cpu']:.3f} s/img CPU, {fast['wall']:.3f} s/img wall; target {FAST_TARGET_S} s -> "
          f"ratio target/ours {FAST_TARGET_S / fast['cpu']:.2f} (CPU), {FAST_TARGET_S / fast['wall']:.2f} (wall)")
    print(f"single strategy over the package, full size: {verdict(ours, package)}")
    for side, k in reduced_ks.items():
        print(f"single strategy over the package, ours at max side {side} (k={k:g}): {verdict(reduced[side], package)}")


if __name__ == "__main__":
    main()
