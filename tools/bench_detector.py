"""Detector overhead benchmark: is the pipeline only the backbone's cost?

    python tools/bench_detector.py [--backbone vgg16] [--width 1.0] [--repeats 3]

fast mode: inference time per image with P proposals (default 2000) through the whole detector
(normalise, resize, trunk, RoI pooling, head, classifier + box head, soft-max, decode, per-class NMS)
against trunk forward + head forward on the same RoIs (pre-pooled), timed in the same run.
Target: ratio <= 1.1. Also printed: the ratio against trunk + RoI pooling + head, i.e. the
overhead of everything but the per-RoI work.
rcnn mode: regions per second through the whole detector (context crop + warp, trunk, head,
classifier, box head, postprocess) against the backbone's own batch throughput at its input size
(trunk + head on a batch of chunk_size images). Target: ratio >= 0.9.
Repeats are interleaved (pipeline, reference, pipeline, ...) and the medians compared, so load from
other processes hits both sides alike.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from detect.models.detector import ModelConfig, build_detector
from detect.models.postprocess import InferenceConfig
from detect.models.region_features import boxes_to_rois


def random_proposals(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Selective-Search-like boxes: many sizes, anywhere in the image."""
    size = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.6, height * 0.6]) + 16
    corner = torch.rand(count, 2, generator=generator) * (torch.tensor([width, height]) - size)
    return torch.cat([corner, corner + size], dim=1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(pipeline, reference, repeats: int) -> tuple[list[float], list[float]]:
    pipeline(), reference()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(pipeline))
        b.append(timed(reference))
    return a, b


@torch.inference_mode()
def bench_fast(args, pool: str) -> dict:
    cfg = ModelConfig(backbone=args.backbone, width=args.width, mode="fast", roi_pool=pool,
                      roi_sampling_ratio=args.sampling_ratio,
                      test_scale=args.scale, max_size=args.max_size, chunk_size=args.chunk)
    model = build_detector(cfg, num_classes=20, inference=InferenceConfig()).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, args.height, args.width_px, generator=g)
    proposals = random_proposals(args.proposals, args.height, args.width_px, g)
    regions = model.regions

    # the references get the resized, normalised batch (and the pooled RoI features) ready-made
    batch, sizes, scaled, _ = model.prepare([image], [proposals], None)
    features = regions.trunk(batch)
    chunks = boxes_to_rois(scaled).split(args.chunk)
    pooled = [regions._pool(features, c) for c in chunks]

    def trunk_head():  # the reference: trunk forward + head forward on the same RoIs
        regions.trunk(batch)
        for chunk in pooled:
            regions.head(chunk)

    def trunk_pool_head():  # the same with the RoI pooling counted as part of the per-RoI work
        f = regions.trunk(batch)
        for chunk in chunks:
            regions.head(regions._pool(f, chunk))

    detector = lambda: model([image], [proposals])  # noqa: E731
    pipeline_s, reference_s = interleaved(detector, trunk_head, args.repeats)
    pipeline2_s, pooled_reference_s = interleaved(detector, trunk_pool_head, args.repeats)
    p = statistics.median(pipeline_s + pipeline2_s)
    r, rp = statistics.median(reference_s), statistics.median(pooled_reference_s)
    return {"mode": f"fast ({pool})", "pipeline_s": p, "reference_s": r, "ratio": p / r,
            "pooled_reference_s": rp, "pooled_ratio": p / rp}


@torch.inference_mode()
def bench_rcnn(args) -> dict:
    cfg = ModelConfig(backbone=args.backbone, width=args.width, mode="rcnn", warp_size=224, context_padding=16,
                      chunk_size=args.rcnn_chunk)
    model = build_detector(cfg, num_classes=20, inference=InferenceConfig()).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, args.height, args.width_px, generator=g)
    proposals = random_proposals(args.regions, args.height, args.width_px, g)
    crops = torch.randn(args.rcnn_chunk, 3, 224, 224, generator=g)
    batches = -(-args.regions // args.rcnn_chunk)

    def reference():  # the backbone's batch throughput at 224: trunk + head on full batches
        for _ in range(batches):
            model.regions.head(model.regions.trunk(crops))

    pipeline_s, reference_s = interleaved(lambda: model([image], [proposals]), reference, args.repeats)
    p = args.regions / statistics.median(pipeline_s)
    r = batches * args.rcnn_chunk / statistics.median(reference_s)
    return {"mode": "rcnn", "pipeline_regions_per_s": p, "backbone_regions_per_s": r, "ratio": p / r}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier of the backbone")
    parser.add_argument("--height", type=int, default=375, help="input image height (a typical VOC image)")
    parser.add_argument("--width-px", type=int, default=500, help="input image width")
    parser.add_argument("--scale", type=int, default=600, help="fast mode: test scale (shorter side)")
    parser.add_argument("--max-size", type=int, default=1000)
    parser.add_argument("--proposals", type=int, default=2000, help="fast mode: proposals per image")
    parser.add_argument("--sampling-ratio", type=int, default=1, help="fast mode, RoIAlign: samples per bin side")
    parser.add_argument("--chunk", type=int, default=512, help="fast mode: RoIs through the head at once")
    parser.add_argument("--regions", type=int, default=64, help="rcnn mode: regions per image")
    parser.add_argument("--rcnn-chunk", type=int, default=32, help="rcnn mode: warped regions per backbone batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--modes", default="fast-pool,fast-align,rcnn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{args.backbone} width {args.width}, image {args.width_px}x{args.height}, torch threads "
          f"{torch.get_num_threads()}, medians of {args.repeats} interleaved repeats")
    for mode in args.modes.split(","):
        if mode.startswith("fast"):
            r = bench_fast(args, mode.split("-")[1])
            print(f"{r['mode']:<13} {args.proposals} proposals: detector {r['pipeline_s']:.3f} s/image; "
                  f"trunk + head {r['reference_s']:.3f} s/image, ratio {r['ratio']:.3f} (target <= 1.1); "
                  f"trunk + RoI pooling + head {r['pooled_reference_s']:.3f} s/image, ratio {r['pooled_ratio']:.3f}",
                  flush=True)
        else:
            r = bench_rcnn(args)
            print(f"{r['mode']:<13} {args.regions} regions: detector {r['pipeline_regions_per_s']:.2f} regions/s, "
                  f"backbone batch {r['backbone_regions_per_s']:.2f} images/s, ratio {r['ratio']:.3f} (target >= 0.9)",
                  flush=True)


if __name__ == "__main__":
    main()
