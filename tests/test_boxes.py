"""Box format conversions round-trip, and VOC's 1-based inclusive pixels map to ours exactly."""
import numpy as np
import pytest
import torch

from detect.boxes import convert_boxes


def test_every_format_round_trips_through_ours():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.5, 2.25, 7.5, 3.0]])
    for fmt in ("xyxy", "xywh", "cxcywh", "voc"):
        torch.testing.assert_close(convert_boxes(convert_boxes(boxes, "xyxy", fmt), fmt, "xyxy"), boxes)
    torch.testing.assert_close(convert_boxes(boxes, "xyxy", "xywh"), torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.5, 2.25, 2.0, 0.75]]))
    torch.testing.assert_close(convert_boxes(boxes, "xyxy", "cxcywh")[1], torch.tensor([6.5, 2.625, 2.0, 0.75]))


def test_voc_box_is_ours_shifted_on_the_top_left_corner_only():
    voc = np.array([[1, 1, 640, 480], [48, 240, 195, 371]], dtype=np.float32)  # VOC xmin, ymin, xmax, ymax
    ours = convert_boxes(voc, "voc", "xyxy")
    assert isinstance(ours, np.ndarray)
    np.testing.assert_array_equal(ours, [[0, 0, 640, 480], [47, 239, 195, 371]])
    # COCO's [x, y, w, h] of a VOC box has w = xmax - xmin + 1
    np.testing.assert_array_equal(convert_boxes(voc, "voc", "xywh")[1], [47, 239, 148, 132])


def test_unknown_format_is_named():
    with pytest.raises(ValueError, match="unknown box format 'yxyx'"):
        convert_boxes(torch.zeros(1, 4), "yxyx", "xyxy")
