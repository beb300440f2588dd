"""Truncated SVD of the head's fc layers (Fast R-CNN §3.1): detection time and mAP with and without.

    python tools/bench_svd.py --checkpoint runs/x/last.pth --config configs/custom_cpu.yaml \
        [key=value ...] [--rank '{fc6: 128, fc7: 32}' ...] [--vgg16-repeats 2] [--threads 1]

1. The trained detector on its config's data.test (cached proposals), once as trained and once per
   --rank, side by side in one run (each image through every variant in turn: detect/engine/side_by_side.py):
   seconds per image (forward, soft-max, decoding, NMS) and VOC07 mAP.
2. The full-width VGG-16 Fast R-CNN head on random weights (20 classes), 2000 RoIs on a 600x800 image:
   the head's time (fc6 + fc7 + classifier + box head on pre-pooled RoIs) and the whole detection time,
   without and with Fast R-CNN's ranks (fc6 1024, fc7 256), medians of interleaved repeats.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import yaml

from detect.config import load_config
from detect.data.spec import build_dataset
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import ProposalDataset, cached_proposals
from detect.engine.detection_inference import load_detector
from detect.engine.side_by_side import run_side_by_side, score_variants
from detect.models.detector import ModelConfig, build_detector
from detect.models.postprocess import InferenceConfig
from detect.models.region_features import boxes_to_rois
from detect.models.truncated_svd import apply_truncated_svd

FAST_RCNN_RANKS = {"fc6": 1024, "fc7": 256}


def bench_trained(args) -> None:
    cfg = load_config(DetectionConfig, args.config, args.overrides)
    device = torch.device("cpu")
    dataset = build_dataset(cfg.data.test, cfg.data.classes)
    data = ProposalDataset(dataset, cached_proposals(dataset, cfg.proposals, progress=False),
                           cfg.proposals.max_per_image)
    ranks = [None] + [yaml.safe_load(r) for r in args.rank]
    models = {}
    for rank in ranks:
        model, _, _ = load_detector(args.checkpoint, cfg, dataset.classes, device, svd_rank=rank)
        models["full" if rank is None else f"svd {rank}"] = model
    head = models["full"].regions.head
    print(f"{args.checkpoint}: head fc layers " + ", ".join(
        f"{n} {m.out_features}x{m.in_features}" for n, m in ((f"fc{6 + i}", l) for i, l in enumerate(
            x for x in head.modules() if isinstance(x, torch.nn.Linear)))))
    results = run_side_by_side(models, data, device, progress=True)
    base = None
    print(f"{'variant':<28} {'s/image':>8} {'time':>7} {'VOC07 mAP':>10} {'change':>8}   ({len(data)} images of "
          f"{cfg.data.test}, {torch.get_num_threads()} thread(s))")
    for name, (mean_ap, per_image) in score_variants(results, data).items():
        base = base or (per_image, mean_ap)
        print(f"{name:<28} {per_image:8.3f} {per_image / base[0]:6.0%} {mean_ap:10.4f} {mean_ap - base[1]:+8.4f}",
              flush=True)


def interleaved_medians(functions: dict, repeats: int) -> dict[str, float]:
    times = {name: [] for name in functions}
    for fn in functions.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def bench_vgg16(args) -> None:
    cfg = ModelConfig(backbone="vgg16", mode="fast", test_scale=600, max_size=1000, chunk_size=256)
    full = build_detector(cfg, num_classes=20, inference=InferenceConfig()).eval()
    thin = build_detector(cfg, num_classes=20, inference=InferenceConfig()).eval()
    thin.load_state_dict(full.state_dict())
    apply_truncated_svd(thin.regions.head, FAST_RCNN_RANKS)
    g = torch.Generator().manual_seed(0)
    height, width = 600, 800
    image = torch.rand(3, height, width, generator=g)
    size = torch.rand(args.rois, 2, generator=g) * torch.tensor([width * 0.6, height * 0.6]) + 16
    corner = torch.rand(args.rois, 2, generator=g) * (torch.tensor([width, height]) - size)
    proposals = torch.cat([corner, corner + size], dim=1)
    batch, _, scaled, _ = full.prepare([image], [proposals], None)
    pooled = [full.regions._pool(full.regions.trunk(batch), c) for c in boxes_to_rois(scaled).split(cfg.chunk_size)]

    def head_of(model):
        def run():
            for chunk in pooled:
                features = model.regions.head(chunk)
                model.classifier(features), model.localisation(features)
        return run

    heads = interleaved_medians({"full": head_of(full), "svd": head_of(thin)}, args.vgg16_repeats)
    whole = interleaved_medians({"full": lambda: full([image], [proposals]), "svd": lambda: thin([image], [proposals])},
                                args.vgg16_repeats)
    print(f"VGG-16 Fast R-CNN head, random weights, {args.rois} RoIs, image {width}x{height} (scale 600), "
          f"{torch.get_num_threads()} thread(s), medians of {args.vgg16_repeats} interleaved repeats:")
    print(f"  head (fc6+fc7+cls+box): full {heads['full']:.3f} s/image, SVD fc6 1024 / fc7 256 {heads['svd']:.3f} "
          f"s/image ({1 - heads['svd'] / heads['full']:.0%} less)")
    print(f"  whole detection:        full {whole['full']:.3f} s/image, SVD fc6 1024 / fc7 256 {whole['svd']:.3f} "
          f"s/image ({1 - whole['svd'] / whole['full']:.0%} less)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="trained detector (skip part 1 without it)")
    parser.add_argument("--config", help="its YAML config (data.test and proposals.cache_dir are used)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--rank", action="append", default=None,
                        help="an SVD rank or a mapping '{fc6: R6, fc7: R7}'; repeatable (default: Fast R-CNN's "
                             "fractions of the width, '{fc6: 128, fc7: 32}', then gentler ranks)")
    parser.add_argument("--rois", type=int, default=2000, help="VGG-16 part: RoIs per image")
    parser.add_argument("--vgg16-repeats", type=int, default=2, help="VGG-16 part: timed repeats (0: skip it)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    args.rank = args.rank or ["{fc6: 128, fc7: 32}", "{fc6: 256, fc7: 192}", "{fc6: 256}", "{fc6: 384}"]
    torch.set_num_threads(args.threads)
    if args.checkpoint:
        bench_trained(args)
    if args.vgg16_repeats > 0:
        bench_vgg16(args)


if __name__ == "__main__":
    main()
