"""Truncated SVD of the head's fc layers (Fast R-CNN §3.1): exact at full rank, closer as the rank
grows, applied by load_detector / the Predictor (test.svd_rank) and baked into `detect export`."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from detect.cli import main as cli
from detect.errors import UserError
from detect.models.exportable import ExportableDetector
from detect.models.truncated_svd import apply_truncated_svd, factorise_linear

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def vgg_like_head(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(1), nn.Linear(8 * 3 * 3, 48), nn.ReLU(), nn.Linear(48, 40), nn.ReLU())


def test_factorised_linear_is_two_linears_exact_at_full_rank():
    torch.manual_seed(0)
    linear = nn.Linear(60, 24)
    x = torch.randn(32, 60)
    full = factorise_linear(linear, 24)
    assert [type(m) for m in full] == [nn.Linear, nn.Linear] and full[0].bias is None
    assert (full[0].in_features, full[0].out_features, full[1].out_features) == (60, 24, 24)
    torch.testing.assert_close(full(x), linear(x), atol=1e-5, rtol=1e-5)
    assert factorise_linear(linear, 500)[0].out_features == 24  # capped at min(u, v)


def test_head_error_shrinks_as_rank_grows_and_vanishes_at_full_rank():
    x = torch.randn(64, 8, 3, 3)
    reference = vgg_like_head()(x)
    errors = []
    for rank in (2, 8, 16, 32, 48):
        head = vgg_like_head()
        changed = apply_truncated_svd(head, rank)
        assert changed == {"fc6": (min(rank, 48), 48, 72), "fc7": (min(rank, 40), 40, 48)}
        errors.append((head(x) - reference).abs().max().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5 and errors[0] > 1e-2
    head = vgg_like_head()
    assert list(apply_truncated_svd(head, {"fc6": 4})) == ["fc6"] and isinstance(head[3], nn.Linear)
    with pytest.raises(ValueError, match="fc8.*fc6, fc7"):
        apply_truncated_svd(vgg_like_head(), {"fc8": 4})


def test_predictor_and_export_apply_it(bccd_checkpoint, tmp_path):
    from detect import Predictor

    ort = pytest.importorskip("onnxruntime")
    checkpoint, _, images = bccd_checkpoint
    plain, full, thin = (Predictor(checkpoint, device="cpu", svd_rank=r) for r in (None, 10_000, 2))
    assert isinstance(full.model.regions.head[2], nn.Sequential) and full.cfg.test.svd_rank == 10_000
    image = np.asarray(Image.open(images[0]).convert("RGB"))
    proposals = plain.proposals_of(image)
    expected = plain(images[0], proposals=proposals.numpy())
    same = full(images[0], proposals=proposals.numpy())
    np.testing.assert_array_equal(same["labels"], expected["labels"])
    np.testing.assert_allclose(same["boxes"], expected["boxes"], atol=1e-3)
    np.testing.assert_allclose(same["scores"], expected["scores"], atol=1e-5)
    coarse = thin(images[0], proposals=proposals.numpy())["scores"]
    assert len(coarse) != len(expected["scores"]) or not np.allclose(coarse, expected["scores"], atol=1e-3)

    out = tmp_path / "d.onnx"
    assert cli(["export", "--checkpoint", str(checkpoint), "--format", "onnx", "--out", str(out), "--svd-rank", "2"]) == 0
    assert json.loads((tmp_path / "d.onnx.json").read_text())["svd_rank"] == 2
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255.0)
    scores, _ = session.run(None, {"image": tensor.numpy(), "proposals": proposals.numpy()})
    with torch.no_grad():
        wanted, _ = ExportableDetector(thin.model)(tensor, proposals)
    np.testing.assert_allclose(scores, wanted.numpy(), atol=1e-5)
    with pytest.raises(UserError, match="fc9"):
        Predictor(checkpoint, device="cpu", svd_rank={"fc9": 3})
