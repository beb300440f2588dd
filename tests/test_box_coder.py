"""The localisation head's box parametrisation (R-CNN / VGG appendix A) and its inverse."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from detect.models.box_coder import BoxCoder


def test_encode_matches_the_rcnn_formulas_divided_by_the_stds():
    proposal = torch.tensor([[10.0, 20.0, 50.0, 100.0]])  # centre (30, 60), size 40 x 80
    gt = torch.tensor([[14.0, 12.0, 74.0, 92.0]])  # centre (44, 52), size 60 x 80
    deltas = BoxCoder(stds=(0.1, 0.1, 0.2, 0.2)).encode(gt, proposal)
    expected = torch.tensor([[(44 - 30) / 40 / 0.1, (52 - 60) / 80 / 0.1, math.log(60 / 40) / 0.2, math.log(1.0) / 0.2]])
    torch.testing.assert_close(deltas, expected)


def test_unit_stds_give_the_raw_parametrisation():
    proposal = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    gt = torch.tensor([[5.0, 0.0, 15.0, 20.0]])
    torch.testing.assert_close(BoxCoder(stds=(1, 1, 1, 1)).encode(gt, proposal),
                               torch.tensor([[0.5, 0.5, 0.0, math.log(2.0)]]))


def boxes(draw_x, draw_y, draw_w, draw_h):
    return torch.tensor([[draw_x, draw_y, draw_x + draw_w, draw_y + draw_h]], dtype=torch.float64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.floats(0, 500)] * 2, *[st.floats(1, 300)] * 2), min_size=1, max_size=8),
       st.lists(st.tuples(*[st.floats(0, 500)] * 2, *[st.floats(1, 300)] * 2), min_size=1, max_size=8))
def test_decode_inverts_encode(gts, props):
    n = min(len(gts), len(props))
    gt = torch.cat([boxes(*g) for g in gts[:n]])
    proposals = torch.cat([boxes(*p) for p in props[:n]])
    coder = BoxCoder(max_log_scale=math.log(1e6))
    decoded = coder.decode(coder.encode(gt, proposals), proposals)
    assert decoded.shape == (n, 1, 4)
    torch.testing.assert_close(decoded[:, 0], gt, rtol=1e-9, atol=1e-6)


def test_per_class_decode_applies_each_class_deltas_to_the_same_proposal():
    coder = BoxCoder()
    proposals = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 25.0, 45.0]])
    per_class = torch.zeros(2, 3 * 4)
    per_class[:, 4] = 1.0  # class 2 shifts right by 0.1 widths
    decoded = coder.decode(per_class, proposals)
    assert decoded.shape == (2, 3, 4)
    torch.testing.assert_close(decoded[:, 0], proposals)
    torch.testing.assert_close(decoded[:, 1], proposals + torch.tensor([[1.0, 0, 1.0, 0], [2.0, 0, 2.0, 0]]))


def test_empty_inputs_give_empty_outputs():
    coder = BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(0, 8), torch.zeros(0, 4)).shape == (0, 2, 4)


def test_bad_stds_are_rejected():
    import pytest

    with pytest.raises(ValueError, match="stds"):
        BoxCoder(stds=(0.1, 0.1, 0.0, 0.2))
