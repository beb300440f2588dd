"""Our detector against torchvision's Faster R-CNN on the same trunk, data, budget and evaluator.

Both start from the same backbone trunk of `model.backbone` at `model.width` (from scratch, or the
same `--weights`), train for the same `train.steps` x `train.images_per_batch` images at the same
scales with the same SGD settings (lr, momentum, weight decay, warm-up, milestones, gradient
clipping, horizontal flips, colour jitter, seed), and are scored on `data.test` by this project's VOC07 evaluator.
Ours is `detect train` (its config's proposals, its own recipe); the peer is
`torchvision.models.detection.FasterRCNN` with torchvision's defaults (RPN, RoIAlign 7x7,
TwoMLPHead, smooth-L1 box loss, 512 RoIs per image, NMS 0.5), its anchors sized to the trunk.

    python tools/bench_vs_faster_rcnn.py --config configs/custom_cpu.yaml --out runs/bench_peer_raccoon \
        --peer-color-jitter 0.0 --peer-weight-average none data.train=[voc-dirs:...] data.test=voc-dirs:...

(the two --peer options give torchvision's reference recipe: flips only, no average of the weights; without
them the peer gets the config's colour jitter and weight average, as ours).

Prints both per-class tables and the two mAPs side by side, with the training and test seconds.
With both sides run, a third row, "ours scoring its boxes", keeps the peer's detections (boxes and
labels) and replaces each score by our head's probability of that label: the same boxes, so its mAP
against the peer's tells whether a gap lies in the candidates or in how the head ranks them.
Each side's test detections land in OUT/<side>/detections.json (COCO results, `detect eval` reads them)
with its confusion matrix at score 0.5 (confusion_matrix.json: missed, mislocalised, background), so the
two detectors' errors can be compared, not only their mAPs.
`--peer-color-jitter 0.4,0.0` trains the peer once per value (default: the config's `data.color_jitter`,
the same augmentation as ours); 0.0 is the peer with flips only, as torchvision's reference recipe.
`--peer-weight-average 0.999,none` likewise for the average of its weights (default: the config's
`train.weight_average`, as ours; none is torchvision's detection reference, which has no average).
Several values of both train the peer once per pair.
With `test.flip=true` ours is scored with the test-time flip (row "ours") and without it ("ours without test
flip"), and the peer without it and with it ("+ test flip": its detections on the image and on the mirror, merged
by per-class NMS, since its RPN's candidates differ between the two).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import batched_nms

import backbones
from detect.config import load_config
from detect.data.spec import build_dataset
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_data import (ProposalDataset, cached_proposals, collate, flip_sample, jitter_colours,
                                         join_datasets)
from detect.engine.detection_inference import evaluate_predictions, load_detector, predict
from detect.engine.detection_trainer import lr_factor, train_detector
from detect.engine.weight_average import WeightAverage
from detect.data.samplers import SeededSampler
from detect.evaluation.confusion import confusion_matrix
from detect.evaluation.evaluate import format_table
from detect.evaluation.results import write_coco_results
from detect.models.postprocess import mirror_boxes
from detect.utils.files import atomic_write_bytes


def build_peer(cfg: DetectionConfig, num_classes: int, weights: str | None) -> FasterRCNN:
    backbone = backbones.build_backbone(cfg.model.backbone, width=cfg.model.width, **cfg.model.backbone_options)
    if weights:
        backbones.load_weights(backbone, weights)
    parts = backbone.detection_parts()
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(parts.trunk, num_classes=num_classes + 1, min_size=tuple(cfg.model.train_scales),
                      max_size=cfg.model.max_size, image_mean=list(parts.mean), image_std=list(parts.std),
                      rpn_anchor_generator=anchors, box_score_thresh=cfg.test.score_threshold,
                      box_detections_per_img=cfg.test.max_detections)


class FlippedImages(torch.utils.data.Dataset):
    """(index, sample_seed) -> image, target: the flips and colour jitter our trainer makes (odd seed = mirrored)."""

    def __init__(self, dataset, flip: bool, color_jitter: float = 0.0) -> None:
        self.dataset, self.flip, self.color_jitter = dataset, flip, color_jitter

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        index, seed = item
        image, target = self.dataset[index]
        if self.flip and seed % 2 == 1:
            image, target, _ = flip_sample(image, target, torch.zeros((0, 4)))
        if self.color_jitter:
            image = jitter_colours(image, self.color_jitter, seed)
        return image, {"boxes": target["boxes"], "labels": target["labels"]}, None


def train_peer(cfg: DetectionConfig, weights: str | None, color_jitter: float,
               weight_average: float | None) -> tuple[torch.nn.Module, list[str]]:
    """The trained peer (the average of its weights when weight_average is set) and its classes."""
    t = cfg.train
    torch.manual_seed(t.seed)
    train_set = join_datasets(cfg.data.train, cfg.data.classes)
    model = build_peer(cfg, len(train_set.classes), weights)
    model.train()
    average = WeightAverage(model, weight_average) if weight_average else None
    optimizer = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, t.lr_steps, t.lr_gamma, t.warmup_steps))
    data = FlippedImages(train_set, cfg.data.flip, color_jitter)
    sampler = SeededSampler(data, seed=t.seed)
    step, epoch = 0, 0
    while step < t.steps:
        sampler.set_epoch(epoch)
        loader = DataLoader(data, batch_size=t.images_per_batch, sampler=sampler, drop_last=True, collate_fn=collate)
        for images, targets, _ in loader:
            losses = model(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise SystemExit(f"peer: loss {loss.item()} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update(model)
            step += 1
            if step % max(1, t.log_every) == 0:
                print(f"peer step {step}: " + ", ".join(f"{k} {v.item():.3f}" for k, v in losses.items()), flush=True)
            if step >= t.steps:
                break
        epoch += 1
    return (average.module if average is not None else model), train_set.classes


@torch.no_grad()
def predict_peer(model: FasterRCNN, dataset, test_scale: int, flip: bool = False) -> list[dict]:
    """The peer's detections; with flip, those of the image and of its mirror merged (merge_flipped)."""
    model.eval()
    model.transform.min_size = (test_scale,)  # torchvision tests at the last training scale; ours at test_scale
    predictions = []
    for index in range(len(dataset)):
        image, _ = dataset[index]
        out = model([image])[0]
        if flip:
            out = merge_flipped(out, model([image.flip(-1)])[0], image.shape[-1], model.roi_heads.nms_thresh,
                                model.roi_heads.detections_per_img)
        predictions.append({k: v.cpu().numpy() for k, v in out.items()})
    return predictions


