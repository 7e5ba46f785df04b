import math

import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_convert
from torchvision.ops import box_iou as tv_box_iou

from ssd_lite.boxes import (VARIANCES, box_area, box_iou, check_boxes, cxcywh_to_xyxy, decode, encode,
                            xyxy_to_cxcywh)


def random_boxes(n, generator, min_size=0.01, dtype=torch.float32):
    """(n, 4) valid xyxy boxes inside [0, 1]."""
    corner = torch.rand(n, 2, generator=generator, dtype=dtype) * 0.8
    size = min_size + torch.rand(n, 2, generator=generator, dtype=dtype) * (1 - corner - min_size).clamp(min=0)
    return torch.cat([corner, corner + size], dim=1)


@pytest.mark.parametrize("seed", range(10))
def test_conversions_match_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(50, g)
    assert torch.allclose(xyxy_to_cxcywh(boxes), box_convert(boxes, "xyxy", "cxcywh"), atol=1e-6)
    cxcywh = box_convert(boxes, "xyxy", "cxcywh")
    assert torch.allclose(cxcywh_to_xyxy(cxcywh), box_convert(cxcywh, "cxcywh", "xyxy"), atol=1e-6)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(boxes)), boxes, atol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_box_iou_matches_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = random_boxes(30, g), random_boxes(40, g)
    ours = box_iou(a, b)
    assert ours.shape == (30, 40)
    assert torch.allclose(ours, tv_box_iou(a, b), atol=1e-6)


def test_box_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5], [0.6, 0.6, 1.0, 1.0]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1.0, 1 / 3, 0.0]]))


def test_box_iou_empty_inputs():
    assert box_iou(torch.zeros(0, 4), torch.rand(3, 4).sort(dim=1).values[:, [0, 1, 2, 3]]).shape == (0, 3)
    assert box_iou(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 0)


def test_box_area():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.1, 0.2, 0.4, 0.3], [0.3, 0.3, 0.3, 0.6]])
    assert torch.allclose(box_area(boxes), torch.tensor([0.25, 0.03, 0.0]))


@pytest.mark.parametrize("seed", range(10))
def test_encode_decode_round_trip(seed):
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(100, g)
    priors = xyxy_to_cxcywh(random_boxes(100, g))
    offsets = encode(boxes, priors)
    assert torch.isfinite(offsets).all()
    assert torch.allclose(decode(offsets, priors), boxes, atol=1e-5)
    # decode also takes a batch of offsets
    batch = torch.stack([offsets, offsets])
    assert decode(batch, priors).shape == (2, 100, 4)


def test_encode_uses_the_variances():
    prior = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    box = cxcywh_to_xyxy(torch.tensor([[0.52, 0.46, 0.4, 0.2]]))
    expected = torch.tensor([[0.02 / 0.2 / 0.1, -0.04 / 0.4 / 0.1,
                              torch.log(torch.tensor(2.0)) / 0.2, torch.log(torch.tensor(0.5)) / 0.2]])
    assert torch.allclose(encode(box, prior), expected, atol=1e-5)
    assert torch.allclose(encode(box, prior, variances=(1.0, 1.0)), expected * torch.tensor([0.1, 0.1, 0.2, 0.2]),
                          atol=1e-5)


def test_decode_of_zero_offsets_is_the_prior():
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.9, 0.05, 0.05]])
    assert torch.allclose(decode(torch.zeros(2, 4), priors), cxcywh_to_xyxy(priors))


@pytest.mark.parametrize("bad, message", [
    ([[0.5, 0.1, 0.2, 0.3]], "x_max"),       # x_max < x_min
    ([[0.1, 0.5, 0.2, 0.3]], "y_max"),       # y_max < y_min
    ([[0.1, 0.1, 0.1, 0.3]], "x_max"),       # zero width: log(0) when encoded
    ([[0.1, 0.1, 0.2, 1.3]], "outside"),     # not normalised
    ([[0.1, float("nan"), 0.2, 0.3]], "non-finite"),
])
def test_check_boxes_names_the_bad_box(bad, message):
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5]] + bad)
    with pytest.raises(ValueError, match=message) as error:
        check_boxes(boxes, "gt_boxes", where="image 7")
    assert "gt_boxes[1]" in str(error.value) and "image 7" in str(error.value)


