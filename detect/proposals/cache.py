"""Proposal cache: one .npz per image under `<root>/<method>-<params hash>/`, resumable, atomic.

Computing Selective Search for a dataset takes minutes to hours, so it is done once, in worker
processes, and every later run reads the .npz files. Each file is written to a temporary name and
renamed (atomic), so a file that exists is finished: an interrupted run resumes with the images
that have none. `manifest.json` records the method, its params and the dataset's fingerprints (ids
and sizes; file sizes and content samples); it is created exclusively (a hard link of a finished
temporary file), so two datasets racing into one directory give one cache and one clear error, and a
cache built for another dataset, other pixels or another method is refused rather than mixed in.

The layout every command shares: `dataset_cache_root(dataset, ROOT)` =
`ROOT/<readable dataset name>-<hash of the name>/`, under which `ensure_proposals` makes
`<method>-<params hash>/`. `detect propose --out ROOT` and `proposals.cache_dir: ROOT` of
`detect train` / `detect test` therefore find the same files.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from urllib.parse import quote

import cv2
import numpy as np
import torch

from detect.errors import DatasetError, UserError
from detect.proposals import PROPOSERS
from detect.utils.files import atomic_write_bytes, current_umask
from detect.utils.progress import progress_bar

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"


def method_name(proposer) -> str:
    """The name `build_proposer` knows the proposer's class by (else its `method` attribute or class name)."""
    path = f"{type(proposer).__module__}:{type(proposer).__name__}"
    names = [name for name, target in PROPOSERS.items() if target == path]
    return names[0] if names else getattr(proposer, "method", type(proposer).__name__)


def params_hash(method: str, params: dict) -> str:
    text = json.dumps({"method": method, "params": params}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def dataset_cache_root(dataset, root: str | Path) -> Path:
    """`<root>/<readable dataset name>-<hash of the name>/`: one cache root per dataset spec."""
    name = getattr(dataset, "name", "dataset")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[-60:]
    return Path(root) / f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def cache_dir_for(proposer, root: str | Path) -> Path:
    """`<root>/<method>-<hash of params>`: a change of any parameter gets a new directory."""
    method = method_name(proposer)
    return Path(root) / f"{method}-{params_hash(method, proposer.params())}"


def proposal_path(cache_dir: str | Path, image_id: str) -> Path:
    return Path(cache_dir) / f"{quote(str(image_id), safe='')}.npz"


def write_proposals(path: Path, boxes: np.ndarray, scores: np.ndarray, seconds: float) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, boxes=np.asarray(boxes, np.float32).reshape(-1, 4), scores=np.asarray(scores, np.float32),
             seconds=np.float64(seconds))
    atomic_write_bytes(path, lambda fh: fh.write(buffer.getvalue()))


def read_proposals(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {"boxes": data["boxes"], "scores": data["scores"], "seconds": float(data["seconds"])}
    except FileNotFoundError:
        raise UserError(f"{path}: no cached proposals for this image (run `detect propose` first)") from None
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a readable proposal file ({type(err).__name__}: {err}; truncated?); delete it "
                        "and run again to recompute it") from None


