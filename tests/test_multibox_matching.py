"""MultiBox matching cost, bipartite matching and loss against cases computed by hand."""
import math

import pytest
import torch

from detect.proposals.multibox import bipartite_match, match_cost, multibox_loss


def test_match_cost_is_half_alpha_squared_distance_minus_logit():
    locations = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    logits = torch.tensor([0.0, 2.0])
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 1.0, 0.5]])
    cost = match_cost(locations, logits, gt, alpha=0.3)
    # pred 0 vs gt 0: 0.15 * (0.25 + 0.25) - 0 = 0.075 ; pred 0 vs gt 1: 0.15 * 0.25 = 0.0375
    # pred 1 vs gt 0: 0 - 2 = -2 ; pred 1 vs gt 1: 0.15 * 0.25 - 2 = -1.9625
    expected = torch.tensor([[0.075, 0.0375], [-2.0, -1.9625]])
    assert torch.allclose(cost, expected, atol=1e-6)


def test_bipartite_matching_is_optimal_where_greedy_is_not():
    # Greedy takes the cheapest pair (0,0)=1 first and is left with (2,1)=5: total 6.
    # The optimum pairs (0,1)=2 and (1,0)=2: total 4.
    cost = torch.tensor([[1.0, 2.0], [2.0, 100.0], [5.0, 5.0]])
    rows, cols = bipartite_match(cost)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]


def test_matching_with_more_boxes_than_predictions_and_with_none():
    rows, cols = bipartite_match(torch.tensor([[3.0, 1.0, 2.0]]))
    assert rows.tolist() == [0] and cols.tolist() == [1]
    rows, cols = bipartite_match(torch.zeros(4, 0))
    assert rows.numel() == 0 and cols.numel() == 0


def test_confidence_decides_between_equally_close_predictions():
    locations = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]])
    gt = torch.tensor([[0.1, 0.1, 0.6, 0.5]])
    rows, _ = bipartite_match(match_cost(locations, torch.tensor([1.0, 3.0]), gt, alpha=0.3))
    assert rows.tolist() == [1]


def test_loss_on_a_hand_computed_image():
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.6, 0.6]]], requires_grad=True)
    logits = torch.zeros(1, 2, requires_grad=True)
    gt = [torch.tensor([[0.2, 0.2, 0.5, 0.6]])]
    # costs: pred 0: 0.15 * (0.04 + 0.04 + 0.25 + 0.16) = 0.0735; pred 1: 0.15 * 0.01 = 0.0015 -> pred 1
    out = multibox_loss(boxes, logits, gt, alpha=0.3)
    assert out["loc"].item() == pytest.approx(0.0015, abs=1e-7)
    assert out["conf"].item() == pytest.approx(2 * math.log(2), abs=1e-6)  # BCE(0->0) + BCE(0->1)
    assert out["loss"].item() == pytest.approx(0.0015 + 2 * math.log(2), abs=1e-6)
    assert out["matched"].item() == 1
    out["loss"].backward()
    # dL/dlogit = sigmoid(logit) - target; dL/dl_1 = alpha * (l_1 - g), unmatched box gets no gradient
    assert torch.allclose(logits.grad, torch.tensor([[0.5, -0.5]]))
    assert torch.allclose(boxes.grad, torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.03, 0.0]]]), atol=1e-7)


def test_loss_averages_over_images_and_an_empty_image_wants_all_confidences_zero():
    boxes = torch.tensor([[[0.0, 0.0, 0.5, 0.5]], [[0.0, 0.0, 0.5, 0.5]]])
    logits = torch.tensor([[0.0], [math.log(3.0)]])  # sigmoid = 0.75
    gt = [torch.tensor([[0.0, 0.0, 0.5, 0.5]]), torch.zeros(0, 4)]
    out = multibox_loss(boxes, logits, gt, alpha=0.3)
    # image 0: matched, exact box: loc 0, BCE(0 -> 1) = log 2; image 1: BCE(log 3 -> 0) = -log(0.25)
    assert out["loc"].item() == pytest.approx(0.0)
    assert out["conf"].item() == pytest.approx((math.log(2) + math.log(4)) / 2, abs=1e-6)
    assert out["matched"].item() == pytest.approx(0.5)


def test_matching_to_priors_ignores_the_predicted_locations():
    boxes = torch.tensor([[[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.4, 0.4]]])
    logits = torch.zeros(1, 2)
    priors = torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.5, 0.5, 1.0, 1.0]])
    gt = [torch.tensor([[0.0, 0.0, 0.4, 0.4]])]
    # by predictions, box 1 sits on the gt (loc 0); by priors, prior 0 does, so box 0 is matched:
    # loc = 0.15 * (0.25 + 0.25 + 0.36 + 0.36) = 0.183
    assert multibox_loss(boxes, logits, gt, 0.3)["loc"].item() == pytest.approx(0.0)
    assert multibox_loss(boxes, logits, gt, 0.3, match_locations=priors)["loc"].item() == pytest.approx(0.183)
