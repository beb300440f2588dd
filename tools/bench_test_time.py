"""Test-time tools side by side on one test set: single scale, multi-scale pyramid, ensemble.

    python tools/bench_test_time.py --config configs/custom_cpu.yaml --checkpoint a.pth --checkpoint b.pth \
        [key=value ...] [--scales 320,384,448,512] [--scale-roi-size 224 --scale-roi-size 82] [--threads 1]

Variants, each image through every one in turn (detect/engine/side_by_side.py), on data.test with its
cached proposals: the first checkpoint at model.test_scale, and at each of --single-scales; the
other checkpoints alone; the first with test.scales = --scales for
each --scale-roi-size (224: Fast R-CNN's rule; a smaller one suits a thin model trained on small
images: e.g. 82 = BCCD's median object side, 103 px, at the 384 px test scale); the ensemble of all
checkpoints at one scale; the ensemble with the pyramid (the last roi size). Prints VOC07 mAP, its
change against single scale, and seconds per image (forward, soft-max, decoding, NMS).
"""
from __future__ import annotations

import argparse

import torch

from detect.config import load_config
from detect.data.spec import build_dataset
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import ProposalDataset, cached_proposals
from detect.engine.detection_inference import load_detectors
from detect.engine.side_by_side import run_side_by_side, score_variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the checkpoints' YAML config (data.test, proposals.cache_dir)")
    parser.add_argument("--checkpoint", action="append", required=True, help="repeat: the ensemble's members")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--scales", default="320,384,448,512", help="the multi-scale pyramid's shorter sides")
    parser.add_argument("--scale-roi-size", type=int, action="append", default=None,
                        help="multi-scale: RoIs scored where their area is closest to this squared (default: 224 and 82)")
    parser.add_argument("--single-scales", type=lambda t: [int(v) for v in t.split(",") if v], default=[448, 512],
                        help="also the first checkpoint at these single test scales (default 448,512; '' for none)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    roi_sizes = args.scale_roi_size or [224, 82]
    scales = f"test.scales=[{args.scales}]"
    cfg = load_config(DetectionConfig, args.config, args.overrides)
    dataset = build_dataset(cfg.data.test, cfg.data.classes)
    data = ProposalDataset(dataset, cached_proposals(dataset, cfg.proposals, progress=False), cfg.proposals.max_per_image)

    def load(checkpoints, *extra):
        variant = load_config(DetectionConfig, args.config, [*args.overrides, *extra])
        return load_detectors(checkpoints, variant, dataset.classes, "cpu")[0]

    first = args.checkpoint[:1]
    models = {f"single scale {cfg.model.test_scale}": load(first)}
    for scale in args.single_scales:  # the pyramid's scales alone: what each level scores by itself
        models[f"single scale {scale}"] = load(first, f"model.test_scale={scale}",
                                               f"model.max_size={max(cfg.model.max_size, scale * 2)}")
    for size in roi_sizes:
        models[f"scales [{args.scales}] roi {size}"] = load(first, scales, f"test.scale_roi_size={size}")
    for index, path in enumerate(args.checkpoint[1:], start=2):
        models[f"checkpoint {index} alone, scale {cfg.model.test_scale}"] = load([path])
    if len(args.checkpoint) > 1:
        models[f"ensemble of {len(args.checkpoint)}, scale {cfg.model.test_scale}"] = load(args.checkpoint)
        models[f"ensemble of {len(args.checkpoint)} + scales roi {roi_sizes[-1]}"] = load(
            args.checkpoint, scales, f"test.scale_roi_size={roi_sizes[-1]}")
    results = run_side_by_side(models, data, torch.device("cpu"), progress=True)
    print(f"{len(data)} images of {cfg.data.test}, {torch.get_num_threads()} thread(s); checkpoints: "
          + ", ".join(args.checkpoint))
    print(f"{'variant':<44} {'VOC07 mAP':>10} {'change':>8} {'s/image':>8} {'time':>6}")
    base = None
    for name, (mean_ap, per_image) in score_variants(results, data).items():
        base = base or (mean_ap, per_image)
        print(f"{name:<44} {mean_ap:10.4f} {mean_ap - base[0]:+8.4f} {per_image:8.3f} {per_image / base[1]:6.0%}",
              flush=True)


if __name__ == "__main__":
    main()
