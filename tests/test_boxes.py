import pytest
import torch
from torchvision.ops import box_convert
from torchvision.ops import box_iou as tv_box_iou

from ssd_lite.boxes import (box_area, box_iou, check_boxes, cxcywh_to_xyxy, decode, encode,
                            xyxy_to_cxcywh)


def random_boxes(n, generator, min_size=0.01):
    """(n, 4) valid xyxy boxes inside [0, 1]."""
    corner = torch.rand(n, 2, generator=generator) * 0.8
    size = min_size + torch.rand(n, 2, generator=generator) * (1 - corner - min_size).clamp(min=0)
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