def test_bad_boxes_raise_in_public_functions():
    flipped = torch.tensor([[0.5, 0.1, 0.2, 0.3]])
    with pytest.raises(ValueError, match="x_max < x_min"):
        box_area(flipped)
    with pytest.raises(ValueError, match="x_max < x_min"):
        box_iou(flipped, flipped)
    with pytest.raises(ValueError, match="x_max <= x_min"):
        encode(torch.tensor([[0.2, 0.1, 0.2, 0.3]]), torch.tensor([[0.5, 0.5, 0.1, 0.1]]))


@pytest.mark.parametrize("bad", [torch.zeros(3), torch.zeros(3, 5), [[0, 0, 1, 1]]])
def test_wrong_shapes_and_types_are_clear(bad):
    with pytest.raises((ValueError, TypeError), match="boxes"):
        xyxy_to_cxcywh(bad)


def test_encode_and_decode_check_their_shapes():
    with pytest.raises(ValueError, match="one box per prior"):
        encode(torch.tensor([[0.1, 0.1, 0.2, 0.2]]), torch.rand(3, 4))
    with pytest.raises(ValueError, match="priors"):
        decode(torch.zeros(5, 4), torch.rand(3, 4))


# ---------------------------------------------------------------- cross-check: torchvision's BoxCoder

@pytest.mark.parametrize("seed", range(10))
def test_encode_decode_match_torchvision_box_coder(seed):
    """SSD's offsets are Faster R-CNN's box coding with weights 1/variances: (10, 10, 5, 5)."""
    g = torch.Generator().manual_seed(seed)
    boxes = random_boxes(200, g, min_size=0.05, dtype=torch.float64)
    priors_xyxy = random_boxes(200, g, min_size=0.05, dtype=torch.float64)
    coder = BoxCoder(weights=(1 / VARIANCES[0], 1 / VARIANCES[0], 1 / VARIANCES[1], 1 / VARIANCES[1]))
    offsets = encode(boxes, xyxy_to_cxcywh(priors_xyxy))
    torch.testing.assert_close(offsets, coder.encode_single(boxes, priors_xyxy))
    # torchvision clamps log size offsets at log(1000 / 16) before exp: keep the offsets below it.
    assert (offsets[:, 2:] * VARIANCES[1]).max() < math.log(1000 / 16)
    torch.testing.assert_close(decode(offsets, xyxy_to_cxcywh(priors_xyxy)), coder.decode_single(offsets, priors_xyxy))
    # and with other variances: weights are their inverses
    coder = BoxCoder(weights=(4.0, 4.0, 2.0, 2.0))
    torch.testing.assert_close(encode(boxes, xyxy_to_cxcywh(priors_xyxy), (0.25, 0.5)),
                               coder.encode_single(boxes, priors_xyxy))


# ---------------------------------------------------------------- dtypes users really have

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_box_iou_of_low_precision_pixel_boxes_is_computed_in_float32(dtype):
    """300 x 300 pixels is an area of 90000, beyond float16's largest number (65504): inf / inf = NaN."""
    pixels = torch.tensor([[0.0, 0.0, 300.0, 300.0], [100.0, 100.0, 400.0, 400.0], [10.0, 20.0, 30.0, 60.0]])
    low = pixels.to(dtype)
    ious = box_iou(low, low)
    assert ious.dtype == torch.float32
    torch.testing.assert_close(ious, tv_box_iou(low.float(), low.float()))
    areas = box_area(low)
    assert areas.dtype == torch.float32 and torch.isfinite(areas).all()
    torch.testing.assert_close(areas, torch.tensor([90000.0, 90000.0, 800.0]))


