"""Detect objects in images: `detect infer --checkpoint last.pth IMAGE... --out DIR`.

Computes each image's proposals with the checkpoint's proposal method, runs the detector, draws
the boxes with class names and scores (DIR/<image name>.png) and writes every detection above
test.score_threshold to DIR/detections.json (boxes as x1,y1,x2,y2 in pixels).
"""
from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="detector checkpoint from `detect train`")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, help="output folder for drawn images and detections.json")
    parser.add_argument("--draw-threshold", type=float, default=0.5, help="draw detections scoring at least this")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")


def main(args) -> int:
    import json

    import torch
    from tqdm import tqdm

    from detect.data.images import read_image_rgb
    from detect.engine.checkpoint import atomic_write_bytes
    from detect.engine.detection_inference import load_detector
    from detect.engine.device import resolve_device
    from detect.proposals import build_proposer
    from detect.report.detections import draw_detections, write_image

    device = resolve_device(args.device)
    model, cfg, classes = load_detector(args.checkpoint, device=device)
    proposer = build_proposer(cfg.proposals.method, **cfg.proposals.params)
    out = Path(args.out)
    records = []
    for path in tqdm(args.images, desc="infer", unit="img"):
        image = read_image_rgb(path)
        boxes, _ = proposer.propose(image)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        proposals = torch.as_tensor(boxes[: cfg.proposals.max_per_image]).reshape(-1, 4)
        with torch.no_grad():
            found = model([tensor.to(device)], [proposals.to(device)])[0]
        found = {k: v.cpu().numpy() for k, v in found.items()}
        drawn = write_image(out / f"{Path(path).stem}.png", draw_detections(image, found, classes, args.draw_threshold))
        records.append({"image": str(path), "drawn": str(drawn), "detections": [
            {"class": classes[int(c) - 1], "score": round(float(s), 5), "box": [round(float(v), 2) for v in b]}
            for b, s, c in zip(found["boxes"], found["scores"], found["labels"])]})
    text = json.dumps({"checkpoint": str(args.checkpoint), "images": records}, indent=2)
    atomic_write_bytes(out / "detections.json", lambda fh: fh.write(text.encode()))
    counts = sum(sum(d["score"] >= args.draw_threshold for d in r["detections"]) for r in records)
    print(f"{len(records)} images, {counts} detections scoring >= {args.draw_threshold} drawn in {out}; "
          f"all detections in {out / 'detections.json'}")
    return 0
