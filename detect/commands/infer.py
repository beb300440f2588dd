"""Detect objects in images and videos: `detect infer --checkpoint last.pth INPUT... --out DIR`.

INPUT is an image file, a folder (its images and videos, sorted by name), a glob such as
'photos/*.jpg' (quoted, so the shell leaves it alone) or a video file (read with OpenCV; every
--video-stride-th frame, named <video stem>_f<frame index>). Each image goes through
`detect.Predictor` (the checkpoint's proposal method, then the detector); the boxes are drawn with
class names and scores (DIR/<name>.png) and every detection above test.score_threshold goes to
DIR/detections.json, a COCO results list as `detect test` writes it ({image_id: the file's stem,
category_id: the class name, bbox [x, y, w, h] in 0-based pixels, score, file_name}), so
`detect eval --data SPEC --results DIR/detections.json` scores it when the files are a dataset's
images. An input that cannot be read is named and skipped; the others still get their detections,
and the exit status is 1.
"""
from __future__ import annotations

import glob
import sys
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", required=True, help="detector checkpoint from `detect train`")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders, globs (quoted) or video files")
    parser.add_argument("--out", required=True, help="output folder for drawn images and detections.json")
    parser.add_argument("--draw-threshold", type=float, default=0.5, help="draw detections scoring at least this")
    parser.add_argument("--video-stride", type=int, default=1, help="videos: detect in every N-th frame (default 1)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """(files in order, [(input, why it gave nothing)]): folders list their images and videos, globs expand."""
    files, failed = [], []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
            files += found
            if not found:
                failed.append((text, "folder holds no images or videos"))
        elif path.exists():
            files.append(path)
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
            files += found
            if not found:
                failed.append((text, "no file matches this pattern"))
        else:
            failed.append((text, "no such file or folder"))
    return files, failed


def video_frames(path: Path, stride: int):
    """(frame index, uint8 RGB frame) of every stride-th frame; OSError if OpenCV cannot open the file."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise OSError(f"{path}: OpenCV cannot open this video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % stride == 0:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()


def unique_name(stem: str, taken: set[str]) -> str:
    name, k = stem, 2
    while name in taken:
        name, k = f"{stem}_{k}", k + 1
    taken.add(name)
    return name


def main(args) -> int:
    import json

    import numpy as np

    from detect.boxes import convert_boxes
    from detect.data.images import read_image_rgb
    from detect.engine.predictor import Predictor
    from detect.errors import UserError
    from detect.report.detections import draw_detections, write_image
    from detect.utils.files import atomic_write_bytes, file_in, output_folder
    from detect.utils.progress import progress_bar

    if args.video_stride < 1:
        raise UserError(f"--video-stride must be at least 1, got {args.video_stride}")
    predictor = Predictor(args.checkpoint, device=args.device)
    classes = predictor.classes
    out = output_folder(args.out)
    files, failed = expand_inputs(args.inputs)
    results, taken, images, drawn_count = [], set(), 0, 0

    def record(name: str, file_name: str, image: np.ndarray, found: dict) -> None:
        nonlocal images, drawn_count
        write_image(file_in(out, f"{name}.png"), draw_detections(image, found, classes, args.draw_threshold))
        xywh = convert_boxes(found["boxes"].astype(np.float64), "xyxy", "xywh")
        for box, score, label in zip(xywh.tolist(), found["scores"].tolist(), found["labels"].tolist()):
            results.append({"image_id": name, "category_id": classes[int(label) - 1], "bbox": box,
                            "score": score, "file_name": file_name})
        images += 1
        drawn_count += int((found["scores"] >= args.draw_threshold).sum())

    for path in progress_bar(files, desc="infer", unit="file"):
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                stem = unique_name(path.stem, taken)
                for index, frame in video_frames(path, args.video_stride):
                    record(unique_name(f"{stem}_f{index:06d}", taken), f"{path}#{index}", frame, predictor(frame))
            else:
                image = read_image_rgb(path)
                record(unique_name(path.stem, taken), str(path), image, predictor(image))
        except (UserError, OSError) as err:
            message = str(err)
            failed.append((str(path), message[len(str(path)) + 2:] if message.startswith(f"{path}: ") else message))
    text = json.dumps(results, indent=1)
    atomic_write_bytes(out / "detections.json", lambda fh: fh.write(text.encode()))
    print(f"{images} images, {drawn_count} detections scoring >= {args.draw_threshold} drawn in {out}; "
          f"all {len(results)} detections in {out / 'detections.json'} (COCO results)")
    for name, why in failed:
        print(f"detect infer: could not read {name}: {why}", file=sys.stderr)
    if failed:
        print(f"detect infer: {len(failed)} input(s) skipped, see above", file=sys.stderr)
    return 1 if failed else 0
