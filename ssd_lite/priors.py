"""Default boxes (priors): the fixed set of boxes SSD predicts offsets from (paper, section 2.2).

Each feature map of size f x f is a grid of cells; every cell gets the same few boxes centred on it,
one per aspect ratio, all of the map's scale s_k. Small maps (coarse cells) get large scales, so each
map specialises in objects of one size. Boxes are (P, 4) cxcywh, normalised to [0, 1].
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import Tensor


def _check_prior_scales_args(num_feature_maps: int, s_min: float, s_max: float) -> None:
    if num_feature_maps < 1:
        raise ValueError(f"num_feature_maps must be at least 1, got {num_feature_maps}")
    if not 0 < s_min <= s_max < math.inf:  # also rejects NaN, for which every comparison is False
        raise ValueError(f"need finite 0 < s_min <= s_max, got s_min={s_min}, s_max={s_max}")


def prior_scales(num_feature_maps: int, s_min: float = 0.2, s_max: float = 0.9) -> list[float]:
    """The paper's scale equation: s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1), for k = 1..m.

    Returns m + 1 scales: s_1..s_m, one per feature map, plus s_{m+1} continued by the same equation,
    which the last map needs for its extra box of scale sqrt(s_m * s_{m+1}).
    """
    _check_prior_scales_args(num_feature_maps, s_min, s_max)
    step = (s_max - s_min) / max(num_feature_maps - 1, 1)
    return [s_min + step * k for k in range(num_feature_maps + 1)]


def boxes_per_location(aspect_ratios: Sequence[float]) -> int:
    """How many default boxes one cell gets: ratio 1 twice (scales s_k and sqrt(s_k s_k+1)), then r and 1/r."""
    return 2 + 2 * len(aspect_ratios)


def _check_cell_args(scale: float, next_scale: float, aspect_ratios: Sequence[float]) -> None:
    # `not 0 < x < inf` also rejects NaN, for which every comparison is False.
    if not (0 < scale < math.inf and 0 < next_scale < math.inf):
        raise ValueError(f"scales must be positive and finite, got scale={scale}, next_scale={next_scale}")
    for ratio in aspect_ratios:
        if not 0 < ratio < math.inf:
            raise ValueError(f"aspect ratios must be positive and finite, got {ratio} in {tuple(aspect_ratios)}")


def cell_default_boxes(cx: float, cy: float, scale: float, next_scale: float,
                       aspect_ratios: Sequence[float]) -> Tensor:
    """The default boxes of one cell centred at (cx, cy): (boxes_per_location, 4) cxcywh.

    A box of aspect ratio a (width / height) and scale s has w = s * sqrt(a), h = s / sqrt(a), so its
    area stays s^2 whatever its shape.
    """
    _check_cell_args(scale, next_scale, aspect_ratios)
    extra_scale = math.sqrt(scale * next_scale)
    sizes = [(scale, scale), (extra_scale, extra_scale)]
    for ratio in aspect_ratios:
        sizes += [(scale * math.sqrt(ratio), scale / math.sqrt(ratio)),
                  (scale / math.sqrt(ratio), scale * math.sqrt(ratio))]
    return torch.tensor([[cx, cy, w, h] for w, h in sizes], dtype=torch.float32)


def _check_default_boxes_args(feature_map_sizes: Sequence[int], scales: Sequence[float],
                              aspect_ratios: Sequence[Sequence[float]], steps: Sequence[float] | None,
                              image_size: float | None) -> None:
    m = len(feature_map_sizes)
    if len(scales) != m + 1:
        raise ValueError(f"need {m + 1} scales for {m} feature maps (the last is only used for the "
                         f"extra box of the last map), got {len(scales)}")
    if len(aspect_ratios) != m:
        raise ValueError(f"need one tuple of aspect ratios per feature map ({m}), got {len(aspect_ratios)}")
    if not all(isinstance(f, numbers.Integral) and f >= 1 for f in feature_map_sizes):
        raise ValueError(f"feature map sizes must be positive integers, got {tuple(feature_map_sizes)}")
    if steps is None:
        return
    if len(steps) != m or not all(isinstance(s, numbers.Real) and 0 < s < math.inf for s in steps):
        raise ValueError(f"steps must be {m} positive, finite numbers of pixels (one per feature map), "
                         f"got {tuple(steps)}")
    if image_size is None or not (isinstance(image_size, numbers.Real) and 0 < image_size < math.inf):
        raise ValueError(f"steps are in pixels, so default_boxes also needs image_size, the input side in "
                         f"pixels (e.g. 300 for SSD300), got image_size={image_size!r}")


def default_boxes(feature_map_sizes: Sequence[int], scales: Sequence[float],
                  aspect_ratios: Sequence[Sequence[float]], clip: bool = False,
                  steps: Sequence[float] | None = None, image_size: float | None = None) -> Tensor:
    """All default boxes of all feature maps: (P, 4) cxcywh in [0, 1].

    feature_map_sizes: m ints, the side f_k of each (square) map; scales: m + 1 floats (see
    `prior_scales`); aspect_ratios: m sequences, e.g. (2, 3) for ratios 1, 2, 1/2, 3, 1/3.
    steps: None centres cell (i, j) at ((j + 0.5) / f_k, (i + 0.5) / f_k), the paper's formula; or m
    pixel distances between neighbouring centres (SSD300_STEPS, the Caffe code's grid), which centre it
    at (j + 0.5) * step_k / image_size; image_size, the input side in pixels, is only read with steps.
    Order: map by map, cells row by row, the cell's boxes in `cell_default_boxes` order. The model's
    heads emit their predictions in the same order, so prediction i belongs to default box i.
    `clip` clamps the corners to the image (the original SSD300 does not).
    """
    _check_default_boxes_args(feature_map_sizes, scales, aspect_ratios, steps, image_size)
    per_map = []
    for k, f in enumerate(feature_map_sizes):
        cell = cell_default_boxes(0.0, 0.0, scales[k], scales[k + 1], aspect_ratios[k])  # (A, 4)
        # Spread the centres as if the image were `cells_across` cells wide: f (the paper), or image_size
        # / step (SSD300's conv4_3: 300 / 8 = 37.5 though the map has 38). Centres row by row: (f * f, 2).
        cells_across = f if steps is None else image_size / steps[k]
        centres_1d = (torch.arange(f, dtype=torch.float32) + 0.5) / cells_across
        cy, cx = torch.meshgrid(centres_1d, centres_1d, indexing="ij")
        centres = torch.stack([cx.flatten(), cy.flatten()], dim=1)
        boxes = cell[None].repeat(f * f, 1, 1)  # (f * f, A, 4)
        boxes[..., :2] = centres[:, None, :]
        per_map.append(boxes.reshape(-1, 4))
    priors = torch.cat(per_map)
    if clip:
        from ssd_lite.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
        priors = xyxy_to_cxcywh(cxcywh_to_xyxy(priors).clamp(0, 1))
    return priors


# SSD300 as in the original Caffe release: conv4_3 (38x38) gets scale 0.1, below s_min, because it is the
# finest map and small objects need small boxes; the other five maps take s_min=0.2 to s_max=0.9 with the
# step rounded to whole percent (0.17), giving box sides of 30, 60, 111, 162, 213, 264 (and 315) pixels.
SSD300_FEATURE_MAP_SIZES = (38, 19, 10, 5, 3, 1)
SSD300_SCALES = (0.10, 0.20, 0.37, 0.54, 0.71, 0.88, 1.05)
SSD300_ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
# The Caffe release also spaces the cell centres by a step in pixels, the network's stride at each map
# (8 for conv4_3, after three 2x2 poolings), rather than by 300 / f: so do torchvision, mmdetection and
# lufficc/SSD. The last two steps are not strides (conv10_2 and conv11_2 shrink the map without one):
# they spread the 3 and the 1 centres evenly over the image.
SSD300_STEPS = (8, 16, 32, 64, 100, 300)


def ssd300_default_boxes() -> Tensor:
    """The 8732 default boxes of SSD300, as the Caffe release and torchvision make them: (8732, 4) cxcywh."""
    return default_boxes(SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_ASPECT_RATIOS,
                         steps=SSD300_STEPS, image_size=300)
