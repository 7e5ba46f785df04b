import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from ssd_lite.boxes import cxcywh_to_xyxy
from ssd_lite.priors import (SSD300_ASPECT_RATIOS, SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_STEPS,
                             boxes_per_location, cell_default_boxes, default_boxes, prior_scales, ssd300_default_boxes)


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
    # On the step grid the centres start inside the image but run up to (10 - 0.5) * 32 = 304 px (conv8_2).
    assert torch.all(priors[:, :2] > 0) and torch.all(priors[:, :2] <= 304 / 300 + 1e-6)


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


# ---------------------------------------------------------------- cross-check: torchvision's DefaultBoxGenerator

def torchvision_default_boxes(feature_map_sizes, scales, aspect_ratios, steps=None, image_size=300):
    """torchvision's default boxes for square maps, without clipping, back in normalised xyxy.

    DefaultBoxGenerator returns, per image of an ImageList, (P, 4) pixel xyxy boxes for the batch's size.
    """
    generator = DefaultBoxGenerator([list(r) for r in aspect_ratios], scales=list(scales),
                                    steps=None if steps is None else list(steps), clip=False)
    images = ImageList(torch.zeros(1, 3, image_size, image_size), [(image_size, image_size)])
    feature_maps = [torch.zeros(1, 8, f, f) for f in feature_map_sizes]
    (boxes,) = generator(images, feature_maps)
    assert generator.num_anchors_per_location() == [boxes_per_location(r) for r in aspect_ratios]
    return boxes / image_size


@pytest.mark.parametrize("feature_map_sizes, scales, aspect_ratios", [
    ((16, 8, 4, 2), prior_scales(4, 0.1, 0.7), [(2, 3)] * 4),               # the small model's maps, more ratios
    ((16, 8, 4, 2), prior_scales(4, 0.15, 0.75), [(2,)] * 4),               # the small model's default
    ((8, 4, 2, 1), prior_scales(4), ((2,), (2, 3), (2, 3), (2,))),
    (SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_ASPECT_RATIOS),        # SSD300 with steps=None
    ((3, 1), (0.3, 0.7, 0.9), [(), (2,)]),                                  # a map with ratio 1 only
])
def test_default_boxes_match_torchvision_box_for_box(feature_map_sizes, scales, aspect_ratios):
    ours = cxcywh_to_xyxy(default_boxes(feature_map_sizes, scales, aspect_ratios))
    theirs = torchvision_default_boxes(feature_map_sizes, scales, aspect_ratios)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # same boxes in the same order


# SSD512 as in the Caffe scripts: conv4_3 at 0.07 by hand, then 0.15 to 0.9 in steps of 0.15.
SSD512_MAPS = (64, 32, 16, 8, 4, 2, 1)
SSD512_SCALES = (0.07, 0.15, 0.30, 0.45, 0.60, 0.75, 0.90, 1.05)
SSD512_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD512_STEPS = (8, 16, 32, 64, 128, 256, 512)


@pytest.mark.parametrize("feature_map_sizes, scales, aspect_ratios, steps, image_size", [
    (SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_ASPECT_RATIOS, SSD300_STEPS, 300),   # the Caffe SSD300
    (SSD512_MAPS, SSD512_SCALES, SSD512_RATIOS, SSD512_STEPS, 512),
    ((16, 8, 4, 2), prior_scales(4, 0.15, 0.75), [(2,)] * 4, (8, 16, 32, 64), 128),       # the small model
    ((10, 5), (0.2, 0.5, 0.8), [(2, 3), (2,)], (30, 64), 320),                            # steps 300 / f would not be
    ((5, 3), (0.2, 0.5, 0.8), [(3,), ()], (7.5, 12.5), 40),                               # steps that are not whole
])
def test_default_boxes_with_steps_match_torchvision_box_for_box(feature_map_sizes, scales, aspect_ratios, steps,
                                                                image_size):
    ours = cxcywh_to_xyxy(default_boxes(feature_map_sizes, scales, aspect_ratios, steps=steps, image_size=image_size))
    theirs = torchvision_default_boxes(feature_map_sizes, scales, aspect_ratios, steps, image_size)
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)  # same boxes in the same order


def test_ssd300_default_boxes_are_torchvisions_with_the_caffe_steps():
    """SSD300's boxes are those of the Caffe release and of torchvision's ssd300_vgg16: steps 8, 16, ... 300."""
    theirs = torchvision_default_boxes(SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_ASPECT_RATIOS, SSD300_STEPS)
    assert theirs.shape == (8732, 4)
    torch.testing.assert_close(cxcywh_to_xyxy(ssd300_default_boxes()), theirs, rtol=0, atol=1e-6)


