"""Every shipped config at its real scale, on the CPU: a few steps of each, then its test, one table.

Each detector config (`detect train`, then `detect test`), pretrain config (`detect pretrain`, then
`detect pretrain --eval-only`, single-scale protocol) and MultiBox config (`detect train-multibox`,
then `detect propose --method multibox`) runs in its own subprocess with full-width backbones at the
config's own image scales and proposal counts, random weights (nothing is downloaded), BCCD images
standing in for VOC / COCO / ImageNet through overrides:

  detectors  data.train / data.test = the first --images BCCD training images (a voc-dirs: spec over
             an ids file in the scratch folder); one Selective Search cache shared by every config
             with the same proposer settings; train.steps = --steps (R-CNN mode: the box-regression
             stage follows, a quarter of it rounded up); nothing evaluated on the way;
  pretrain   a synthetic 4-class image folder (256 px images) in the scratch folder; one optimizer
             step is a micro-batch of min(optim.batch_size, --pretrain-batch) images (the papers' 256
             do not fit a CPU's memory: optim.accumulate does the rest on a real run, unmeasured here);
  multibox   the first --multibox-images BCCD training images (300 k-means priors need that many boxes).

Columns: seconds per training step (median; R-CNN's box-regression steps apart), seconds per test image
(the inference itself, timed inside the subprocess), the subprocess's peak resident set (VmHWM of the
train / test process; Selective Search worker processes not included), proposals per image, PASS/FAIL
with the error's last line. Configs whose effective settings are identical after the overrides (e.g.
voc2007_vgg16_fast, voc0712_vgg16_fast, coco2017_vgg16_fast: same model, scale and proposals; only the
dataset and schedule differ, and both are replaced) run once, the others' rows saying "= <config>"
(--no-dedupe runs each).

    nice -n 19 python tools/bench_full_scale.py --out runs/full_scale.json
    python tools/bench_full_scale.py --configs voc2007_vgg16_fast,pretrain_googlenet --steps 1 --images 2

Exit status: 0 when every row passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
THIN = ("custom_cpu", "bccd_thin_cpu", "compare_bccd_thin", "demo", "pretrain_tiny_cpu")  # CPU-sized already
NEVER = 10 ** 9  # a step count no short run reaches (checkpoints, lr steps)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="", help="comma-separated config names (default: every config in configs/ "
                                                 f"but the CPU-sized {', '.join(THIN)})")
    p.add_argument("--images", type=int, default=4, help="BCCD training images the detectors train on (default 4)")
    p.add_argument("--test-images", type=int, default=1, help="of those, images `detect test` runs on (default 1)")
    p.add_argument("--steps", type=int, default=2, help="training steps per config (default 2; R-CNN mode adds "
                                                        "ceil(steps / 4) box-regression steps)")
    p.add_argument("--pretrain-batch", type=int, default=16, help="largest pretrain micro-batch (default 16)")
    p.add_argument("--multibox-images", type=int, default=32, help="BCCD images MultiBox trains on (default 32)")
    p.add_argument("--scale", type=int, default=None,
                   help="override every detector's image scale (train_scales, test_scale; max_size 5/3 of it): "
                        "a smaller case for CI; default: each config's own")
    p.add_argument("--rcnn-test-regions", type=int, default=0,
                   help="R-CNN mode: time the test on this many regions per image and scale the seconds to the "
                        "real proposal count (each region is one backbone pass; default 0: all of them)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each run (default: torch's)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds one subprocess may take (default 3600)")
    p.add_argument("--bccd", default=str(REPO.parent / "shared" / "datasets" / "BCCD"), help="the BCCD folder")
    p.add_argument("--work", default="runs/bench_full_scale", help="scratch folder: runs, proposal cache, logs")
    p.add_argument("--out", help="write the table as JSON here too")
    p.add_argument("--no-dedupe", action="store_true", help="run configs with identical effective settings each")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run `detect ARGS` here, timings into this JSON
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p.parse_args(argv)


@dataclass
class Row:
    config: str
    kind: str  # detector | pretrain | multibox
    model: str = ""  # backbone, mode and scale, in words
    train_s_step: float | None = None  # median seconds per training step (R-CNN: classifier steps)
    box_s_step: float | None = None  # R-CNN mode: median seconds per box-regression step
    test_s_image: float | None = None  # inference seconds per test image
    train_peak_gb: float | None = None  # VmHWM of the training process
    test_peak_gb: float | None = None  # VmHWM of the test process
    proposals: float | None = None  # detectors: proposals per image used (cap: proposals.max_per_image)
    steps: str = ""  # what ran, e.g. "2+1 x 4 img"
    loss: float | None = None  # the last step's total loss
    ok: bool = False
    error: str = ""  # the failure's last line
    same_as: str = ""  # measured once with this config (identical effective settings)
    note: str = ""
    fingerprint: str = field(default="", repr=False)


# ------------------------------------------------------------------------------------------ the child
def child_main(result_file: str, argv: list[str]) -> int:
    """`detect ARGV` in this process, with the inference timed; writes {rc, peak_rss, timed} to result_file."""
    import detect.engine.classifier_evaluation as classifier_evaluation
    import detect.engine.detection_inference as detection_inference
    from detect.cli import main as cli
    from detect.engine.detector_measurement import peak_rss_bytes

    timed = {"seconds": 0.0, "images": 0}

    def timing(function, count):
        def wrapper(*args, **kwargs):
            tic = time.perf_counter()
            out = function(*args, **kwargs)
            timed["seconds"] += time.perf_counter() - tic
            timed["images"] += count(args, kwargs, out)
            return out
        return wrapper

    # `detect test` and `detect pretrain --eval-only` import these at call time: the wrappers are what they get
    detection_inference.predict = timing(detection_inference.predict, lambda a, k, out: len(out))
    classifier_evaluation.collect_posteriors = timing(classifier_evaluation.collect_posteriors,
                                                      lambda a, k, out: len(out[1]))
    rc = 1
    try:
        rc = cli(argv)
    except SystemExit as stop:
        rc = stop.code if isinstance(stop.code, int) else 1
    finally:
        Path(result_file).write_text(json.dumps({"rc": rc, "peak_rss": peak_rss_bytes()[0], "timed": timed}))
    return rc


def run_child(detect_argv: list[str], name: str, work: Path, args) -> dict:
    """Run `detect ...` in a niced-as-we-are subprocess; {rc, wall, peak_rss, tree_rss, timed, last_line, log}."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log, result = logs / f"{name}.log", logs / f"{name}.json"
    result.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(result), "--", *detect_argv]
    tic = time.perf_counter()
    with open(log, "w") as fh:
        fh.write("$ detect " + " ".join(detect_argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(command, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        rusage, status, timed_out = None, 0, False
        while True:
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - tic > args.timeout:
                os.killpg(proc.pid, signal.SIGTERM)  # our own child's process group only
                _, status, rusage = os.wait4(proc.pid, 0)
                timed_out = True
                break
            time.sleep(0.5)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - tic
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    out = {"rc": proc.returncode, "wall": wall, "tree_rss": rusage.ru_maxrss * 1024, "log": str(log),
           "last_line": (f"timed out after {args.timeout:.0f} s" if timed_out else lines[-1] if lines else ""),
           "timed": {"seconds": 0.0, "images": 0}, "peak_rss": None}
    if result.is_file():
        out.update({k: v for k, v in json.loads(result.read_text()).items() if k in ("peak_rss", "timed")})
    return out


# ------------------------------------------------------------------------------------------ helpers
def gb(value: float | None) -> float | None:
    return None if value is None else round(value / 2 ** 30, 2)


def fresh(out_dir: Path) -> None:
    """An earlier run's folder in the same --work would be resumed and its steps counted with this run's."""
    if out_dir.exists():
        shutil.rmtree(out_dir)


def train_records(out_dir: Path) -> list[dict]:
    path = out_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if r.get("split") == "train"]


def median_seconds(records: list[dict]) -> float | None:
    return round(statistics.median(r["seconds"] for r in records), 2) if records else None


def ids_spec(bccd: Path, work: Path, count: int) -> str:
    """The first `count` BCCD training images as a voc-dirs: spec over an ids file in the scratch folder."""
    ids = (bccd / "ImageSets" / "Main" / "train.txt").read_text().split()[:count]
    if len(ids) < count:
        raise SystemExit(f"bench_full_scale: BCCD has only {len(ids)} training images")
    path = work / f"bccd_first_{count}.txt"
    path.write_text("\n".join(ids) + "\n")
    return f"voc-dirs:{bccd / 'Annotations'}:{bccd / 'JPEGImages'}:{path}"


def training_classes(spec: str) -> list[str]:
    from detect.data.spec import build_dataset

    return list(build_dataset(spec).classes)


def config_kind(path: Path) -> str | None:
    from detect.config import load_config
    from detect.engine.classification_config import PretrainConfig
    from detect.engine.detection_config import DetectionConfig
    from detect.engine.multibox_trainer import MultiBoxTrainConfig
    from detect.errors import ConfigError

    for kind, cls in (("detector", DetectionConfig), ("pretrain", PretrainConfig), ("multibox", MultiBoxTrainConfig)):
        try:
            load_config(cls, path)
            return kind
        except ConfigError:
            continue
    return None


def fingerprint(cls, path: Path, overrides: list[str], ignore: dict[str, tuple[str, ...]]) -> str:
    """A hash of the effective config after the overrides, less what does not change the run."""
    from detect.config import load_config, to_dict

    settings = to_dict(load_config(cls, path, overrides))
    for section, keys in ignore.items():
        for key in keys:
            settings.get(section, {}).pop(key, None)
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def proposals_per_image(spec: str, cfg) -> float | None:
    """Mean proposals per image the detector used: the cache's boxes, capped at proposals.max_per_image."""
    from detect.data.spec import build_dataset
    from detect.engine.detection_data import cache_root
    from detect.proposals import build_proposer
    from detect.proposals.cache import cache_dir_for, proposal_path, read_proposals

    dataset = build_dataset(spec, cfg.data.classes)
    folder = cache_dir_for(build_proposer(cfg.proposals.method, **cfg.proposals.params), cache_root(dataset, cfg.proposals))
    counts = [min(len(read_proposals(p)["boxes"]), cfg.proposals.max_per_image)
              for p in (proposal_path(folder, r.image_id) for r in dataset.records) if p.is_file()]
    return round(statistics.mean(counts), 1) if counts else None


# ------------------------------------------------------------------------------------------ per kind
def bench_detector(path: Path, args, work: Path, row: Row) -> None:
    from detect.config import load_config
    from detect.engine.detection_config import DetectionConfig

    train_spec = ids_spec(Path(args.bccd), work, args.images)
    test_spec = ids_spec(Path(args.bccd), work, args.test_images)
    out_dir = work / "runs" / path.stem
    classes = training_classes(train_spec)  # the test subset may lack a class: the training set's list for both
    common = [f"data.train=[{train_spec}]", "data.val=null", f"data.test={test_spec}", f"data.classes=[{','.join(classes)}]",
              "data.workers=0", f"proposals.cache_dir={work / 'proposals'}", "proposals.workers=2",
              f"train.steps={args.steps}", "train.fit_check_images=0", "train.eval_every=0",
              f"train.checkpoint_every={NEVER}", f"train.lr_steps=[{NEVER}]", "train.log_every=1",
              "train.progress=false", "train.device=cpu", f"train.threads={args.threads or 'null'}"]
    if args.scale:
        common += [f"model.train_scales=[{args.scale}]", f"model.test_scale={args.scale}",
                   f"model.max_size={args.scale * 5 // 3}"]
    row.fingerprint = fingerprint(DetectionConfig, path, common, {"train": ("out_dir", "metrics", "lr_steps")})
    if row.same_as:
        return
    overrides = common + [f"train.out_dir={out_dir}"]
    cfg = load_config(DetectionConfig, path, overrides)
    m = cfg.model
    scale = (f"{m.train_scales}/{m.test_scale} px, max {m.max_size}" if m.mode == "fast"
             else f"warp {m.warp_size} px +{m.context_padding}")
    row.model = f"{m.backbone} {m.mode}, {scale}"
    row.steps = (f"{cfg.train.steps}+{cfg.train.box_steps}" if cfg.train.box_steps else f"{cfg.train.steps}") + \
        f" x {cfg.train.images_per_batch} img"
    fresh(out_dir)
    train = run_child(["train", "--config", str(path), *overrides], f"{path.stem}-train", work, args)
    row.train_peak_gb = gb(train["peak_rss"])
    records = train_records(out_dir)
    box = [r for r in records if set(k for k in r if k.startswith("loss_")) == {"loss_box"}]
    row.train_s_step = median_seconds([r for r in records if r not in box])
    row.box_s_step = median_seconds(box)
    row.loss = round(records[-1]["loss"], 4) if records and "loss" in records[-1] else None
    if train["rc"] != 0:
        row.error = f"train exit {train['rc']}: {train['last_line']}"
        return
    if len(records) != cfg.train.steps + cfg.train.box_steps:
        row.error = f"train logged {len(records)} steps, expected {cfg.train.steps + cfg.train.box_steps}"
        return
    row.proposals = proposals_per_image(train_spec, cfg)
    fewer = m.mode == "rcnn" and args.rcnn_test_regions and args.rcnn_test_regions < (row.proposals or 0)
    regions = [f"proposals.max_per_image={args.rcnn_test_regions}"] if fewer else []
    test = run_child(["test", "--config", str(path), "--checkpoint", str(out_dir / "last.pth"), "--out",
                      str(out_dir / "test"), "--metrics", "voc07", "--worst-images", "0", *overrides, *regions],
                     f"{path.stem}-test", work, args)
    row.test_peak_gb = gb(test["peak_rss"])
    if test["timed"]["images"]:
        seconds = test["timed"]["seconds"] / test["timed"]["images"]
        if fewer:  # R-CNN runs the whole backbone once per region: time is linear in the regions
            seconds *= row.proposals / args.rcnn_test_regions
            row.note = f"test s/img: {args.rcnn_test_regions} regions timed, x{row.proposals / args.rcnn_test_regions:.1f}"
        row.test_s_image = round(seconds, 2)
    if test["rc"] != 0:
        row.error = f"test exit {test['rc']}: {test['last_line']}"
        return
    finite = row.loss is not None and row.loss == row.loss and abs(row.loss) != float("inf")
    row.ok = finite and test["timed"]["images"] == args.test_images
    if not row.ok:
        row.error = f"loss {row.loss}, {test['timed']['images']} test images"
    (out_dir / "last.pth").unlink(missing_ok=True)  # a VGG-16 detector is ~0.5 GB


def bench_pretrain(path: Path, args, work: Path, row: Row) -> None:
    from detect.config import load_config
    from detect.engine.classification_config import PretrainConfig

    cfg = load_config(PretrainConfig, path)
    batch = min(cfg.optim.batch_size, args.pretrain_batch)
    classes, per_class = 4, max(1, -(-batch * args.steps // 4))
    out_dir = work / "runs" / path.stem
    common = [f"data.root={work / f'classes-{classes}x{per_class}'}", "data.workers=0", "eval.workers=0",
              f"data.synthetic={{num_classes: {classes}, train_per_class: {per_class}, val_per_class: 1, size: 256, seed: 0}}",
              f"optim.batch_size={batch}", "optim.accumulate=1", f"run.max_steps={args.steps}", "run.epochs=1",
              f"run.checkpoint_every={NEVER}", "run.log_every=1", "run.progress=false", "run.tensorboard=false",
              "run.device=cpu", "eval.protocols=[single-scale]"]
    row.fingerprint = fingerprint(PretrainConfig, path, common, {"run": ("out_dir",)})
    if row.same_as:
        return
    overrides = common + [f"run.out_dir={out_dir}"]
    m = cfg.model
    a = cfg.data.augment
    row.model = f"{m.name} width {m.width}, {a.crop_size} px crops"
    row.steps = f"{args.steps} x {batch} img"
    row.note = f"micro-batch {batch} of {cfg.optim.batch_size * cfg.optim.accumulate}; test: single-scale"
    fresh(out_dir)
    train = run_child(["pretrain", "--config", str(path), "--no-eval", *overrides], f"{path.stem}-train", work, args)
    row.train_peak_gb = gb(train["peak_rss"])
    records = train_records(out_dir)
    row.train_s_step = median_seconds(records)
    row.loss = round(records[-1]["loss"], 4) if records and "loss" in records[-1] else None
    if train["rc"] != 0:
        row.error = f"train exit {train['rc']}: {train['last_line']}"
        return
    test = run_child(["pretrain", "--config", str(path), "--eval-only", "--checkpoint", str(out_dir / "last.pth"),
                      *overrides], f"{path.stem}-test", work, args)
    row.test_peak_gb = gb(test["peak_rss"])
    if test["timed"]["images"]:
        row.test_s_image = round(test["timed"]["seconds"] / test["timed"]["images"], 2)
    if test["rc"] != 0:
        row.error = f"test exit {test['rc']}: {test['last_line']}"
        return
    row.ok = len(records) == args.steps and row.loss is not None and abs(row.loss) < float("inf")
    if not row.ok:
        row.error = f"{len(records)} steps logged, loss {row.loss}"
    (out_dir / "last.pth").unlink(missing_ok=True)


def bench_multibox(path: Path, args, work: Path, row: Row) -> None:
    from detect.config import load_config
    from detect.engine.multibox_trainer import MultiBoxTrainConfig

    spec = ids_spec(Path(args.bccd), work, args.multibox_images)
    test_spec = ids_spec(Path(args.bccd), work, args.test_images)
    out_dir = work / "runs" / path.stem
    common = [f"data.train={spec}", "data.val=null", "data.workers=0", f"run.max_steps={args.steps}",
              "optim.epochs=1", "run.log_every=1", "run.progress=false", "run.device=cpu"]
    row.fingerprint = fingerprint(MultiBoxTrainConfig, path, common, {"run": ("out_dir",)})
    if row.same_as:
        return
    cfg = load_config(MultiBoxTrainConfig, path, common)
    m = cfg.model
    row.model = f"{m.backbone} width {m.width}, {m.input_size} px, {m.num_priors} priors"
    row.steps = f"{args.steps} x {cfg.optim.batch_size} img"
    fresh(out_dir)
    train = run_child(["train-multibox", "--config", str(path), *common, f"run.out_dir={out_dir}"],
                      f"{path.stem}-train", work, args)
    row.train_peak_gb = gb(train["peak_rss"])
    records = train_records(out_dir)
    row.train_s_step = median_seconds(records)
    row.loss = round(records[-1]["loss"], 4) if records and "loss" in records[-1] else None
    if train["rc"] != 0:
        row.error = f"train exit {train['rc']}: {train['last_line']}"
        return
    cache = work / "multibox_proposals" / path.stem
    fresh(cache)
    test = run_child(["propose", "--data", test_spec, "--method", "multibox", "--param",
                      f"checkpoint={out_dir / 'last.pth'}", "--out", str(cache), "--workers", "0", "--no-progress"],
                     f"{path.stem}-test", work, args)
    row.test_peak_gb = gb(test["peak_rss"])
    from detect.proposals.cache import read_proposals
    found = [read_proposals(p) for p in cache.rglob("*.npz")]
    if found:
        row.proposals = round(statistics.mean(len(f["boxes"]) for f in found), 1)
        row.test_s_image = round(statistics.mean(f["seconds"] for f in found), 3)
    if test["rc"] != 0:
        row.error = f"propose exit {test['rc']}: {test['last_line']}"
        return
    row.ok = len(records) == args.steps and len(found) == args.test_images and row.loss is not None
    if not row.ok:
        row.error = f"{len(records)} steps logged, {len(found)} images proposed, loss {row.loss}"
    row.note = "test: `detect propose --method multibox`"


BENCH = {"detector": bench_detector, "pretrain": bench_pretrain, "multibox": bench_multibox}


# ------------------------------------------------------------------------------------------ the table
def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(rows: list[Row]) -> str:
    lines = ["| config | model at its scale | steps | s/step train | s/step box | s/img test | peak GB train / test "
             "| proposals/img | result |", "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for r in rows:
        result = ("PASS" if r.ok else f"FAIL: {r.error}"[:200]) + (f" (= {r.same_as})" if r.same_as else "")
        lines.append(f"| {r.config} | {r.model} | {r.steps} | {fmt(r.train_s_step)} | {fmt(r.box_s_step)} | "
                     f"{fmt(r.test_s_image)} | {fmt(r.train_peak_gb)} / {fmt(r.test_peak_gb)} | "
                     f"{fmt(r.proposals, 0) if r.proposals is not None else '-'} | {result.replace('|', '/')} |")
    return "\n".join(lines)


def write_outputs(rows: list[Row], args, seconds: float) -> None:
    """The rows so far as JSON (--out) and Markdown beside it (a long run leaves what it measured)."""
    if not args.out:
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k not in ("child", "rest")},
                               "seconds": round(seconds), "rows": [asdict(r) for r in rows]}, indent=1))
    out.with_suffix(".md").write_text(markdown(rows) + "\n")


def select_configs(names: str) -> list[Path]:
    paths = sorted((REPO / "configs").glob("*.yaml"))
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        return [p for p in paths if p.stem not in THIN]
    by_name = {p.stem: p for p in paths}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise SystemExit(f"bench_full_scale: no config(s) {missing} in {REPO / 'configs'}")
    return [by_name[n] for n in wanted]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.rest[1:] if args.rest[:1] == ["--"] else args.rest)
    if args.test_images > args.images:
        raise SystemExit("bench_full_scale: --test-images must be at most --images")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows, measured = [], {}
    start = time.perf_counter()
    for path in select_configs(args.configs):
        kind = config_kind(path)
        if kind is None:
            print(f"{path.stem}: neither a detector, pretrain nor MultiBox config: skipped", flush=True)
            continue
        row = Row(path.stem, kind)
        tic = time.perf_counter()
        try:
            row.same_as = "x"  # first only the fingerprint
            BENCH[kind](path, args, work, row)
            first = measured.get((kind, row.fingerprint)) if not args.no_dedupe else None
            if first is not None:
                row = Row(**{**asdict(first), "config": path.stem, "same_as": first.config})
            else:
                row.same_as = ""
                BENCH[kind](path, args, work, row)
                measured[(kind, row.fingerprint)] = row
        except Exception as err:  # a config's failure is a row of the table, not the end of the run
            row.same_as, row.ok = "", False
            row.error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        rows.append(row)
        write_outputs(rows, args, time.perf_counter() - start)
        status = "PASS" if row.ok else f"FAIL {row.error}"
        print(f"{path.stem:<28} {time.perf_counter() - tic:7.0f} s  {status}"
              + (f" (= {row.same_as})" if row.same_as else ""), flush=True)
    print(f"\n{markdown(rows)}\n\n{len(rows)} configs, {sum(r.ok for r in rows)} passed, "
          f"{time.perf_counter() - start:.0f} s; logs in {work / 'logs'}", flush=True)
    return 0 if rows and all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
