"""Compare backbones (or proposers) on equal terms: one base config, one variable, one result file each.

Every variant is the base config with only `model.backbone` (or `proposals.method` and its params)
changed, so data, proposals (one shared cache), schedule and seed are identical. Each variant trains
into `OUT/runs/<name>/` (or a given checkpoint is only evaluated), is measured in a fresh process
(detector_measurement), and its numbers go to `OUT/results/<name>.json`, written atomically. A
variant with a result file is done and skipped, so an interrupted comparison continues with the
variants not yet done; a half-trained one resumes from its own checkpoint (the trainer's resume).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import backbones
from detect.config import load_config, to_dict
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_trainer import LAST_CHECKPOINT, DetectionTrainer
from detect.engine.detector_measurement import measure_detector, measure_detector_in_child
from detect.errors import UserError
from detect.proposals import build_proposer
from detect.utils.files import atomic_write_bytes
from detect.utils.interrupt import Interrupted

RESULTS_DIR = "results"
DETECTIONS_DIR = "detections"
RUNS_DIR = "runs"
TRAINING_TIME = "training_time.json"
# Settings that change how a run executes, not what it computes: a finished variant stays valid if they differ.
EXECUTION_KEYS = {("train", "device"), ("train", "progress"), ("train", "threads"), ("data", "workers"),
                  ("proposals", "workers")}


@dataclass
class Variant:
    """One contestant: `name` (the backbone or proposal method), its full config, and how to get weights."""

    name: str
    cfg: DetectionConfig
    checkpoint: Path | None = None  # given: evaluate it, do not train
    weights: str | None = None  # pretrained backbone weights for training (a .pth or "torchvision")
    dropped_options: tuple[str, ...] = ()  # base backbone_options this backbone does not take
    kind: str = "backbone"  # what varies: "backbone" or "proposer"


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def backbone_variant_options(name: str, options: dict) -> tuple[dict, tuple[str, ...]]:
    """The base config's backbone options that backbone `name` accepts, and the names of the others."""
    if name not in backbones.BUILDERS:
        try:
            backbones.build_backbone(name)
        except backbones.BackboneError as err:
            raise UserError(f"--backbones: {err}") from None
    valid = set(backbones.backbone_options(name))
    return {k: v for k, v in options.items() if k in valid}, tuple(sorted(set(options) - valid))


def proposer_params(method: str, base: DetectionConfig, extra: dict[str, dict]) -> dict:
    """Parameters of proposal method `method`: the base config's if it is the base method, plus `extra[method]`."""
    params = dict(base.proposals.params) if method == base.proposals.method else {}
    params.update(extra.get(method, {}))
    return params


def check_proposer(method: str, params: dict) -> None:
    """Build the proposer once up front, so a missing MultiBox checkpoint fails before any training."""
    learned = method in ("multibox", "combined")
    if learned and not params.get("checkpoint"):
        raise UserError(f"--proposers {method}: needs a trained MultiBox model (`detect train-multibox`); "
                        f"give it with --multibox-checkpoint PATH")
    try:
        build_proposer(method, **params)
    except (UserError, TypeError) as err:
        raise UserError(f"--proposers {method}: cannot build this proposer with {params}: {err}") from None