def merge_flipped(found: dict, mirrored: dict, width: int, nms_iou: float, max_detections: int) -> dict:
    """Test-time flip for a detector whose candidates depend on the image (an RPN's): the mirror's
    detections mirrored back join the image's, then per-class NMS and the top max_detections (the
    detection-level merge of detectron2's and mmdetection's flip test)."""
    boxes = torch.cat([found["boxes"], mirror_boxes(mirrored["boxes"], width)])
    scores, labels = torch.cat([found["scores"], mirrored["scores"]]), torch.cat([found["labels"], mirrored["labels"]])
    keep = batched_nms(boxes, scores, labels, nms_iou)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


@torch.no_grad()
def scores_on_boxes(model: torch.nn.Module, dataset, predictions: list[dict]) -> list[dict]:
    """The same boxes and labels (another detector's), each scored by our head instead: our soft-max
    probability of the box's label. Splits a gap between the two into candidates (the boxes) and ranking
    (the scores): equal boxes, so any change in AP is the scores' alone."""
    model.eval()
    rescored = []
    for index, found in enumerate(predictions):
        image, _ = dataset[index]
        boxes = torch.as_tensor(found["boxes"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(found["labels"], dtype=torch.long).reshape(-1)
        probabilities, _ = model.region_predictions([image], [boxes], add_rpn_proposals=False)[0]
        rescored.append({"boxes": boxes.numpy(), "labels": labels.numpy(),
                         "scores": probabilities[torch.arange(len(boxes)), labels].numpy()})
    return rescored


def write_errors(folder: Path, dataset, predictions: list[dict]) -> None:
    """detections.json and confusion_matrix.json (score >= 0.5), as `detect test` writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    write_coco_results(folder / "detections.json", dataset, predictions)
    text = json.dumps(confusion_matrix(dataset, predictions, 0.5), indent=1)
    atomic_write_bytes(folder / "confusion_matrix.json", lambda fh: fh.write(text.encode()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", required=True, help="folder for our run and the results JSON")
    parser.add_argument("--weights", help="the same pretrained backbone for both (default: from scratch)")
    parser.add_argument("--skip", choices=["ours", "peer"], help="run one side only")
    parser.add_argument("--peer-color-jitter", type=lambda text: [float(v) for v in text.split(",")],
                        metavar="V[,V...]", help="train the peer once per value (default: data.color_jitter, as ours)")
    parser.add_argument("--peer-weight-average", metavar="D[,D...]",
                        type=lambda text: [None if v == "none" else float(v) for v in text.split(",")],
                        help="train the peer once per decay, none = no average (default: train.weight_average, as ours)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cfg = load_config(DetectionConfig, args.config, list(args.overrides) + [f"train.out_dir={out / 'ours'}",
                                                                         "train.progress=false"])
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    test_set = build_dataset(cfg.data.test, cfg.data.classes)
    rows, model = {}, None
    if args.skip != "ours":
        tic = time.perf_counter()
        train_detector(replace(cfg, data=replace(cfg.data, val=None)), weights=args.weights)
        train_seconds = time.perf_counter() - tic
        model, _, classes = load_detector(out / "ours" / "last.pth", device="cpu")
        tic = time.perf_counter()
        data = ProposalDataset(test_set, cached_proposals(test_set, cfg.proposals, progress=False),
                               cfg.proposals.max_per_image)
        predictions = predict(model, data, torch.device("cpu"), amp=False, progress=False)
        result = evaluate_predictions(test_set, predictions, ["voc07"])["voc07"]
        rows["ours"] = (result, train_seconds, time.perf_counter() - tic)
        write_errors(out / "ours", test_set, predictions)
        if cfg.test.flip:  # the same checkpoint without the test-time flip
            tic = time.perf_counter()
            model.inference = replace(model.inference, flip=False)
            plain = predict(model, data, torch.device("cpu"), amp=False, progress=False)
            rows["ours without test flip"] = (evaluate_predictions(test_set, plain, ["voc07"])["voc07"], train_seconds,
                                              time.perf_counter() - tic)
            model.inference = replace(model.inference, flip=True)
    if args.skip != "peer":
        jitters = args.peer_color_jitter or [cfg.data.color_jitter]
        averages = args.peer_weight_average or [cfg.train.weight_average]
        for jitter, average in itertools.product(jitters, averages):
            tic = time.perf_counter()
            peer, classes = train_peer(cfg, args.weights, jitter, average)
            train_seconds = time.perf_counter() - tic
            if classes != test_set.classes:
                raise SystemExit(f"class lists differ: train {classes}, test {test_set.classes}")
            tic = time.perf_counter()
            predictions = predict_peer(peer, test_set, cfg.model.test_scale)
            result = evaluate_predictions(test_set, predictions, ["voc07"])["voc07"]
            variant = ((f" cj {jitter:g}" if len(jitters) > 1 else "")
                       + (f" wa {average or 'none'}" if len(averages) > 1 else ""))
            rows["torchvision FasterRCNN" + variant] = (result, train_seconds, time.perf_counter() - tic)
            write_errors(out / ("peer" + variant.replace(" ", "_")), test_set, predictions)
            if cfg.test.flip:  # the peer with ours' test-time flip too
                tic = time.perf_counter()
                flipped = predict_peer(peer, test_set, cfg.model.test_scale, flip=True)
                rows["torchvision FasterRCNN + test flip" + variant] = (
                    evaluate_predictions(test_set, flipped, ["voc07"])["voc07"], train_seconds, time.perf_counter() - tic)
            if model is not None:
                tic = time.perf_counter()
                rescored = evaluate_predictions(test_set, scores_on_boxes(model, test_set, predictions), ["voc07"])
                rows["ours scoring its boxes" + variant] = (rescored["voc07"], 0.0, time.perf_counter() - tic)

    print(f"\n{cfg.data.test}: {cfg.model.backbone} width {cfg.model.width}, {cfg.train.steps} steps x "
          f"{cfg.train.images_per_batch} images at {cfg.model.train_scales} px, weights {args.weights or 'none'}, "
          f"colour jitter ours {cfg.data.color_jitter:g}, weight average ours {cfg.train.weight_average or 'none'}")
    for name, (result, train_s, test_s) in rows.items():
        print(f"\n== {name} ==\n{format_table(result)}")
    print(f"\n{'detector':<36} {'VOC07 mAP':>9} {'train s':>8} {'test s':>7}")
    for name, (result, train_s, test_s) in rows.items():
        print(f"{name:<36} {result['mAP']:>9.4f} {train_s:>8.0f} {test_s:>7.0f}")
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: {"voc07_mAP": r["mAP"], "ap": r["ap"], "train_seconds": a, "test_seconds": b}
               for name, (r, a, b) in rows.items()}
    (out / "bench_vs_faster_rcnn.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
