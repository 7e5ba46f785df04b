"""Box geometry: formats, area, IoU, and the offsets SSD regresses.

Every box here is a tensor of shape (N, 4), of floats (box_area, box_iou and encode also take integer
pixel coordinates). Two formats are used:
- xyxy: (x_min, y_min, x_max, y_max), how annotations and detections are written;
- cxcywh: (centre x, centre y, width, height), how default boxes are described in the paper.
Coordinates are normalised to [0, 1] (fractions of the image width and height) unless a function
says otherwise, so one set of default boxes serves any image size.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

# The variances of the original Caffe SSD, used by every public port. They scale the offsets so that
# centre offsets and log size ratios have roughly unit variance, which balances the four terms of the
# localisation loss (see lesson 02).
VARIANCES = (0.1, 0.2)


def check_tensor(value, name: str) -> None:
    """Raise TypeError unless `value` is a torch.Tensor.

    Arrays are not converted silently: a numpy array is float64 by default and would quietly change the
    dtype of every result. The message says how to convert.
    """
    if not isinstance(value, Tensor):
        module = type(value).__module__
        kind = type(value).__name__ if module == "builtins" else f"{module}.{type(value).__name__}"
        raise TypeError(f"{name} must be a torch.Tensor, got {kind}; convert it with torch.as_tensor(...)")


def _check_shape(boxes: Tensor, name: str) -> None:
    check_tensor(boxes, name)
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex():
        raise TypeError(f"{name} must hold real coordinates (a float or integer tensor), got {boxes.dtype}")


def _float32_or_wider(boxes: Tensor, name: str) -> Tensor:
    """(N, 4) boxes as float32, or float64 if they are float64.

    Integer boxes (pixels) cannot hold a fractional IoU, float16 overflows on pixel areas (300 * 300 is
    beyond its largest number, 65504) and bfloat16 rounds them to 3 significant digits.
    """
    _check_shape(boxes, name)
    return boxes.to(torch.promote_types(boxes.dtype, torch.float32))


def _raise_first_problem(boxes: Tensor, name: str, problems: list[tuple[Tensor, str]], where: str = "") -> None:
    """problems: (bad, message) pairs, bad an (N,) bool mask; raise ValueError naming the first bad box."""
    context = f" in {where}" if where else ""
    for bad, message in problems:
        if bad.any():
            i = int(bad.nonzero()[0])
            box = [round(float(v), 4) for v in boxes[i]]
            raise ValueError(f"{name}[{i}] = {box}{context} {message}")


def check_boxes(boxes: Tensor, name: str = "boxes", normalised: bool = True, where: str = "",
                allow_empty: bool = False) -> None:
    """Raise ValueError naming the first bad box, if any, in an (N, 4) xyxy tensor.

    A box is bad if it has a non-finite coordinate, x_max <= x_min or y_max <= y_min (zero or negative
    width or height: encoding it would take the log of zero, the classic source of NaN losses), or,
    when `normalised`, a coordinate outside [0, 1]. `allow_empty` accepts zero width or height (a
    predicted box clipped to the image edge can collapse to a line) but still rejects negative sizes.
    `where` (a file name, say) is added to the message.
    """
    _check_shape(boxes, name)
    if boxes.numel() == 0:
        return
    problems = [
        (~torch.isfinite(boxes).all(dim=1), "has a non-finite coordinate"),
    ]
    if allow_empty:
        problems += [(boxes[:, 2] < boxes[:, 0], "has x_max < x_min"),
                     (boxes[:, 3] < boxes[:, 1], "has y_max < y_min")]
    else:
        problems += [(boxes[:, 2] <= boxes[:, 0], "has x_max <= x_min (zero or negative width)"),
                     (boxes[:, 3] <= boxes[:, 1], "has y_max <= y_min (zero or negative height)")]
    if normalised:
        # A little slack: coordinates computed as pixel / size can land a hair outside [0, 1].
        eps = 1e-6
        problems.append((((boxes < -eps) | (boxes > 1 + eps)).any(dim=1),
                         "has a coordinate outside [0, 1] (boxes must be normalised)"))
    _raise_first_problem(boxes, name, problems, where)


def check_priors(priors: Tensor, name: str = "priors") -> None:
    """Raise ValueError naming the first bad default box, if any, in a (P, 4) cxcywh tensor.

    A default box is bad if a value is not finite or its width or height is not positive: the offsets
    divide by the prior's size and take the log of a ratio to it, giving inf or NaN.
    """
    _check_shape(priors, name)
    # match checks its priors for every image, so first a quick test of the whole tensor (min and max
    # are NaN if any value is), and only if it fails the search for the first bad prior.
    if priors.numel() == 0:
        return
    smallest, largest = torch.aminmax(priors)
    if bool(priors[:, 2:].min() > 0) and math.isfinite(smallest) and math.isfinite(largest):
        return
    _raise_first_problem(priors, name, [
        (~torch.isfinite(priors).all(dim=1), "has a non-finite value"),
        (priors[:, 2] <= 0, "has a width <= 0 (cxcywh: the third value is the width)"),
        (priors[:, 3] <= 0, "has a height <= 0 (cxcywh: the fourth value is the height)"),
    ])


def check_variances(variances) -> None:
    """Raise ValueError unless `variances` is two positive finite numbers (for centres, for sizes)."""
    try:
        values = [float(v) for v in variances]
    except (TypeError, ValueError):
        raise ValueError(f"variances must be two numbers (for centres, for sizes), got {variances!r}") from None
    if len(values) != 2 or not all(0 < v < math.inf for v in values):
        raise ValueError(f"variances must be two positive finite numbers (for centres, for sizes), "
                         f"got {variances!r}")


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """(N, 4) corners (x_min, y_min, x_max, y_max) -> (N, 4) centre and size (cx, cy, w, h)."""
    _check_shape(boxes, "boxes")
    x_min, y_min, x_max, y_max = boxes.unbind(-1)
    return torch.stack([(x_min + x_max) / 2, (y_min + y_max) / 2, x_max - x_min, y_max - y_min], dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """(N, 4) centre and size (cx, cy, w, h) -> (N, 4) corners (x_min, y_min, x_max, y_max)."""
    _check_shape(boxes, "boxes")
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """(N, 4) xyxy -> (N,) areas, in float32 or wider (as `box_iou`). A box with x_max < x_min is an error,
    not a negative area."""
    boxes = _float32_or_wider(boxes, "boxes")
    check_boxes(boxes, normalised=False, allow_empty=True)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Intersection over union of every pair: (N, 4) xyxy and (M, 4) xyxy -> (N, M).

    IoU = area of the overlap / area of the union; 0 for disjoint boxes, 1 for identical ones.
    Returned in float32, or float64 if either input is: integer, float16 and bfloat16 boxes are
    converted first, since pixel areas overflow float16.
    """
    boxes1, boxes2 = _float32_or_wider(boxes1, "boxes1"), _float32_or_wider(boxes2, "boxes2")
    area1, area2 = box_area(boxes1), box_area(boxes2)
    # Broadcast (N, 1, 2) against (1, M, 2): the overlap's corners for every pair at once.
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    overlap_size = (bottom_right - top_left).clamp(min=0)  # disjoint boxes overlap by 0, not less
    intersection = overlap_size[..., 0] * overlap_size[..., 1]
    union = area1[:, None] + area2[None, :] - intersection
    # Two zero-area boxes have union 0; call their IoU 0 rather than 0 / 0 = NaN.
    return intersection / union.clamp(min=torch.finfo(union.dtype).tiny)


