"""Config inheritance (`base:`), every shipped config loading, and `--print-config`."""
from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from detect.cli import main as cli
from detect.config import field_meanings, load_config
from detect.engine.classification_config import PretrainConfig
from detect.engine.detection_config import DetectionConfig
from detect.engine.multibox_trainer import MultiBoxTrainConfig
from detect.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class Inner:
    a: int = 1  # an integer
    b: list[int] = field(default_factory=lambda: [1, 2])  # a list
    extra: dict = field(default_factory=dict)  # a mapping


@dataclass
class Outer:
    name: str = "x"  # a name
    inner: Inner = field(default_factory=Inner)  # a section


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_base_chain_relative_to_the_including_file_deep_merges_mappings(tmp_path):
    write(tmp_path / "bases" / "root.yaml", "name: root\ninner: {a: 5, extra: {p: 1, q: {r: 2, s: 3}}}\n")
    write(tmp_path / "bases" / "mid.yaml", "base: root.yaml\ninner: {extra: {q: {s: 4}, t: 5}}\n")
    child = write(tmp_path / "child.yaml", "base: bases/mid.yaml\nname: child\n")
    cfg = load_config(Outer, child, ["inner.extra.p=9"])
    assert cfg.name == "child" and cfg.inner.a == 5
    assert cfg.inner.extra == {"p": 9, "q": {"r": 2, "s": 4}, "t": 5}


def test_lists_and_scalars_are_replaced_not_merged(tmp_path):
    write(tmp_path / "base.yaml", "inner: {b: [7, 8, 9], extra: {k: [1, 2]}}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\ninner: {b: [3], extra: {k: null}}\n")
    cfg = load_config(Outer, child)
    assert cfg.inner.b == [3] and cfg.inner.extra == {"k": None}
    # a child's null replaces a whole base mapping; the dataclass default then applies
    write(tmp_path / "c2.yaml", "base: base.yaml\ninner: {extra: {}}\n")
    assert load_config(Outer, tmp_path / "c2.yaml").inner.extra == {"k": [1, 2]}  # {} merges nothing


def test_a_cycle_is_an_error_naming_the_files(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: sub/c.yaml\n")
    write(tmp_path / "sub" / "c.yaml", "base: ../a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml"):
        load_config(Outer, tmp_path / "a.yaml")
    write(tmp_path / "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(Outer, tmp_path / "self.yaml")


def test_a_missing_or_malformed_base_is_an_error_naming_the_including_file(tmp_path):
    child = write(tmp_path / "child.yaml", "base: nowhere.yaml\nname: c\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: base file .*nowhere\.yaml not found"):
        load_config(Outer, child)
    write(tmp_path / "list.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match="base must be the path"):
        load_config(Outer, tmp_path / "list.yaml")


def test_an_unknown_key_in_a_base_names_the_chain(tmp_path):
    write(tmp_path / "base.yaml", "inner: {aa: 1}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml \(base: .*base\.yaml\): unknown key 'inner\.aa'.*'inner\.a'"):
        load_config(Outer, child)


def config_class(path: Path):
    """Which command a file in configs/ is for, by its name (detection configs are the rest)."""
    if path.name.startswith("pretrain_"):
        return PretrainConfig
    if path.name.startswith("multibox_"):
        return MultiBoxTrainConfig
    return DetectionConfig


ALL_CONFIGS = sorted(CONFIGS.rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[str(p.relative_to(CONFIGS)) for p in ALL_CONFIGS])
def test_every_shipped_config_loads_and_validates(path):
    cfg = load_config(config_class(path), path)  # validate() runs inside
    assert dataclasses.is_dataclass(cfg)


def test_the_detector_presets_are_short_children_of_the_base_files():
    presets = sorted(CONFIGS.glob("*_*_fast.yaml")) + sorted(CONFIGS.glob("*_*_rcnn.yaml"))
    assert len(presets) == 24
    for path in presets:
        dataset, backbone, mode = path.stem.split("_")
        cfg = load_config(DetectionConfig, path)
        assert (cfg.model.backbone, cfg.model.mode, cfg.train.out_dir) == (backbone, mode, f"runs/{path.stem}")
        assert path.read_text().startswith("# detect train") and len(path.read_text().splitlines()) <= 10


def documented_keys(cls, prefix=""):
    """Every key of a config class, nested sections (also optional ones) included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        yield cls, f.name, prefix + f.name
        for tp in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(tp):
                yield from documented_keys(tp, prefix + f.name + ".")


@pytest.mark.parametrize("cls", [DetectionConfig, PretrainConfig, MultiBoxTrainConfig])
def test_every_config_field_has_a_meaning(cls):
    missing = [key for owner, name, key in documented_keys(cls) if not field_meanings(owner).get(name)]
    assert not missing, f"add a trailing `# meaning` to these fields: {missing}"


PRINTED = [
    (["train", "--config", str(CONFIGS / "voc0712_googlenet_rcnn.yaml"), "train.steps=7", "model.sampler={batch_size: 32}"],
     DetectionConfig),
    (["test", "--config", str(CONFIGS / "bccd_thin_cpu.yaml"), "test.nms_iou=0.4"], DetectionConfig),
    (["pretrain", "--config", str(CONFIGS / "pretrain_tiny_cpu.yaml"), "optim.lr=1e-3"], PretrainConfig),
    (["train-multibox", "--config", str(CONFIGS / "multibox_shapes.yaml"), "--device", "cpu"], MultiBoxTrainConfig),
    (["demo", "--images", "30", "train.steps=3"], DetectionConfig),
]


@pytest.mark.parametrize("argv,cls", PRINTED, ids=[a[0] for a, _ in PRINTED])
def test_print_config_shows_the_effective_config_with_meanings_and_loads_back(tmp_path, capsys, monkeypatch, argv, cls):
    monkeypatch.chdir(tmp_path)  # nothing may be written: the demo's outputs would land here
    assert cli([*argv, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [], "--print-config did something besides printing"
    saved = write(tmp_path / "printed.yaml", printed)
    reloaded = load_config(cls, saved)
    expected_args = [a for a in argv[1:] if not a.startswith("--") and "=" in a]
    if argv[0] == "demo":
        assert reloaded.data.train == ["shapes:30:0:train"] and reloaded.train.steps == 3
    else:
        config = argv[argv.index("--config") + 1]
        device = {"train-multibox": ["run.device=cpu"]}.get(argv[0], [])
        assert reloaded == load_config(cls, config, expected_args + device)
    for line in printed.splitlines():
        if line.startswith("#"):
            continue
        assert re.match(r"^( *)[a-z_0-9]+:.*  # \S", line), f"a key without its meaning: {line!r}"
    assert reloaded.__class__ is cls
