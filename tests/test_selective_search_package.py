"""The `selectivesearch` package behind our proposer interface: same regions, our box convention."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import selectivesearch

from detect.errors import UserError
from detect.proposals import build_proposer

from test_selective_search import rectangles_image


@pytest.fixture(autouse=True)
def quiet_package():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the package's LBP-on-floats warning
        yield


def test_boxes_are_the_package_rects_in_its_order_without_duplicates():
    image = rectangles_image(noise=20)
    boxes, scores = build_proposer("selectivesearch", scale=50, min_size=50, min_box_size=0).propose(image)
    _, regions = selectivesearch.selective_search(image, scale=50, sigma=0.8, min_size=50)
    expected = []
    for region in regions:
        x, y, w, h = region["rect"]
        box = [x, y, x + w + 1, y + h + 1]  # the rect spans inclusive pixels
        if box not in expected:
            expected.append(box)
    assert boxes.tolist() == expected
    assert boxes.dtype == np.float32 and (np.diff(scores) < 0).all()
    assert (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 100).all()


def test_grayscale_input_and_small_box_filter():
    boxes, _ = build_proposer("selectivesearch", scale=50, min_size=50, min_box_size=25).propose(
        rectangles_image()[:, :, 0])
    assert len(boxes) > 0
    assert ((boxes[:, 2] - boxes[:, 0]) >= 25).all() and ((boxes[:, 3] - boxes[:, 1]) >= 25).all()


def test_bad_parameters_are_clear_errors():
    with pytest.raises(UserError, match="scale > 0"):
        build_proposer("selectivesearch", scale=0)
    with pytest.raises(UserError, match="no parameter 'ks'"):
        build_proposer("selectivesearch", ks=[100])
