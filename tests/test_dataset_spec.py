"""Dataset spec strings: every form builds the right reader; a bad spec lists the valid forms."""
from pathlib import Path

import pytest

from detect.data.convert import write_coco_json
from detect.data.shapes import write_shapes
from detect.data.spec import build_dataset
from detect.errors import UserError

BCCD = Path(__file__).resolve().parents[2] / "shared/datasets/BCCD"


@pytest.fixture(scope="module")
def shapes_voc(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("spec") / "voc", 10, seed=1, fmt="voc")


def test_voc_with_and_without_split(shapes_voc):
    assert len(build_dataset(f"voc:{shapes_voc}")) == 10
    assert len(build_dataset(f"voc:{shapes_voc}:test")) == 2
    assert build_dataset(f"voc:{shapes_voc}:train").name == f"voc:{shapes_voc}:train"


def test_voc_dirs_with_and_without_id_list(shapes_voc):
    ann, img = shapes_voc / "Annotations", shapes_voc / "JPEGImages"
    assert len(build_dataset(f"voc-dirs:{ann}:{img}")) == 10
    val = build_dataset(f"voc-dirs:{ann}:{img}:{shapes_voc}/ImageSets/Main/val.txt")
    assert val.image_ids == ["shapes_000006", "shapes_000007"]


def test_coco_spec_and_given_classes(shapes_voc, tmp_path):
    json_path = write_coco_json(build_dataset(f"voc:{shapes_voc}"), tmp_path / "all.json")
    dataset = build_dataset(f"coco:{json_path}:{shapes_voc}/JPEGImages", classes=["triangle", "circle", "rectangle"])
    assert dataset.classes == ["triangle", "circle", "rectangle"] and len(dataset) == 10


@pytest.mark.parametrize("spec, size, first, seed", [
    ("shapes:10", 10, "shapes_000000", 0),
    ("shapes:10:3", 10, "shapes_000000", 3),
    ("shapes:10:test", 2, "shapes_000008", 0),
    ("shapes:10:3:val", 2, "shapes_000006", 3),
])
def test_shapes_count_seed_and_split(spec, size, first, seed):
    dataset = build_dataset(spec)
    assert len(dataset) == size and dataset.image_ids[0] == first and dataset.seed == seed


@pytest.mark.skipif(not BCCD.is_dir(), reason="../shared/datasets/BCCD not present")
def test_bccd_spec():
    assert len(build_dataset(f"voc:{BCCD}:val")) == 87


@pytest.mark.parametrize("spec", ["pascal:/x", "voc", "voc:", "coco:only.json", "voc-dirs:a", "shapes:", "",
                                  "shapes:10:1:train:extra"])
def test_unknown_or_incomplete_spec_lists_the_valid_forms(spec):
    with pytest.raises(UserError, match=r"invalid dataset spec .*valid forms: voc:ROOT\[:SPLIT\], voc-dirs:.*shapes:N"):
        build_dataset(spec)


@pytest.mark.parametrize("spec, message", [
    ("shapes:ten", r"N must be a positive integer, got 'ten'"),
    ("shapes:0", r"N must be a positive integer"),
    ("shapes:10:1:holdout", r"unknown shapes split 'holdout' \(valid: all, train, val, test, trainval\)"),
])
def test_bad_shapes_arguments(spec, message):
    with pytest.raises(UserError, match=message):
        build_dataset(spec)


def test_shapes_refuse_a_different_class_list():
    with pytest.raises(UserError, match=r"the shapes classes are"):
        build_dataset("shapes:4", classes=["cat"])


def test_missing_voc_root_is_a_dataset_error(tmp_path):
    with pytest.raises(UserError, match=r"nowhere: VOC dataset folder not found"):
        build_dataset(f"voc:{tmp_path}/nowhere")