def plan_comparison(config: str | Path, overrides: list[str], out: str | Path, backbones: list[str],
                    proposers: list[str] | None = None, checkpoints: list[str] | None = None,
                    weights: list[str] | None = None, extra_proposer_params: dict[str, dict] | None = None) -> list[Variant]:
    """The variants: one per backbone, or (with proposers) one per proposal method on a single backbone."""
    base = load_config(DetectionConfig, config, overrides)
    proposers = proposers or []
    if len(backbones) > 1 and len(proposers) > 1:
        raise UserError("compare one thing at a time: several --backbones or several --proposers, not both")
    backbones = backbones or [base.model.backbone]
    names = proposers if len(proposers) > 1 else backbones
    if len(set(names)) != len(names):
        raise UserError(f"{'--proposers' if len(proposers) > 1 else '--backbones'} lists a name twice: {names}")
    checkpoints = checkpoints or []
    if checkpoints and len(checkpoints) != len(names):
        raise UserError(f"--checkpoints: {len(checkpoints)} checkpoint(s) for {len(names)} variant(s) {names}; "
                        f"give one per variant, in the same order")
    for path in checkpoints:
        if not Path(path).is_file():
            raise UserError(f"--checkpoints: {path}: checkpoint not found")
    weights = weights or []
    if len(weights) not in (0, 1, len(names)):
        raise UserError(f"--weights: give one for all variants or one per variant ({len(names)}), got {len(weights)}")

    out = Path(out)
    variants = []
    for i, name in enumerate(names):
        backbone = backbones[0] if len(proposers) > 1 else name
        options, dropped = backbone_variant_options(backbone, base.model.backbone_options)
        settings = [f"model.backbone={backbone}", f"model.backbone_options={json.dumps(options)}",
                    f"train.out_dir={out / RUNS_DIR / name}"]
        if proposers:
            method = proposers[i] if len(proposers) > 1 else proposers[0]
            params = proposer_params(method, base, extra_proposer_params or {})
            check_proposer(method, params)
            settings += [f"proposals.method={method}", f"proposals.params={json.dumps(params)}"]
        cfg = load_config(DetectionConfig, config, list(overrides) + settings)
        weight = (weights[i] if len(weights) > 1 else weights[0]) if weights else None
        variants.append(Variant(name, cfg, Path(checkpoints[i]) if checkpoints else None, weight, dropped,
                                "proposer" if len(proposers) > 1 else "backbone"))
    return variants


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def comparable_config(cfg_dict: dict) -> dict:
    """The config without the execution-only keys (device, threads, progress, workers)."""
    return {section: {k: v for k, v in values.items() if (section, k) not in EXECUTION_KEYS}
            if isinstance(values, dict) else values for section, values in cfg_dict.items()}


def first_difference(old: dict, new: dict, prefix: str = "") -> str | None:
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key} was {a!r}, now {b!r}"
    return None


def results_path(out: str | Path, name: str) -> Path:
    return Path(out) / RESULTS_DIR / f"{name}.json"


def finished_result(path: Path, variant: Variant) -> dict | None:
    """The variant's result if it was already measured with this very config; None if not yet done."""
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: corrupt result file ({err}); delete it to measure this variant again") from None
    new = comparable_config(json.loads(json.dumps(to_dict(variant.cfg))))
    difference = first_difference(comparable_config(result.get("config", {})), new)
    if difference:
        raise UserError(f"{path}: measured with another configuration ({difference}); use another --out "
                        f"or delete this file to measure {variant.name} again")
    given = str(variant.checkpoint) if variant.checkpoint else None
    if given and result.get("checkpoint_sha1") != file_sha1(variant.checkpoint):
        raise UserError(f"{path}: measured another checkpoint than {given}; use another --out or delete this file")
    return result


def read_training_time(run_dir: Path) -> dict:
    path = run_dir / TRAINING_TIME
    return json.loads(path.read_text()) if path.is_file() else {"seconds": 0.0, "sessions": 0}


def add_training_time(run_dir: Path, seconds: float) -> dict:
    """Accumulate wall-clock training seconds over sessions (a resumed run adds to the first one's)."""
    record = read_training_time(run_dir)
    record = {"seconds": record["seconds"] + seconds, "sessions": record["sessions"] + 1}
    text = json.dumps(record).encode()
    atomic_write_bytes(run_dir / TRAINING_TIME, lambda fh: fh.write(text))
    return record


