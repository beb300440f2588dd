"""Checkpoints: atomic writes, weights_only loading, and RNG states that make a resume exact."""
import random

import numpy as np
import pytest
import torch

from detect.errors import UserError
from detect.utils.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from detect.utils.files import atomic_write_bytes


def test_round_trip_with_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ckpt.pth", {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                                   "step": 7, "config": {"lr": 0.1, "name": "x"}})
    state = load_checkpoint(path)
    assert state["step"] == 7 and state["config"]["name"] == "x"
    assert torch.equal(state["model"]["weight"], model.weight.detach())
    assert not list(tmp_path.glob(".*.tmp"))


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(path, {"step": 1})

    def explode(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write_bytes(path, explode)
    assert load_checkpoint(path)["step"] == 1
    assert not list(tmp_path.glob(".*.tmp"))
    assert latest_checkpoint(tmp_path) == path


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.pth: not a readable checkpoint"):
        load_checkpoint(bad)


def test_rng_state_restores_every_generator(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    random.random(), np.random.randn(), torch.randn(1)  # advance them
    path = save_checkpoint(tmp_path / "rng.pth", {"rng": rng_state()})
    expected = (random.random(), np.random.randn(3), torch.randn(3))
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    set_rng_state(load_checkpoint(path)["rng"])
    got = (random.random(), np.random.randn(3), torch.randn(3))
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])
    assert torch.equal(got[2], expected[2])
