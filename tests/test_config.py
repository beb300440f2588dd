"""YAML -> dataclass configs: overrides, type checks, and the closest-key hint for typos."""
from dataclasses import dataclass, field

import pytest

from detect.config import load_config
from detect.errors import ConfigError


@dataclass
class Optim:
    lr: float = 0.01
    momentum: float = 0.9
    steps: list[int] = field(default_factory=lambda: [10, 20])


@dataclass
class Train:
    name: str = "run"
    epochs: int = 1
    amp: bool = True
    mode: str = "fast"
    optim: Optim = field(default_factory=Optim)
    weights: str | None = None

    def validate(self):
        if self.mode not in ("fast", "rcnn"):
            raise ValueError(f"mode must be fast or rcnn, got {self.mode!r}")


def test_yaml_then_overrides_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: voc\noptim:\n  lr: 1e-3\n  steps: [5]\n")
    cfg = load_config(Train, path, ["optim.momentum=0.5", "epochs=3", "optim.steps=[1,2,3]", "weights=null"])
    assert cfg.name == "voc" and cfg.epochs == 3
    assert cfg.optim.lr == pytest.approx(1e-3)  # YAML reads "1e-3" as a string; the float field converts it
    assert cfg.optim.momentum == 0.5 and cfg.optim.steps == [1, 2, 3]
    assert cfg.weights is None


def test_unknown_key_names_the_closest_valid_one(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optim.lrr'.*did you mean 'optim.lr'"):
        load_config(Train, None, ["optim.lrr=0.1"])
    path = tmp_path / "c.yaml"
    path.write_text("epochz: 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'epochz'.*'epochs'"):
        load_config(Train, path)


def test_wrong_types_and_invalid_values_are_errors():
    with pytest.raises(ConfigError, match="epochs must be an integer"):
        load_config(Train, None, ["epochs=two"])
    with pytest.raises(ConfigError, match="amp must be true or false"):
        load_config(Train, None, ["amp=3"])
    with pytest.raises(ConfigError, match="mode must be fast or rcnn"):
        load_config(Train, None, ["mode=yolo"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(Train, None, ["epochs"])


def test_missing_file_and_non_mapping_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Train, tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Train, bad)
