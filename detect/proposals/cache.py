"""Proposal cache: one .npz per image under `<root>/<method>-<params hash>/`, resumable, atomic.

Computing Selective Search for a dataset takes minutes to hours, so it is done once, in worker
processes, and every later run reads the .npz files. Each file is written to a temporary name and
renamed (atomic), so a file that exists is finished: an interrupted run resumes with the images
that have none. `manifest.json` records the method, its params and the dataset's fingerprints (ids
and sizes; file sizes and content samples); it is created exclusively (a hard link of a finished
temporary file), so two datasets racing into one directory give one cache and one clear error, and a
cache built for another dataset, other pixels or another method is refused rather than mixed in.

Across machines (`detect propose --shard K/N`, or RANK / WORLD_SIZE under torchrun): shard K computes
the images whose index i in the dataset has i % N == K (a deterministic split of the dataset's own
order; interleaved, so shards get a similar mix), into the same cache folder. The manifest is never
rewritten concurrently from partial knowledge: every shard claims the same manifest (identical
content, created exclusively, so the first creates it and the others check it), and each shard, when
its images are done, writes its own part `shards/part-K-of-N.json` (one writer per file, atomic).
A read-modify-write of one shared manifest by N processes on N machines would lose updates (network
file systems give no reliable locks); parts cannot collide. Whoever then finds every image's file
present (the last shard to finish, or any later run) merges the parts into the manifest as
`complete` (atomic rename; the merge is a function of what is on disk, so two shards merging at once
write the same bytes). Boxes and scores do not depend on the split: each image's proposals depend
only on the image and the parameters (the ranking's random factor is seeded per image).

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


def parse_shard(text: str) -> tuple[int, int]:
    """`K/N` (0 <= K < N) -> (K, N); anything else is a UserError naming the value."""
    try:
        k, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4") from None
    if not 0 <= k < n:
        raise UserError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4 ... 3/4")
    return k, n


def shard_indices(count: int, shard: tuple[int, int] | None) -> list[int]:
    """The dataset indices shard (K, N) computes: i % N == K (all of them without a shard)."""
    if shard is None:
        return list(range(count))
    k, n = shard
    return list(range(k, count, n))


SHARDS = "shards"


def shard_part_path(cache_dir: Path, shard: tuple[int, int]) -> Path:
    return Path(cache_dir) / SHARDS / f"part-{shard[0]}-of-{shard[1]}.json"


def write_shard_part(cache_dir: Path, shard: tuple[int, int], indices: list[int], computed: int, seconds: float) -> None:
    """This shard's own record (one writer per file): which share it holds and what it computed."""
    part = {"shard": shard[0], "of": shard[1], "images": len(indices), "computed": computed,
            "seconds": round(seconds, 3), "host": os.uname().nodename if hasattr(os, "uname") else ""}
    path = shard_part_path(cache_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, lambda fh: fh.write(json.dumps(part, indent=2, sort_keys=True).encode()))


def mark_complete(dataset, cache_dir: Path) -> bool:
    """When every image has its proposals (or its unreadable marker), merge the shard parts (if any)
    into the manifest with `complete: true`; returns whether the cache is complete. Idempotent."""
    if missing_indices(dataset, cache_dir):
        return False
    manifest = read_manifest(cache_dir)
    parts = sorted((json.loads(p.read_text()) for p in (Path(cache_dir) / SHARDS).glob("part-*-of-*.json")),
                   key=lambda part: (part["of"], part["shard"]))
    merged = {**manifest, "complete": True,
              "unreadable": len(unreadable_images(dataset, cache_dir)),
              "shards": [{k: part[k] for k in ("shard", "of", "images", "computed", "host")} for part in parts]}
    if merged != manifest:
        try:
            write_manifest(cache_dir, merged)
        except (OSError, UserError) as err:  # a read-only shared cache is still a usable, complete cache
            logger.info("%s: complete, but the manifest could not be updated (%s)", cache_dir, err)
    return True


def ensure_proposals(dataset, proposer, root: str | Path, workers: int = 0, progress: bool = True,
                     limit: int | None = None, strict_images: bool = False,
                     shard: tuple[int, int] | None = None) -> Path:
    """Compute the proposals missing under `cache_dir_for(proposer, root)` and return that directory.

    workers = 0 computes in this process; N > 0 uses N worker processes (spawned, one thread each).
    `limit` stops after computing that many images (the rest is left for a later, resuming call).
    `shard` = (K, N) computes only shard K's share (`shard_indices`) and records it in
    `shards/part-K-of-N.json`; when nothing is missing any more the manifest says `complete`.
    An image that cannot be decoded is a DatasetError with `strict_images`, else it is skipped: a
    `<id>.unreadable` marker holds the reason (`unreadable_images` lists them; one log line counts them).
    """
    cache_dir = cache_dir_for(proposer, root)
    manifest = {"method": method_name(proposer), "params": proposer.params(),
                "dataset_fingerprint": dataset.fingerprint(), "content_fingerprint": content_fingerprint(dataset),
                "dataset": getattr(dataset, "name", ""), "num_images": len(dataset)}
    claim_manifest(cache_dir, manifest)
    share = shard_indices(len(dataset), shard)
    missing = missing_indices(dataset, cache_dir) if shard is None else sorted(
        set(missing_indices(dataset, cache_dir)) & set(share))
    todo = missing if limit is None else missing[:limit]
    start = time.perf_counter()
    bar = progress_bar(total=len(share), initial=len(share) - len(missing),
               desc=f"proposals {cache_dir.name}" + (f" shard {shard[0]}/{shard[1]}" if shard else ""),
               unit="img", disable=not progress)
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
    if shard is not None and len(todo) == len(missing):  # this shard's share is all there
        write_shard_part(cache_dir, shard, share, len(todo), time.perf_counter() - start)
    if len(todo) == len(missing):
        mark_complete(dataset, cache_dir)
    return cache_dir
