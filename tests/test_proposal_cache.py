"""The proposal cache: atomic per-image files, resume after an interruption, refusal of a wrong cache."""
from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.data.dataset import DetectionDataset, ImageRecord
from detect.errors import UserError
from detect.proposals.cache import (
    cache_dir_for, ensure_proposals, load_proposals, proposal_path, read_manifest, write_proposals,
)
from detect.proposals.selective_search import SelectiveSearch


class CountingProposer(SelectiveSearch):
    """Our real proposer, counting the images it was asked for (in this process)."""

    def __init__(self, **params):
        super().__init__(**params)
        self.calls = 0

    def propose(self, image):
        self.calls += 1
        return super().propose(image)


def small_dataset(tmp_path: Path, count: int = 6, seed: int = 0) -> DetectionDataset:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        image = np.full((48, 64, 3), 60, np.uint8)
        x, y = rng.integers(0, 30), rng.integers(0, 20)
        image[y:y + 20, x:x + 25] = rng.integers(100, 255, 3)
        path = tmp_path / "images" / f"img/{i}.png"  # a '/' in the id must not make subfolders
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), image[:, :, ::-1])
        records.append(ImageRecord(f"img/{i}", path, 64, 48, [[x, y, x + 25, y + 20]], [1], [False], [False]))
    return DetectionDataset(records, ["box"], name=f"small-{seed}")


def proposer(**params) -> CountingProposer:
    return CountingProposer(strategy="single", ks=[50], min_box_size=4, **params)


def test_cache_writes_one_file_per_image_equal_to_direct_proposals(tmp_path):
    dataset = small_dataset(tmp_path)
    prop = proposer()
    cache_dir = ensure_proposals(dataset, prop, tmp_path / "cache", progress=False)
    assert cache_dir == cache_dir_for(prop, tmp_path / "cache")
    assert cache_dir.name.startswith("selective_search-")
    assert len(list(cache_dir.glob("*.npz"))) == len(dataset)
    manifest = read_manifest(cache_dir)
    assert manifest["dataset_fingerprint"] == dataset.fingerprint() and manifest["params"]["ks"] == [50.0]
    boxes, scores = load_proposals(cache_dir, "img/3")
    direct_boxes, direct_scores = SelectiveSearch(strategy="single", ks=[50], min_box_size=4).propose(dataset.load_image(3))
    np.testing.assert_array_equal(boxes, direct_boxes)
    np.testing.assert_array_equal(scores, direct_scores)


def test_interrupted_run_resumes_with_only_the_missing_images(tmp_path):
    dataset = small_dataset(tmp_path)
    first = proposer()
    cache_dir = ensure_proposals(dataset, first, tmp_path / "cache", progress=False, limit=3)  # "interrupted"
    assert first.calls == 3
    done = {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("*.npz")}
    assert len(done) == 3
    # a half-written file from the interrupted run is never taken for a finished one
    leftover = cache_dir / f".{proposal_path(cache_dir, 'img/4').name}.abc.tmp"
    leftover.write_bytes(b"half an npz")
    second = proposer()
    ensure_proposals(dataset, second, tmp_path / "cache", progress=False)
    assert second.calls == 3
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("*.npz") if p.name in done} == done
    assert len(list(cache_dir.glob("*.npz"))) == 6
    assert len(load_proposals(cache_dir, "img/4")[0]) > 0
    third = proposer()
    ensure_proposals(dataset, third, tmp_path / "cache", progress=False)
    assert third.calls == 0


def test_a_cache_of_another_dataset_is_refused(tmp_path):
    ensure_proposals(small_dataset(tmp_path / "a", seed=0), proposer(), tmp_path / "cache", progress=False, limit=1)
    other = small_dataset(tmp_path / "b", count=5, seed=1)
    with pytest.raises(UserError, match="manifest.json.*dataset_fingerprint"):
        ensure_proposals(other, proposer(), tmp_path / "cache", progress=False)


def test_other_parameters_get_another_directory(tmp_path):
    assert cache_dir_for(proposer(), tmp_path) != cache_dir_for(proposer(seed=1), tmp_path)
    assert cache_dir_for(proposer(), tmp_path) == cache_dir_for(proposer(), tmp_path)


def test_a_tampered_manifest_is_refused(tmp_path):
    dataset = small_dataset(tmp_path)
    cache_dir = ensure_proposals(dataset, proposer(), tmp_path / "cache", progress=False, limit=1)
    manifest = (cache_dir / "manifest.json").read_text().replace('"selective_search"', '"multibox"')
    (cache_dir / "manifest.json").write_text(manifest)
    with pytest.raises(UserError, match="method"):
        ensure_proposals(dataset, proposer(), tmp_path / "cache", progress=False)


def test_missing_or_corrupt_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no cached proposals"):
        load_proposals(tmp_path, "nope")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="bad.npz.*not a readable proposal file"):
        load_proposals(tmp_path, "bad")
    with pytest.raises(UserError, match="not a proposal cache"):
        read_manifest(tmp_path)


def test_written_files_round_trip_empty_proposals(tmp_path):
    write_proposals(tmp_path / "x.npz", np.zeros((0, 4), np.float32), np.zeros(0, np.float32), 0.5)
    boxes, scores = load_proposals(tmp_path, "x")
    assert boxes.shape == (0, 4) and scores.shape == (0,)