def train_variant(variant: Variant) -> tuple[Path, dict]:
    """Train (or resume) the variant into its run dir; (checkpoint, training time record)."""
    run_dir = Path(variant.cfg.train.out_dir)
    checkpoint = run_dir / LAST_CHECKPOINT
    trainer = DetectionTrainer(variant.cfg, variant.weights, resume=checkpoint.is_file())
    start = time.perf_counter()
    try:
        trainer.fit()
    except Interrupted as stop:  # signalled: the same `detect compare` command resumes (no --resume flag)
        stop.resume_flag = None
        raise
    finally:
        record = add_training_time(run_dir, time.perf_counter() - start)
    if trainer.step < trainer.total_steps:
        raise UserError(f"comparison interrupted while training {variant.name} (step {trainer.step} of "
                        f"{trainer.total_steps}, checkpoint {checkpoint}); run the same command again to resume")
    return checkpoint, {**record, "steps": trainer.total_steps}


def run_variant(variant: Variant, out: Path, isolate: bool = True) -> dict:
    """Train (unless a checkpoint is given), measure, and write the variant's result file atomically."""
    if variant.checkpoint is None:
        checkpoint, training = train_variant(variant)
    else:
        checkpoint, training = variant.checkpoint, None
    measure = measure_detector_in_child if isolate else measure_detector
    detections = out / DETECTIONS_DIR / f"{variant.name}.json"
    result = {
        "name": variant.name,
        "kind": variant.kind,
        "backbone": variant.cfg.model.backbone,
        "width": variant.cfg.model.width,
        "proposal_method": variant.cfg.proposals.method,
        "proposal_params": variant.cfg.proposals.params,
        "max_proposals_per_image": variant.cfg.proposals.max_per_image,
        "checkpoint": str(checkpoint),
        "checkpoint_sha1": file_sha1(checkpoint),
        "trained_here": variant.checkpoint is None,
        "weights": variant.weights,
        "dropped_backbone_options": list(variant.dropped_options),
        "training_time": training,
        "detections": str(detections),
        **measure(variant.cfg, checkpoint, detections),
        "config": to_dict(variant.cfg),
    }
    text = json.dumps(result, indent=1, default=str).encode()
    atomic_write_bytes(results_path(out, variant.name), lambda fh: fh.write(text))
    return result


def run_comparison(variants: list[Variant], out: str | Path, isolate: bool = True, log=print) -> list[dict]:
    """Run every variant not yet done (in order) and return all their results."""
    out = Path(out)
    results = []
    for index, variant in enumerate(variants, start=1):
        path = results_path(out, variant.name)
        done = finished_result(path, variant)
        if done is not None:
            log(f"[{index}/{len(variants)}] {variant.name}: done before ({path}), skipped")
            results.append(done)
            continue
        if variant.dropped_options:
            log(f"[{index}/{len(variants)}] {variant.name}: base backbone option(s) {', '.join(variant.dropped_options)} "
                f"do not apply to {variant.cfg.model.backbone}; left out")
        action = "evaluating " + str(variant.checkpoint) if variant.checkpoint else "training into " + variant.cfg.train.out_dir
        log(f"[{index}/{len(variants)}] {variant.name}: {action}")
        result = run_variant(variant, out, isolate)
        log(f"[{index}/{len(variants)}] {variant.name}: VOC07 mAP {result['metrics']['voc07']['mAP']:.4f}, "
            f"COCO AP {result['metrics']['coco']['mAP']:.4f} -> {path}")
        results.append(result)
    return results


def load_results(out: str | Path, names: list[str] | None = None) -> list[dict]:
    """Result files under OUT/results (those of `names`, in that order, or all of them)."""
    folder = Path(out) / RESULTS_DIR
    paths = [folder / f"{n}.json" for n in names] if names else sorted(folder.glob("*.json"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise UserError(f"{folder}: no result file(s) {', '.join(missing) or '*.json'}; run `detect compare` first")
    results = []
    for path in paths:
        try:
            results.append(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: corrupt result file ({err})") from None
    return results