def load_proposals(cache_dir: str | Path, image_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(boxes float32 [N,4] xyxy, scores float32 [N]) of one image, in rank order."""
    data = read_proposals(proposal_path(cache_dir, image_id))
    return data["boxes"], data["scores"]


def read_manifest(cache_dir: str | Path) -> dict:
    path = Path(cache_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not a proposal cache (no manifest); run `detect propose` first") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: corrupt manifest ({err})") from None


def check_manifest(manifest: dict, expected: dict, cache_dir: Path) -> None:
    """Refuse a cache built for another dataset, other image contents, method or parameters.

    Manifests written before content fingerprints existed lack that key and are checked without it."""
    keys = ["method", "params", "dataset_fingerprint"] + (["content_fingerprint"] if "content_fingerprint" in manifest else [])
    for key in keys:
        if json.dumps(manifest.get(key), sort_keys=True, default=str) != json.dumps(expected[key], sort_keys=True, default=str):
            what = ("other image contents (same image ids and sizes, other files)" if key == "content_fingerprint"
                    else f"{key} {manifest.get(key)!r}, not {expected[key]!r}")
            raise UserError(
                f"{cache_dir / MANIFEST}: this cache holds proposals for {what} (dataset "
                f"{manifest.get('dataset', '?')!r}); use another cache folder (one per dataset) or delete this one"
            )


def write_manifest(cache_dir: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(cache_dir / MANIFEST, lambda fh: fh.write(text.encode()))


def claim_manifest(cache_dir: Path, manifest: dict) -> None:
    """Create `cache_dir/manifest.json` exclusively, or check the one already there.

    The manifest is written completely to a temporary file and hard-linked into place: the link fails
    if any other process created it first, so of two datasets racing into one directory exactly one
    owns it and the other gets the mismatch error; nobody ever reads a half-written manifest."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / MANIFEST
    if not path.exists():
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.", suffix=".tmp", dir=cache_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
            try:
                os.link(tmp, path)
                return
            except FileExistsError:
                pass  # another process won the race: check its manifest below
        finally:
            os.unlink(tmp)
    check_manifest(read_manifest(cache_dir), manifest, cache_dir)


def content_fingerprint(dataset) -> str:
    """The dataset's content fingerprint (ids and sizes only for a dataset object without one)."""
    method = getattr(dataset, "content_fingerprint", None)
    return method() if method is not None else dataset.fingerprint()


# Worker-process state, set once per process by _init_worker (the dataset and proposer are sent once).
_WORKER: dict = {}


def _init_worker(dataset, proposer, cache_dir: Path, threads: int | None = None, strict_images: bool = False) -> None:
    if threads is not None:  # worker processes: one thread each, the processes are the parallelism
        cv2.setNumThreads(threads)
        torch.set_num_threads(threads)
    _WORKER.update(dataset=dataset, proposer=proposer, cache_dir=cache_dir, strict_images=strict_images)


def unreadable_path(cache_dir: str | Path, image_id: str) -> Path:
    """The marker left for an image that could not be decoded (its text: the reason)."""
    return Path(cache_dir) / f"{quote(str(image_id), safe='')}.unreadable"


def _compute_one(index: int) -> int:
    dataset, proposer, cache_dir = _WORKER["dataset"], _WORKER["proposer"], _WORKER["cache_dir"]
    try:
        image = dataset.load_image(index)
    except DatasetError as err:
        if _WORKER.get("strict_images"):
            raise
        text = str(err).encode()
        atomic_write_bytes(unreadable_path(cache_dir, dataset.records[index].image_id), lambda fh: fh.write(text))
        return index
    start = time.perf_counter()
    boxes, scores = proposer.propose(image)
    seconds = time.perf_counter() - start
    write_proposals(proposal_path(cache_dir, dataset.records[index].image_id), boxes, scores, seconds)
    return index


def missing_indices(dataset, cache_dir: Path) -> list[int]:
    return [i for i, r in enumerate(dataset.records) if not proposal_path(cache_dir, r.image_id).is_file()
            and not unreadable_path(cache_dir, r.image_id).is_file()]


def unreadable_images(dataset, cache_dir: str | Path) -> dict[int, str]:
    """index -> reason, for the dataset's images the cache recorded as undecodable (and has no proposals for)."""
    markers = {p.name for p in Path(cache_dir).glob("*.unreadable")}  # one listing, not a stat per image
    found = {}
    for i, record in enumerate(dataset.records if markers else []):
        marker = unreadable_path(cache_dir, record.image_id)
        if marker.name in markers and not proposal_path(cache_dir, record.image_id).is_file():
            found[i] = marker.read_text(errors="replace").strip() or f"{record.image_path}: unreadable"
    return found


def ensure_proposals(dataset, proposer, root: str | Path, workers: int = 0, progress: bool = True,
                     limit: int | None = None, strict_images: bool = False) -> Path:
    """Compute the proposals missing under `cache_dir_for(proposer, root)` and return that directory.

    workers = 0 computes in this process; N > 0 uses N worker processes (spawned, one thread each).
    `limit` stops after computing that many images (the rest is left for a later, resuming call).
    An image that cannot be decoded is a DatasetError with `strict_images`, else it is skipped: a
    `<id>.unreadable` marker holds the reason (`unreadable_images` lists them; one log line counts them).
    """
    cache_dir = cache_dir_for(proposer, root)
    manifest = {"method": method_name(proposer), "params": proposer.params(),
                "dataset_fingerprint": dataset.fingerprint(), "content_fingerprint": content_fingerprint(dataset),
                "dataset": getattr(dataset, "name", ""), "num_images": len(dataset)}
    claim_manifest(cache_dir, manifest)
    missing = missing_indices(dataset, cache_dir)
    todo = missing if limit is None else missing[:limit]
    bar = progress_bar(total=len(dataset), initial=len(dataset) - len(missing),
               desc=f"proposals {cache_dir.name}", unit="img", disable=not progress)
    with bar:
        if workers <= 0:
            _init_worker(dataset, proposer, cache_dir, strict_images=strict_images)
            for index in todo:
                _compute_one(index)
                bar.update()
        elif todo:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                                     initargs=(dataset, proposer, cache_dir, 1, strict_images)) as pool:
                for _ in pool.map(_compute_one, todo, chunksize=1):
                    bar.update()
    skipped = unreadable_images(dataset, cache_dir)
    if skipped and strict_images:
        raise DatasetError(f"{next(iter(skipped.values()))} (data.strict_images; {len(skipped)} such image(s), "
                           f"markers in {cache_dir})")
    if skipped and todo:
        logger.warning("%s: skipped %d unreadable image(s), no proposals (first: %s)",
                       getattr(dataset, "name", "dataset"), len(skipped), next(iter(skipped.values())))
    return cache_dir
