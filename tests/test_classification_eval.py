"""Classification evaluation: top-k error, the VGG paper's test protocols, ensembles, the table."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import backbones
from detect.engine.classifier_evaluation import dense_model_for
from detect.evaluation.classification import (PROTOCOLS, ClassificationEvalConfig, centre_crop, dense_posterior,
                                              evaluation_table, format_table, grid_crops, image_posteriors,
                                              topk_errors)


def test_topk_errors_count_the_true_class_among_the_k_best():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.05, 0.03, 0.02],   # label 0: top-1 hit
                          [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],   # label 1: top-1 miss, top-5 hit
                          [0.5, 0.3, 0.1, 0.05, 0.03, 0.02],   # label 5: misses both
                          [0.02, 0.03, 0.05, 0.1, 0.3, 0.5]])  # label 5: top-1 hit
    errors = topk_errors(probs, torch.tensor([0, 1, 5, 5]))
    assert errors == {"top1_error": pytest.approx(50.0), "top5_error": pytest.approx(25.0)}
    # fewer than five classes: top-5 means all of them, so top-5 error is 0
    assert topk_errors(probs[:, :3], torch.tensor([2, 2, 2, 2]))["top5_error"] == 0.0


def test_grid_crops_cover_the_corners_and_flip():
    image = torch.arange(3 * 10 * 14, dtype=torch.float32).reshape(3, 10, 14)
    crops = grid_crops(image, 6, grid=5)
    assert crops.shape == (50, 3, 6, 6)
    assert torch.equal(crops[0], image[:, :6, :6])
    assert torch.equal(crops[24], image[:, -6:, -6:])
    assert torch.equal(crops[25:], crops[:25].flip(-1))
    assert torch.equal(centre_crop(image, 6), image[:, 2:8, 4:10])
    assert centre_crop(image, 12).shape == (3, 12, 12)  # padded where the image is smaller


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return backbones.build_backbone("resnet18", num_classes=7, width=0.125).eval()


def test_protocols_average_the_right_posteriors(resnet):
    torch.manual_seed(1)
    scaled = {32: torch.rand(3, 32, 44), 40: torch.rand(3, 40, 55)}
    cfg = ClassificationEvalConfig(scale=40, scales=[32, 40], grid=3, crop_batch=7)
    out = image_posteriors(resnet, dense_model_for(resnet), scaled, 24, cfg)
    assert list(out) == list(PROTOCOLS)
    with torch.no_grad():
        def post(x):
            return F.softmax(resnet(x), dim=1)
        single = post(centre_crop(scaled[40], 24)[None])[0]
        multi_scale = torch.stack([post(centre_crop(scaled[q], 24)[None])[0] for q in (32, 40)]).mean(0)
        multi_crop = torch.cat([post(grid_crops(scaled[q], 24, 3)) for q in (32, 40)]).mean(0)
        dense = torch.stack([(post(scaled[q][None]) + post(scaled[q].flip(-1)[None]))[0] / 2 for q in (32, 40)]).mean(0)
    torch.testing.assert_close(out["single-scale"], single)
    torch.testing.assert_close(out["multi-scale"], multi_scale)
    torch.testing.assert_close(out["multi-crop"], multi_crop)
    torch.testing.assert_close(out["dense"], dense)
    torch.testing.assert_close(out["dense+multi-crop"], (dense + multi_crop) / 2)
    assert all(abs(p.sum().item() - 1) < 1e-5 for p in out.values())


def test_vgg_dense_evaluation_uses_the_fully_convolutional_net():
    torch.manual_seed(0)
    vgg = backbones.build_backbone("vgg11", num_classes=5, width=1 / 32, dropout=0.0).eval()
    dense = dense_model_for(vgg)
    assert dense is not vgg
    image = torch.rand(3, 224, 256)
    with torch.no_grad():
        assert dense(image[None]).shape == (1, 5, 1, 2)  # a 1x2 class score map at 224x256
        # at exactly 224 the score map is 1x1 and must equal the FC net's output
        crop = image[:, :, :224]
        torch.testing.assert_close(dense(crop[None])[:, :, 0, 0], vgg(crop[None]), rtol=1e-4, atol=1e-5)
        expected = torch.stack([F.softmax(dense(x[None]).mean((2, 3)), 1)[0] for x in (image, image.flip(-1))]).mean(0)
        torch.testing.assert_close(dense_posterior(dense, image), expected)


def test_ensemble_averages_posteriors_and_the_table_lists_every_protocol():
    labels = torch.tensor([0, 1])
    a = torch.tensor([[0.6, 0.4], [0.6, 0.4]])  # right on image 0 only
    b = torch.tensor([[0.45, 0.55], [0.1, 0.9]])  # right on image 1 only
    per_model = {"a.pth": {p: a for p in PROTOCOLS}, "b.pth": {p: b for p in PROTOCOLS}}
    rows = evaluation_table(per_model, labels)
    assert len(rows) == 3 * len(PROTOCOLS)
    by_model = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append(r)
    assert [r["protocol"] for r in by_model["ensemble of 2"]] == list(PROTOCOLS)
    assert all(r["top1_error"] == 50.0 for r in by_model["a.pth"] + by_model["b.pth"])
    assert all(r["top1_error"] == 0.0 for r in by_model["ensemble of 2"])  # (0.525, 0.475), (0.35, 0.65)
    table = format_table(rows)
    assert all(p in table for p in PROTOCOLS) and "ensemble of 2" in table and "top-5 err %" in table


def test_unknown_protocol_is_rejected():
    from detect.config import load_config
    from detect.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown protocol"):
        load_config(ClassificationEvalConfig, overrides=["protocols=[dense,ten-crop]"])