def test_box_iou_and_area_of_integer_boxes():
    pixels = torch.tensor([[0, 0, 30, 30], [10, 10, 40, 40], [50, 50, 60, 80]])
    for dtype in (torch.int64, torch.int32, torch.uint8):
        ious = box_iou(pixels.to(dtype), pixels.to(dtype))
        assert ious.dtype == torch.float32
        torch.testing.assert_close(ious, tv_box_iou(pixels.float(), pixels.float()))
        areas = box_area(pixels.to(dtype))
        assert areas.dtype == torch.float32
        torch.testing.assert_close(areas, torch.tensor([900.0, 900.0, 300.0]))


def test_box_iou_keeps_float64_and_mixes_like_torch():
    g = torch.Generator().manual_seed(0)
    a, b = random_boxes(5, g, dtype=torch.float64), random_boxes(6, g, dtype=torch.float64)
    assert box_iou(a, b).dtype == torch.float64
    assert box_iou(a, b.float()).dtype == torch.float64  # the wider of the two
    torch.testing.assert_close(box_iou(a, b), tv_box_iou(a, b))


def test_encode_of_integer_pixel_boxes():
    boxes = torch.tensor([[10, 20, 50, 80], [0, 0, 128, 128]])
    priors = torch.tensor([[32.0, 48.0, 40.0, 40.0], [64.0, 64.0, 100.0, 120.0]])
    offsets = encode(boxes, priors)
    assert offsets.dtype == torch.float32
    torch.testing.assert_close(offsets, encode(boxes.float(), priors))
    # integer priors too: the offsets are then float32
    assert encode(boxes, priors.long()).dtype == torch.float32
    # float64 boxes with float32 priors: the priors' dtype
    assert encode(boxes.double(), priors).dtype == torch.float32
    assert encode(boxes.float(), priors.double()).dtype == torch.float64


@pytest.mark.parametrize("call", [
    lambda a: box_iou(a, torch.tensor([[0.0, 0.0, 1.0, 1.0]])),
    lambda a: box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), a),
    lambda a: box_area(a),
    lambda a: xyxy_to_cxcywh(a),
    lambda a: cxcywh_to_xyxy(a),
    lambda a: encode(a, torch.tensor([[0.5, 0.5, 0.5, 0.5]])),
    lambda a: encode(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), a),
    lambda a: decode(a, torch.tensor([[0.5, 0.5, 0.5, 0.5]])),
    lambda a: decode(torch.zeros(1, 4), a),
])
def test_numpy_arrays_get_a_clear_type_error(call):
    with pytest.raises(TypeError, match=r"torch.Tensor.*ndarray.*torch.as_tensor"):
        call(np.array([[0.1, 0.1, 0.5, 0.5]], dtype=np.float32))


def test_bool_boxes_are_rejected():
    with pytest.raises(TypeError, match="bool"):
        box_iou(torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool))


# ---------------------------------------------------------------- priors and variances that give inf or NaN

@pytest.mark.parametrize("prior, message", [
    ([0.5, 0.5, 0.0, 0.2], "width"),            # zero width: division by zero
    ([0.5, 0.5, 0.2, -0.1], "height"),          # negative height: log of a negative number
    ([0.5, float("nan"), 0.2, 0.2], "non-finite"),
    ([0.5, 0.5, float("inf"), 0.2], "non-finite"),
])
def test_encode_rejects_priors_without_a_positive_finite_size(prior, message):
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2], prior])
    boxes = torch.tensor([[0.4, 0.4, 0.6, 0.6], [0.4, 0.4, 0.6, 0.6]])
    with pytest.raises(ValueError, match=message) as error:
        encode(boxes, priors)
    assert "priors_cxcywh[1]" in str(error.value)


@pytest.mark.parametrize("variances", [(0.0, 0.2), (0.1, -0.2), (float("nan"), 0.2), (0.1, float("inf")), (0.1,),
                                       (0.1, 0.2, 0.3)])
def test_encode_and_decode_reject_bad_variances(variances):
    boxes, priors = torch.tensor([[0.4, 0.4, 0.6, 0.6]]), torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    with pytest.raises(ValueError, match="variances"):
        encode(boxes, priors, variances)
    with pytest.raises(ValueError, match="variances"):
        decode(torch.zeros(1, 4), priors, variances)
