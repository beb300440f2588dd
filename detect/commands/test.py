"""Evaluate a trained detector: `detect test --config X.yaml --checkpoint last.pth [section.key=value ...]`.

Runs the detector over data.test (or --data), writes the detections as a COCO results JSON (integer
image and category ids of the ground truth `detect convert` writes for the same spec, so pycocotools
loads them) and as VOC devkit files (comp4_det_<split>_<class>.txt), and prints VOC07, VOC12 and COCO
metrics. Several --checkpoint options test their ensemble (detect/models/ensemble.py), test.scales
a multi-scale pyramid, test.svd_rank the head's truncated SVD. Beside metrics.json, the analysis:
pr_curves.png (per-class precision-recall, VOC rules), confusion_matrix.json / .png (classes,
mislocalisation, background and missed objects; see detect/evaluation/confusion.py) and
worst_images/ (the images with the most errors, drawn with detections and ground truth).
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="the YAML config the detector was trained with")
    parser.add_argument("--checkpoint", action="append",
                        help="detector checkpoint from `detect train` (required unless --print-config); repeat it "
                             "for an ensemble: class posteriors and boxes averaged over the same proposals before NMS")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. test.nms_iou=0.4")
    parser.add_argument("--data", help="dataset spec to test on (default: data.test of the config)")
    parser.add_argument("--out", help="output folder (default: <train.out_dir>/test)")
    parser.add_argument("--metrics", default="voc07,voc12,coco", help="comma-separated (default voc07,voc12,coco)")
    parser.add_argument("--device", help="auto | cpu | cuda[:i] (overrides train.device)")
    parser.add_argument("--confusion-threshold", type=float, default=0.5,
                        help="detections scoring at least this enter the confusion matrix (default 0.5)")
    parser.add_argument("--worst-images", type=int, default=8, metavar="N",
                        help="draw the N images with the most errors (at --confusion-threshold) into OUT/worst_images/ "
                             "with detections and ground truth (default 8; 0: none)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective config (after base: and overrides), each key with its meaning, and exit")


def main(args) -> int:
    import json

    from detect.config import load_config, print_config
    from detect.data.spec import build_dataset, devkit_split
    from detect.engine.detection_config import DetectionConfig
    from detect.engine.detection_data import ProposalDataset, cached_proposals, predictions_for
    from detect.engine.detection_inference import evaluate_predictions, load_detectors, predict
    from detect.errors import UserError
    from detect.evaluation.confusion import confusion_matrix, image_errors
    from detect.evaluation.evaluate import format_table
    from detect.evaluation.precision_recall import precision_recall_curves
    from detect.evaluation.results import check_devkit_image_ids, write_coco_results, write_voc_results
    from detect.report.confusion_plot import plot_confusion_matrix
    from detect.report.detections import plot_precision_recall
    from detect.report.worst_images import write_worst_images
    from detect.utils.device import prepare_model, resolve_device
    from detect.utils.files import atomic_write_bytes, output_folder

    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(DetectionConfig, args.config, overrides)
    if args.print_config:
        print_config(cfg, args.config, overrides)
        return 0
    if not args.checkpoint:
        raise UserError("--checkpoint is required: the detector checkpoint from `detect train`")
    if not 0.0 <= args.confusion_threshold <= 1.0:
        raise UserError(f"--confusion-threshold must be in [0, 1], got {args.confusion_threshold}")
    if args.worst_images < 0:
        raise UserError(f"--worst-images must be >= 0, got {args.worst_images}")
    spec = args.data or cfg.data.test
    if not spec:
        raise UserError(f"{args.config}: no test data: set data.test or pass --data SPEC")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    device = resolve_device(cfg.train.device)
    dataset = build_dataset(spec, cfg.data.classes)
    model, cfg, classes = load_detectors(args.checkpoint, cfg, dataset.classes, device)
    model = prepare_model(model, device, cfg.train.channels_last)
    check_devkit_image_ids(dataset)  # what can be checked is checked before proposals and inference
    out = output_folder(args.out or Path(cfg.train.out_dir) / "test")
    data = ProposalDataset(dataset, cached_proposals(dataset, cfg.proposals, cfg.train.progress,
                                                     cfg.data.strict_images), cfg.proposals.max_per_image)
    scored = predict(model, data, device, cfg.train.amp, cfg.train.progress)  # data.dataset: less unreadable images
    predictions = predictions_for(dataset, data.dataset, scored)

    split = devkit_split(spec)  # voc:ROOT:SPLIT, shapes:...:SPLIT, voc-dirs:...:IDS_FILE's name
    results_json = write_coco_results(out / "detections.json", dataset, predictions)
    voc_files = write_voc_results(out / "voc", dataset, predictions, split=split)
    results = evaluate_predictions(data.dataset, scored, metrics)
    for result in results.values():
        print(format_table(result) + "\n")
    checkpoints = [str(c) for c in args.checkpoint]
    text = json.dumps({"checkpoint": checkpoints[0] if len(checkpoints) == 1 else checkpoints, "data": spec,
                       **({"test_scales": cfg.test.scales} if cfg.test.scales else {}),
                       **({"svd_rank": cfg.test.svd_rank} if cfg.test.svd_rank is not None else {}), **results}, indent=2)
    atomic_write_bytes(out / "metrics.json", lambda fh: fh.write(text.encode()))
    curves = precision_recall_curves(data.dataset, scored)
    aps = results["voc07"]["ap"] if "voc07" in results else {}
    plot_precision_recall(curves, aps, out / "pr_curves.png", f"{spec}: per-class precision-recall (VOC rules)")
    confusion = confusion_matrix(data.dataset, scored, args.confusion_threshold)
    text = json.dumps(confusion, indent=1)
    atomic_write_bytes(out / "confusion_matrix.json", lambda fh: fh.write(text.encode()))
    plot_confusion_matrix(confusion, out / "confusion_matrix.png", spec)
    if args.worst_images:
        errors = image_errors(data.dataset, scored, args.confusion_threshold)
        drawn = write_worst_images(data.dataset, scored, errors, out / "worst_images", args.worst_images,
                                   args.confusion_threshold)
        print(f"worst images: {len(drawn)} drawn in {out / 'worst_images'} (white: ground truth; errors in worst_images.json)")
    print(f"detections: {results_json} (COCO results) and {len(voc_files)} VOC devkit files in {out / 'voc'}")
    print(f"analysis: {out / 'pr_curves.png'}, {out / 'confusion_matrix.png'} and {out / 'confusion_matrix.json'}")
    print(f"metrics: {out / 'metrics.json'}")
    return 0
