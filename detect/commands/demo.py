"""The main job on a CPU in minutes: synthetic shapes -> Selective Search proposals -> a thin VGG
Fast R-CNN detector trained from scratch -> VOC07/VOC12/COCO evaluation on the held-out split.

Writes OUT/metrics.json, OUT/pr_curve.png and a few drawn detections (OUT/detections_*.png);
the configuration is configs/demo.yaml (any key can be overridden, e.g. train.steps=300).
Ctrl-C during training stops it with a checkpoint (OUT/run/last.pth; exit status 130, nothing is
evaluated); the same command with --resume continues it to the result an uninterrupted run gives.
"""
from __future__ import annotations

import time
from pathlib import Path

DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
DRAWN_IMAGES = 6


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="demo_output", help="output folder (default ./demo_output)")
    parser.add_argument("--images", type=int, help="synthetic images in all, 60%% train / 20%% test (default: the config's 400)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic images (default 0)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="demo config (default configs/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.steps=300")
    parser.add_argument("--device", help="auto | cpu | cuda[:i] (default: the config's, auto)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the training a Ctrl-C stopped, from OUT/run/last.pth (same options as before)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config (after base: and overrides), each key with its meaning, and exit")


def main(args) -> int:
    import json

    from detect.config import load_config, print_config
    from detect.data.spec import build_dataset
    from detect.engine.detection_config import DetectionConfig
    from detect.engine.detection_data import ProposalDataset, cached_proposals
    from detect.engine.detection_inference import evaluate_predictions, predict
    from detect.engine.detection_trainer import LAST_CHECKPOINT, DetectionTrainer
    from detect.errors import UserError
    from detect.evaluation.evaluate import format_table
    from detect.evaluation.precision_recall import precision_recall_curves
    from detect.report.detections import draw_detections, plot_precision_recall, write_image
    from detect.utils.files import atomic_write_bytes

    start = time.perf_counter()
    out = Path(args.out)
    overrides = [f"proposals.cache_dir={out / 'proposals'}", f"train.out_dir={out / 'run'}", "data.val=null"]
    if args.images is not None:
        overrides += [f"data.train=[shapes:{args.images}:{args.seed}:train]", f"data.test=shapes:{args.images}:{args.seed}:test"]
    overrides += list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(DetectionConfig, args.config, overrides)
    if args.print_config:
        print_config(cfg, args.config, overrides)
        return 0
    print(f"detect demo: {cfg.model.backbone} x{cfg.model.width} ({cfg.model.mode} mode) on {cfg.data.train} "
          f"-> {cfg.data.test}, {cfg.train.steps} steps; outputs in {out}/", flush=True)

    checkpoint = Path(cfg.train.out_dir) / LAST_CHECKPOINT
    if args.resume and not checkpoint.is_file():
        raise UserError(f"{checkpoint}: no checkpoint to resume; run `detect demo` with the same --out first")
    # renders the shapes and computes their proposals on first use; a Ctrl-C in fit() saves and exits 130
    trainer = DetectionTrainer(cfg, resume=args.resume)
    print(f"[{time.perf_counter() - start:5.0f}s] proposals ready; training", flush=True)
    trainer.fit()
    print(f"[{time.perf_counter() - start:5.0f}s] trained; evaluating on {cfg.data.test}", flush=True)

    test_set = build_dataset(cfg.data.test, trainer.classes)
    test_data = ProposalDataset(test_set, cached_proposals(test_set, cfg.proposals), cfg.proposals.max_per_image)
    predictions = predict(trainer.model, test_data, trainer.device, cfg.train.amp, cfg.train.progress)
    results = evaluate_predictions(test_set, predictions, ["voc07", "voc12", "coco"])
    for result in results.values():
        print("\n" + format_table(result))

    voc07 = results["voc07"]
    curve = plot_precision_recall(precision_recall_curves(test_set, predictions), voc07["ap"], out / "pr_curve.png",
                                  f"{test_set.name}: VOC07 mAP {voc07['mAP']:.3f}")
    drawn = [write_image(out / f"detections_{test_set.image_ids[i]}.png",
                         draw_detections(test_set.load_image(i), predictions[i], test_set.classes))
             for i in range(min(DRAWN_IMAGES, len(test_set)))]
    elapsed = time.perf_counter() - start
    summary = {"seconds": round(elapsed, 1), "config": str(args.config), "overrides": overrides,
               "checkpoint": str(Path(cfg.train.out_dir) / "last.pth"), **results}
    text = json.dumps(summary, indent=2)
    atomic_write_bytes(out / "metrics.json", lambda fh: fh.write(text.encode()))
    print(f"\ndetect demo: VOC07 mAP@0.5 {voc07['mAP']:.4f}, VOC12 {results['voc12']['mAP']:.4f}, "
          f"COCO AP {results['coco']['mAP']:.4f} on {len(test_set)} held-out images, in {elapsed:.0f} s")
    print(f"  metrics:    {out / 'metrics.json'}\n  PR curves:  {curve}\n  detections: {', '.join(map(str, drawn[:2]))}, ..."
          f"\n  checkpoint: {summary['checkpoint']} (try `detect infer --checkpoint {summary['checkpoint']} IMAGE --out DIR`)")
    return 0