@pytest.mark.slow
def test_worker_processes_fill_the_cache(tmp_path):
    dataset = small_dataset(tmp_path, count=4)
    cache_dir = ensure_proposals(dataset, proposer(), tmp_path / "cache", workers=2, progress=False)
    assert len(list(cache_dir.glob("*.npz"))) == 4
    direct = SelectiveSearch(strategy="single", ks=[50], min_box_size=4).propose(dataset.load_image(2))
    np.testing.assert_array_equal(load_proposals(cache_dir, "img/2")[0], direct[0])


def test_same_ids_and_sizes_with_other_pixels_is_refused(tmp_path):
    dataset = small_dataset(tmp_path / "a", seed=0)
    ensure_proposals(dataset, proposer(), tmp_path / "cache", progress=False)
    repainted = small_dataset(tmp_path / "a", seed=1)  # regenerated in place: same ids, same sizes, other pixels
    assert repainted.fingerprint() == dataset.fingerprint()
    with pytest.raises(UserError, match="manifest.json.*other image contents"):
        ensure_proposals(repainted, proposer(), tmp_path / "cache", progress=False)
    again = small_dataset(tmp_path / "a", seed=0)  # the same bytes again: the cache is valid
    assert ensure_proposals(again, proposer(), tmp_path / "cache", progress=False).is_dir()


def test_a_manifest_from_before_content_fingerprints_is_still_accepted(tmp_path):
    dataset = small_dataset(tmp_path)
    cache_dir = ensure_proposals(dataset, proposer(), tmp_path / "cache", progress=False, limit=2)
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    del manifest["content_fingerprint"]
    (cache_dir / "manifest.json").write_text(json.dumps(manifest))
    prop = proposer()
    ensure_proposals(dataset, prop, tmp_path / "cache", progress=False)
    assert prop.calls == len(dataset) - 2


def test_two_datasets_racing_into_one_cache_give_one_cache_and_one_clear_error(tmp_path, monkeypatch):
    """Both runs pass the start line together; the exclusively created manifest decides who owns the cache."""
    import detect.proposals.cache as cache

    datasets = [small_dataset(tmp_path / "a", count=3, seed=0), small_dataset(tmp_path / "b", count=4, seed=1)]
    start = threading.Barrier(2)
    original = cache.cache_dir_for

    def cache_dir_after_barrier(prop, root):
        start.wait(timeout=30)
        return original(prop, root)

    monkeypatch.setattr(cache, "cache_dir_for", cache_dir_after_barrier)
    outcomes = [None, None]

    def run(k):
        try:
            outcomes[k] = ensure_proposals(datasets[k], proposer(), tmp_path / "cache", progress=False)
        except UserError as err:
            outcomes[k] = err

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    errors = [o for o in outcomes if isinstance(o, UserError)]
    assert len(errors) == 1 and "manifest.json" in str(errors[0]) and "not" in str(errors[0])
    winner = datasets[[k for k, o in enumerate(outcomes) if not isinstance(o, UserError)][0]]
    (cache_dir,) = (tmp_path / "cache").iterdir()
    assert read_manifest(cache_dir)["dataset_fingerprint"] == winner.fingerprint()
    assert sorted(p.name for p in cache_dir.glob("*.npz")) == sorted(
        proposal_path(cache_dir, r.image_id).name for r in winner.records)
    assert not list(cache_dir.glob(".*"))  # no temporary files left behind


def test_a_truncated_npz_is_a_clear_error_naming_the_file(tmp_path):
    dataset = small_dataset(tmp_path)
    cache_dir = ensure_proposals(dataset, proposer(), tmp_path / "cache", progress=False, limit=1)
    path = proposal_path(cache_dir, "img/0")
    path.write_bytes(path.read_bytes()[:-20])  # 20 bytes short, as a full disk or a killed copy leaves it
    with pytest.raises(UserError, match=r"img%2F0\.npz: not a readable proposal file \(BadZipFile.*delete it"):
        load_proposals(cache_dir, "img/0")


def test_cache_files_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        cache_dir = ensure_proposals(small_dataset(tmp_path), proposer(), tmp_path / "cache", progress=False, limit=1)
    finally:
        os.umask(old)
    for path in [cache_dir / "manifest.json", *cache_dir.glob("*.npz")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_detect_propose_output_is_what_train_and_test_read(tmp_path, monkeypatch):
    """`detect propose --out X` then proposals.cache_dir=X: the cached proposals are used, none recomputed."""
    from detect import cli
    from detect.data.spec import build_dataset
    from detect.engine.detection_config import ProposalConfig
    from detect.engine.detection_data import cached_proposals

    spec = "shapes:10:3:test"
    argv = ["propose", "--data", spec, "--param", "strategy=single", "--param", "min_box_size=8",
            "--out", str(tmp_path / "proposals"), "--workers", "0", "--no-progress"]
    assert cli.main(argv) == 0
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "proposals").rglob("*.npz")}
    assert len(files) == 2
    calls = []
    monkeypatch.setattr(SelectiveSearch, "propose", lambda self, image: calls.append(1) or (_ for _ in ()).throw(
        AssertionError("proposals were computed again")))
    cfg = ProposalConfig(method="selective_search", params={"strategy": "single", "min_box_size": 8},
                         cache_dir=str(tmp_path / "proposals"), workers=0)
    cache_dir = cached_proposals(build_dataset(spec), cfg, progress=False)
    assert calls == [] and set(cache_dir.glob("*.npz")) == set(files)
    assert {p: p.stat().st_mtime_ns for p in files} == files
