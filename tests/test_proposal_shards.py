"""Proposals across machines: `detect propose --shard K/N` (or RANK / WORLD_SIZE as torchrun sets them).

Two shards running at the same time into one cache give the very proposals (boxes, scores) of one
run, the cache's manifest is complete afterwards with both shards' parts merged, and `detect train`
then uses the cache as it is (no file recomputed or rewritten)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detect.config import load_config
from detect.data.spec import build_dataset
from detect.engine.detection_config import DetectionConfig
from detect.engine.detection_trainer import DetectionTrainer
from detect.errors import UserError
from detect.proposals.cache import (MANIFEST, dataset_cache_root, load_proposals, parse_shard, read_manifest,
                                    shard_indices)
from tests.detector_setup import tiny_config

BCCD = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "BCCD"
PARAMS = ["--param", "strategy=single", "--param", "max_side=320"]

pytestmark = pytest.mark.skipif(not BCCD.is_dir(), reason="needs ../shared/datasets/BCCD")


def test_shard_split_is_a_deterministic_partition():
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(UserError, match="--shard"):
            parse_shard(bad)
    parts = [shard_indices(10, (k, 3)) for k in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(i for part in parts for i in part) == list(range(10))


def propose(spec: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "detect.cli", "propose", "--data", spec, "--out", str(out),
                             "--workers", "0", "--no-progress", *PARAMS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


def test_two_shards_equal_one_run_and_train_reuses_them(tmp_path):
    ids = (BCCD / "ImageSets" / "Main" / "test.txt").read_text().split()[:5]
    ids_file = tmp_path / "five.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    spec = f"voc-dirs:{BCCD / 'Annotations'}:{BCCD / 'JPEGImages'}:{ids_file}"

    # shard 0 by option, shard 1 from torchrun's environment variables, both at the same time
    first = propose(spec, tmp_path / "sharded", "--shard", "0/2")
    second = propose(spec, tmp_path / "sharded", env={"RANK": "1", "WORLD_SIZE": "2"})
    outputs = [finish(first), finish(second)]
    assert any("shard 1/2: proposals of 2 of 5 images" in o for o in outputs), outputs
    assert any("cache complete" in o for o in outputs), "the shard finishing last sees the cache complete"
    finish(propose(spec, tmp_path / "single"))

    dataset = build_dataset(spec)
    sharded_dirs = list(dataset_cache_root(dataset, tmp_path / "sharded").iterdir())
    single_dirs = list(dataset_cache_root(dataset, tmp_path / "single").iterdir())
    assert len(sharded_dirs) == len(single_dirs) == 1 and sharded_dirs[0].name == single_dirs[0].name
    sharded, single = sharded_dirs[0], single_dirs[0]
    for record in dataset.records:
        boxes, scores = load_proposals(sharded, record.image_id)
        ref_boxes, ref_scores = load_proposals(single, record.image_id)
        assert len(boxes) > 10
        assert np.array_equal(boxes, ref_boxes) and np.array_equal(scores, ref_scores), record.image_id

    manifest = read_manifest(sharded)
    assert manifest["complete"] is True and manifest["num_images"] == 5
    assert [(p["shard"], p["of"], p["images"]) for p in manifest["shards"]] == [(0, 2, 3), (1, 2, 2)]
    assert read_manifest(single)["complete"] is True

    # detect train on the sharded cache: nothing recomputed, nothing rewritten
    before = {p.name: p.stat().st_mtime_ns for p in sharded.iterdir() if p.is_file()}
    config = tiny_config(tmp_path / "train", tmp_path / "sharded", data={"train": [spec], "test": spec},
                         proposals={"params": {"strategy": "single", "max_side": 320}, "max_per_image": 100},
                         train={"steps": 2, "fit_check_images": 0})
    trainer = DetectionTrainer(load_config(DetectionConfig, config))
    assert trainer.train_data.cache_dir == sharded
    trainer.fit()
    after = {p.name: p.stat().st_mtime_ns for p in sharded.iterdir() if p.is_file()}
    assert after == before, "detect train recomputed or rewrote files of the sharded cache"
    assert MANIFEST in after and trainer.step == 2