def test_ssd300_step_grid_shifts_the_paper_grid_by_the_expected_pixels():
    """Cell j's centre moves from (j + 0.5) * 300 / f to (j + 0.5) * step px: most at the last cell."""
    step_grid = ssd300_default_boxes()
    paper_grid = default_boxes(SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_ASPECT_RATIOS)
    torch.testing.assert_close(step_grid[:, 2:], paper_grid[:, 2:], rtol=0, atol=0)  # same sizes, same order
    shift = (step_grid[:, :2] - paper_grid[:, :2]) * 300  # (8732, 2) pixels
    counts = [f * f * boxes_per_location(r) for f, r in zip(SSD300_FEATURE_MAP_SIZES, SSD300_ASPECT_RATIOS)]
    largest = [float(part.abs().max()) for part in shift.split(counts)]
    expected = [(f - 0.5) * (step - 300 / f) for f, step in zip(SSD300_FEATURE_MAP_SIZES, SSD300_STEPS)]
    assert largest == pytest.approx(expected, abs=1e-4)
    assert largest == pytest.approx([3.947, 3.895, 19.0, 18.0, 0.0, 0.0], abs=1e-3)
    assert bool((shift >= -1e-4).all())  # the step grid only ever moves centres right and down
    # conv4_3's 38th column is centred on the image's right edge: 37.5 * 8 = 300 px.
    assert float(step_grid[5776 - 1, 0]) == pytest.approx(1.0, abs=1e-6)


def test_steps_equal_to_image_size_over_f_give_the_paper_grid():
    """When every map divides the image evenly (the small model, SSD512), both grids are the same."""
    small = ((16, 8, 4, 2), prior_scales(4, 0.15, 0.75), [(2,)] * 4)
    assert torch.equal(default_boxes(*small, steps=(8, 16, 32, 64), image_size=128), default_boxes(*small))
    assert torch.equal(default_boxes(SSD512_MAPS, SSD512_SCALES, SSD512_RATIOS, steps=SSD512_STEPS, image_size=512),
                       default_boxes(SSD512_MAPS, SSD512_SCALES, SSD512_RATIOS))
    assert len(default_boxes(SSD512_MAPS, SSD512_SCALES, SSD512_RATIOS)) == 24564


def test_image_size_alone_changes_nothing():
    """image_size is only read with steps, so a model may pass its input size whether it has steps or not."""
    args = (SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_ASPECT_RATIOS)
    assert torch.equal(default_boxes(*args, image_size=300), default_boxes(*args))


# ---------------------------------------------------------------- arguments that would make bad default boxes

@pytest.mark.parametrize("ratios", [(float("nan"),), (0,), (-2,), (float("inf"),)])
def test_aspect_ratios_must_be_positive_and_finite(ratios):
    with pytest.raises(ValueError, match="aspect ratios"):
        cell_default_boxes(0.5, 0.5, 0.3, 0.5, ratios)
    with pytest.raises(ValueError, match="aspect ratios"):
        default_boxes([2], [0.3, 0.5], [ratios])


@pytest.mark.parametrize("scales", [(0.0, 0.5), (-0.2, 0.5), (0.2, float("nan")), (float("inf"), 0.5)])
def test_scales_must_be_positive_and_finite(scales):
    with pytest.raises(ValueError, match="scale"):
        cell_default_boxes(0.5, 0.5, scales[0], scales[1], (2,))
    with pytest.raises(ValueError, match="scale"):
        default_boxes([2], scales, [(2,)])


@pytest.mark.parametrize("sizes", [[0], [-3], [2.5]])
def test_feature_map_sizes_must_be_positive_integers(sizes):
    with pytest.raises(ValueError, match="feature map sizes"):
        default_boxes(sizes, [0.3, 0.5], [(2,)])


@pytest.mark.parametrize("s_min, s_max", [(0.2, float("inf")), (float("nan"), 0.9), (0.2, float("nan"))])
def test_prior_scales_rejects_non_finite_scales(s_min, s_max):
    with pytest.raises(ValueError, match="s_min"):
        prior_scales(3, s_min, s_max)


@pytest.mark.parametrize("steps", [(8,), (8, 16, 32), (8, 0), (8, -16), (8, float("nan")), (8, float("inf")),
                                   (8, "16")])
def test_steps_must_be_one_positive_number_per_map(steps):
    with pytest.raises(ValueError, match="steps must be 2 positive, finite numbers of pixels"):
        default_boxes([4, 2], [0.2, 0.5, 0.8], [(2,), (2,)], steps=steps, image_size=64)


@pytest.mark.parametrize("image_size", [None, 0, -300, float("nan"), "300"])
def test_steps_need_a_valid_image_size(image_size):
    with pytest.raises(ValueError, match="needs image_size"):
        default_boxes([4, 2], [0.2, 0.5, 0.8], [(2,), (2,)], steps=(16, 32), image_size=image_size)