def _check_encode_inputs(boxes_xyxy: Tensor, priors_cxcywh: Tensor,
                         variances: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Validate encode's arguments; return both as floats of the priors' dtype (float32 if integer)."""
    _check_shape(boxes_xyxy, "boxes_xyxy")
    check_priors(priors_cxcywh, "priors_cxcywh")
    check_variances(variances)
    if boxes_xyxy.shape != priors_cxcywh.shape:
        raise ValueError(f"encode needs one box per prior, got {tuple(boxes_xyxy.shape)} boxes "
                         f"for {tuple(priors_cxcywh.shape)} priors")
    dtype = priors_cxcywh.dtype if priors_cxcywh.is_floating_point() else torch.float32
    boxes_xyxy, priors_cxcywh = boxes_xyxy.to(dtype), priors_cxcywh.to(dtype)
    # Checked after the conversion: a box 1e-9 wide in float64 can be 0 wide in float32.
    check_boxes(boxes_xyxy, "boxes_xyxy", normalised=False)  # a zero-size box would give log(0)
    return boxes_xyxy, priors_cxcywh


def encode(boxes_xyxy: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """The offsets that turn each default box into its matched box (paper, eq. 2).

    boxes_xyxy: (P, 4) the box each prior should predict; priors_cxcywh: (P, 4) the default boxes.
    Returns (P, 4): (g_cx - d_cx) / d_w / v0, (g_cy - d_cy) / d_h / v0, log(g_w / d_w) / v1,
    log(g_h / d_h) / v1, in the priors' dtype (float32 for integer priors; integer boxes are fine).
    """
    boxes_xyxy, priors_cxcywh = _check_encode_inputs(boxes_xyxy, priors_cxcywh, variances)
    boxes = xyxy_to_cxcywh(boxes_xyxy)
    centre_offsets = (boxes[:, :2] - priors_cxcywh[:, :2]) / priors_cxcywh[:, 2:] / variances[0]
    size_offsets = torch.log(boxes[:, 2:] / priors_cxcywh[:, 2:]) / variances[1]
    return torch.cat([centre_offsets, size_offsets], dim=1)


def _check_decode_inputs(offsets: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float]) -> None:
    check_tensor(offsets, "offsets")
    check_tensor(priors_cxcywh, "priors_cxcywh")
    if offsets.dim() < 2 or offsets.shape[-1] != 4 or offsets.shape[-2:] != priors_cxcywh.shape:
        raise ValueError(f"decode needs offsets (..., P, 4) for priors (P, 4), got {tuple(offsets.shape)} "
                         f"and {tuple(priors_cxcywh.shape)}")
    check_variances(variances)


def decode(offsets: Tensor, priors_cxcywh: Tensor, variances: tuple[float, float] = VARIANCES) -> Tensor:
    """Inverse of `encode`: (..., P, 4) offsets and (P, 4) cxcywh priors -> (..., P, 4) xyxy boxes.

    Works on a batch of predictions (B, P, 4) as well as on one image's (P, 4).
    """
    _check_decode_inputs(offsets, priors_cxcywh, variances)
    centres = priors_cxcywh[:, :2] + offsets[..., :2] * variances[0] * priors_cxcywh[:, 2:]
    sizes = priors_cxcywh[:, 2:] * torch.exp(offsets[..., 2:] * variances[1])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)
