import math

import pytest
import torch

from ssd_lite.boxes import cxcywh_to_xyxy
from ssd_lite.priors import (SSD300_ASPECT_RATIOS, SSD300_FEATURE_MAP_SIZES, boxes_per_location,
                             cell_default_boxes, default_boxes, prior_scales, ssd300_default_boxes)


def test_prior_scales_follow_the_paper():
    scales = prior_scales(6, 0.2, 0.9)
    assert len(scales) == 7
    assert scales[0] == pytest.approx(0.2) and scales[5] == pytest.approx(0.9)
    # evenly spaced: s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1)
    for k in range(1, 8):
        assert scales[k - 1] == pytest.approx(0.2 + 0.7 / 5 * (k - 1))


def test_prior_scales_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_feature_maps"):
        prior_scales(0)
    with pytest.raises(ValueError, match="s_min"):
        prior_scales(3, 0.9, 0.2)


def test_cell_boxes_keep_area_and_ratio():
    boxes = cell_default_boxes(0.5, 0.5, 0.3, 0.5, (2, 3))
    assert boxes.shape == (boxes_per_location((2, 3)), 4) == (6, 4)
    assert torch.allclose(boxes[:, :2], torch.full((6, 2), 0.5))
    w, h = boxes[:, 2], boxes[:, 3]
    extra = math.sqrt(0.3 * 0.5)
    assert torch.allclose(w * h, torch.tensor([0.09, extra ** 2, 0.09, 0.09, 0.09, 0.09]))
    assert torch.allclose(w / h, torch.tensor([1, 1, 2, 0.5, 3, 1 / 3]))


def test_ssd300_has_8732_default_boxes():
    priors = ssd300_default_boxes()
    assert priors.shape == (8732, 4)
    per_map = [f * f * boxes_per_location(r) for f, r in zip(SSD300_FEATURE_MAP_SIZES, SSD300_ASPECT_RATIOS)]
    assert per_map == [5776, 2166, 600, 150, 36, 4]
    assert torch.all(priors[:, :2] > 0) and torch.all(priors[:, :2] < 1)


def test_default_boxes_order_is_map_row_cell():
    priors = default_boxes([2, 1], [0.3, 0.6, 0.9], [(2,), (2,)])
    assert priors.shape == (2 * 2 * 4 + 1 * 4, 4)
    # first map: cells (row 0, col 0), (0, 1), (1, 0), (1, 1); four boxes each
    centres = priors[:16:4, :2]
    assert torch.allclose(centres, torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]))
    assert torch.allclose(priors[16:, :2], torch.full((4, 2), 0.5))
    assert torch.allclose(priors[0:4], cell_default_boxes(0.25, 0.25, 0.3, 0.6, (2,)))


def test_clip_keeps_boxes_inside_the_image():
    priors = default_boxes([3], [0.9, 1.0], [(2, 3)], clip=True)
    corners = cxcywh_to_xyxy(priors)
    assert corners.min() >= 0 and corners.max() <= 1


def test_default_boxes_checks_argument_lengths():
    with pytest.raises(ValueError, match="scales"):
        default_boxes([4, 2], [0.2, 0.5], [(2,), (2,)])
    with pytest.raises(ValueError, match="aspect ratios"):
        default_boxes([4, 2], [0.2, 0.5, 0.8], [(2,)])
