"""Exercise checkers for the lessons: `check_iou(my_iou)` and the like.

Each checker lists the cases it tries (hand-picked edge cases first, then seeded random ones) and
names the function of ssd_lite it compares the answers with. It prints a short verdict: `✓ Correct`,
"Not attempted yet" for a function that still raises NotImplementedError, or the smallest input
that fails with the expected and the received value. A wrong answer never makes it raise, whatever
the reader's code does: raising, looping forever, printing a flood, calling sys.exit(), changing its
input in place (see ssd_lite/_checking.py, which runs the cases).

Each checker returns a CheckResult, true if every case passed (`assert check_iou(my_iou)` works), that
a notebook does not echo under the verdict.

The student copies of the lessons are written by another tool: `python -m ssd_lite.student_copies`.
"""
from __future__ import annotations

import copy
import functools
import math
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssd_lite import _checking
from ssd_lite._checking import (Case, CheckResult, _as_number, _boxes, _call, _compare_cell_boxes, _compare_float,
                                _compare_floats, _compare_indices, _compare_int, _compare_mining, _compare_pair,
                                _compare_tensors, _crowded_boxes, _curve, _describe_error, _distinct_scores,
                                _generator, _loss_case, _mining_case, _randint, _random_boxes, _run_checks, _show,
                                _TookTooLong, _untied_match_case, _with_inputs, _wrong_number_type)
from ssd_lite.boxes import VARIANCES, box_iou, cxcywh_to_xyxy, decode, encode, xyxy_to_cxcywh
from ssd_lite.evaluate import average_precision, precision_recall
from ssd_lite.loss import hard_negative_mining, multibox_loss, sigmoid_focal_loss, smooth_l1
from ssd_lite.matching import match
from ssd_lite.model import default_model
from ssd_lite.nms import batched_nms, nms
from ssd_lite.priors import (boxes_per_location, cell_default_boxes, default_boxes, prior_scales,
                             ssd300_default_boxes)
from ssd_lite.voc import load_photos

__all__ = ["CheckResult", "check_iou", "check_xyxy_to_cxcywh", "check_prior_scales", "check_cell_default_boxes",
           "check_match", "check_encode", "check_smooth_l1", "check_hard_negative_mining", "check_nms",
           "check_localization_loss", "check_confidence_loss", "check_batched_nms", "check_hflip_boxes",
           "check_num_default_boxes", "check_precision_recall", "check_average_precision"]


# ---------------------------------------------------------------------------------------------------
# Lesson 00-02: box geometry, default boxes, matching
# ---------------------------------------------------------------------------------------------------

def check_iou(fn: Callable) -> CheckResult:
    """fn(boxes1 (N, 4) xyxy, boxes2 (M, 4) xyxy) -> (N, M) IoU of every pair; reference: boxes.box_iou."""
    cases = [
        Case((_boxes([[0.1, 0.1, 0.5, 0.5]]), _boxes([[0.1, 0.1, 0.5, 0.5]])), "identical boxes"),
        Case((_boxes([[0.0, 0.0, 0.2, 0.2]]), _boxes([[0.5, 0.5, 1.0, 1.0]])),
             "boxes apart in x and in y: no overlap"),
        Case((_boxes([[0.0, 0.0, 0.4, 0.5]]), _boxes([[0.6, 0.0, 1.0, 0.5]])), "boxes apart in x only"),
        Case((_boxes([[0.0, 0.0, 0.5, 0.5]]), _boxes([[0.5, 0.0, 1.0, 0.5]])), "boxes touching along an edge"),
        Case((_boxes([[0.0, 0.0, 1.0, 1.0]]), _boxes([[0.25, 0.25, 0.75, 0.75]])), "one box inside the other"),
        Case((_boxes([]), _boxes([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]])), "no boxes in boxes1 (N = 0)"),
    ]
    generator = _generator(0)
    cases += [Case((_random_boxes(n, generator), _random_boxes(m, generator)), f"{n} by {m} random boxes")
              for n, m in [(2, 3), (3, 1), (1, 4), (4, 4), (5, 2), (6, 6)]]
    return _run_checks("check_iou", fn, cases, box_iou, _compare_tensors, ("boxes1", "boxes2"))


def check_xyxy_to_cxcywh(fn: Callable) -> CheckResult:
    """fn(boxes (N, 4) xyxy) -> (N, 4) cxcywh; reference: boxes.xyxy_to_cxcywh."""
    cases = [
        Case((_boxes([[0.0, 0.0, 1.0, 1.0]]),), "the whole image"),
        Case((_boxes([[0.1, 0.2, 0.5, 0.9]]),), "a tall box"),
        Case((_boxes([[0.3, 0.4, 0.9, 0.6]]),), "a wide box"),
        Case((_boxes([]),), "no boxes (N = 0)"),
    ]
    generator = _generator(1)
    cases += [Case((_random_boxes(n, generator),), f"{n} random boxes") for n in [2, 3, 5, 8]]
    return _run_checks("check_xyxy_to_cxcywh", fn, cases, xyxy_to_cxcywh, _compare_tensors, ("boxes",))


def check_prior_scales(fn: Callable) -> CheckResult:
    """fn(num_feature_maps, s_min, s_max) -> list of m + 1 scales; reference: priors.prior_scales."""
    cases = [
        Case((1, 0.3, 0.9), "one feature map: the step is s_max - s_min"),
        Case((2, 0.2, 0.9), "two feature maps"),
        Case((3, 0.5, 0.5), "s_min = s_max: every map the same scale"),
        Case((6, 0.2, 0.9), "the paper's six maps"),
        Case((4, 0.1, 0.95), "four maps"),
    ]
    generator = _generator(2)
    for _ in range(4):
        m = _randint(2, 8, generator)
        s_min = round(0.1 + 0.2 * float(torch.rand(1, generator=generator)), 2)
        s_max = round(0.6 + 0.35 * float(torch.rand(1, generator=generator)), 2)
        cases.append(Case((m, s_min, s_max), f"{m} maps"))
    return _run_checks("check_prior_scales", fn, cases, prior_scales, _compare_floats,
                       ("num_feature_maps", "s_min", "s_max"))


def check_cell_default_boxes(fn: Callable) -> CheckResult:
    """fn(cx, cy, scale, next_scale, aspect_ratios) -> (A, 4) cxcywh; reference: priors.cell_default_boxes."""
    cases = [
        Case((0.5, 0.5, 0.2, 0.35, ()), "no extra aspect ratios: the two square boxes only"),
        Case((0.5, 0.5, 0.2, 0.37, (2,)), "aspect ratio 2"),
        Case((0.25, 0.75, 0.3, 0.5, (2, 3)), "aspect ratios 2 and 3, an off-centre cell"),
    ]
    generator = _generator(3)
    for ratios in [(2,), (3,), (2, 3), (1.5, 4)]:
        cx, cy = (round(float(v), 2) for v in torch.rand(2, generator=generator))
        scale = round(0.1 + 0.6 * float(torch.rand(1, generator=generator)), 2)
        cases.append(Case((cx, cy, scale, round(scale + 0.17, 2), ratios), f"aspect ratios {ratios}"))
    return _run_checks("check_cell_default_boxes", fn, cases, cell_default_boxes, _compare_cell_boxes,
                       ("cx", "cy", "scale", "next_scale", "aspect_ratios"))


def check_match(fn: Callable) -> CheckResult:
    """fn(gt_boxes, gt_labels, priors, iou_threshold=0.5) -> (loc_targets (P, 4), labels (P,)); reference: match."""
    far_prior = [0.8, 0.8, 0.2, 0.2]
    cases = [
        Case((_boxes([]), torch.zeros(0, dtype=torch.long), _boxes([[0.25, 0.25, 0.5, 0.5], far_prior]), 0.5),
             "no objects (G = 0): every prior is background"),
        Case((_boxes([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([3]), _boxes([[0.25, 0.25, 0.5, 0.5], far_prior]), 0.5),
             "one object exactly on a prior"),
        Case((_boxes([[0.4, 0.4, 0.5, 0.5]]), torch.tensor([1]), _boxes([[0.5, 0.5, 0.5, 0.5], far_prior]), 0.5),
             "a small object no prior overlaps by 0.5 still gets its best prior"),
        Case((_boxes([[0.0, 0.0, 0.25, 0.5]]), torch.tensor([2]),
              _boxes([[0.125, 0.25, 0.25, 0.5], [0.25, 0.25, 0.5, 0.5], far_prior]), 0.5),
             "a prior with IoU exactly 0.5 is a positive (IoU >= threshold)"),
        Case((_boxes([[0.0, 0.0, 0.5, 0.5], [0.55, 0.6, 0.95, 0.95]]), torch.tensor([1, 4]),
              _boxes([[0.25, 0.25, 0.5, 0.5], [0.3, 0.3, 0.4, 0.4], [0.75, 0.75, 0.4, 0.4], [0.7, 0.8, 0.3, 0.3]]),
              0.5), "two objects"),
    ]
    generator = _generator(4)
    small_grid = default_boxes([2], [0.35, 0.6], [(2,)])  # 16 priors
    finer_grid = default_boxes([3, 1], [0.3, 0.7, 0.9], [(), (2,)])  # 24 priors
    for priors, iou_threshold in [(small_grid, 0.5), (small_grid, 0.3), (finer_grid, 0.5),
                                  (finer_grid, 0.4), (small_grid, 0.5), (finer_grid, 0.5)]:
        args = _untied_match_case(generator, priors, iou_threshold)
        cases.append(Case(args, f"{len(args[0])} random objects, {len(priors)} priors, threshold {iou_threshold}"))
    return _run_checks("check_match", fn, cases, match, _compare_pair(("loc_targets", "labels")),
                       ("gt_boxes", "gt_labels", "priors", "iou_threshold"))


def check_encode(fn: Callable) -> CheckResult:
    """fn(boxes_xyxy (P, 4), priors_cxcywh (P, 4)) -> (P, 4) offsets; reference: boxes.encode."""
    cases = [
        Case((_boxes([[0.2, 0.2, 0.6, 0.6]]), _boxes([[0.4, 0.4, 0.4, 0.4]])),
             "a box equal to its prior: zero offsets"),
        Case((_boxes([[0.4, 0.2, 0.8, 0.6]]), _boxes([[0.4, 0.4, 0.4, 0.4]])),
             "a box shifted right by half its prior's width"),
        Case((_boxes([[0.1, 0.3, 0.9, 0.5]]), _boxes([[0.5, 0.4, 0.4, 0.4]])),
             "a box wider and flatter than its prior"),
        Case((_boxes([]), _boxes([])), "no boxes (P = 0)"),
    ]
    generator = _generator(5)
    for n in [2, 3, 5, 8]:
        priors = xyxy_to_cxcywh(_random_boxes(n, generator, min_size=0.1))
        cases.append(Case((_random_boxes(n, generator), priors), f"{n} random boxes and priors"))
    return _run_checks("check_encode", fn, cases, encode, _compare_tensors, ("boxes_xyxy", "priors_cxcywh"))


# ---------------------------------------------------------------------------------------------------
# Lessons 03-05: loss, hard negative mining, NMS
# ---------------------------------------------------------------------------------------------------

def check_smooth_l1(fn: Callable) -> CheckResult:
    """fn(input, target, beta=1.0) -> elementwise loss, same shape; reference: loss.smooth_l1.

    Cases without a beta call fn(input, target), so they check the default beta too.
    """
    cases = [
        Case((torch.tensor([0.0]), torch.tensor([0.0])), "no error: zero loss"),
        Case((torch.tensor([0.5]), torch.tensor([0.0])), "a small error: the quadratic part"),
        Case((torch.tensor([-3.0]), torch.tensor([0.0])), "a large negative error: the linear part"),
        Case((torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])), "errors of exactly beta = 1"),
        Case((torch.tensor([0.2, 1.5, -0.4]), torch.tensor([0.0, 0.0, 0.0]), 0.5), "beta = 0.5"),
        Case((torch.tensor([[0.5, -2.0], [3.0, 0.25]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 2.0),
             "a (2, 2) tensor, beta = 2"),
    ]
    generator = _generator(6)
    for shape, beta in [((5,), None), ((3, 4), 1.0), ((2, 3, 4), 1 / 9), ((8, 4), 0.5)]:
        input = (torch.randn(shape, generator=generator) * 2).round(decimals=2)
        target = (torch.randn(shape, generator=generator)).round(decimals=2)
        args = (input, target) if beta is None else (input, target, beta)
        cases.append(Case(args, f"random {tuple(shape)} tensors" + ("" if beta is None else f", beta = {beta:.3g}")))
    return _run_checks("check_smooth_l1", fn, cases, smooth_l1, _compare_tensors, ("input", "target", "beta"))


def check_hard_negative_mining(fn: Callable) -> CheckResult:
    """fn(conf_loss (B, P), labels (B, P), neg_pos_ratio=3) -> (B, P) bool mask of the mined negatives.

    Reference: loss.hard_negative_mining. Cases avoid ties in the loss, and any tie-break is accepted.
    """
    cases = [
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]]), torch.tensor([[1, 0, 0, 0, 0]]), 1),
             "one positive, ratio 1: the single hardest negative"),
        Case((torch.tensor([[0.2, 0.8, 0.4, 0.6]]), torch.tensor([[0, 0, 0, 0]])),
             "no positives: no negatives either (ratio times 0)"),
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7, 0.2]]), torch.tensor([[1, 0, 0, 0, 0, 2]])),
             "two positives, ratio 3: the 4 hardest negatives, out of 4"),
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]]), torch.tensor([[1, 2, 0, 0, 3]])),
             "more negatives wanted (9) than there are (2): take them all"),
        Case((torch.tensor([[0.3, 0.9, 0.1, 0.4, 0.2, 0.8], [0.5, 0.6, 0.7, 0.1, 0.2, 0.3]]),
              torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]), 2),
             "two images: mining is per image (the second has no positives)"),
    ]
    generator = _generator(7)
    for batch_size, num_priors, ratio in [(1, 12, 3), (2, 10, 2), (3, 16, 3), (2, 30, 3), (4, 20, None)]:
        conf_loss, labels = _mining_case(generator, batch_size, num_priors)
        args = (conf_loss, labels) if ratio is None else (conf_loss, labels, ratio)
        cases.append(Case(args, f"{batch_size} random images of {num_priors} priors"))
    # The comparison needs the inputs too, to accept any valid tie-break.
    return _run_checks("check_hard_negative_mining", fn, cases, _with_inputs(hard_negative_mining), _compare_mining,
                       ("conf_loss", "labels", "neg_pos_ratio"))


def check_nms(fn: Callable) -> CheckResult:
    """fn(boxes (K, 4) xyxy, scores (K,), iou_threshold) -> kept indices, by decreasing score; reference: nms.nms."""
    cases = [
        Case((_boxes([[0.1, 0.1, 0.5, 0.5]]), torch.tensor([0.9]), 0.5), "one box: keep it"),
        Case((_boxes([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]]), torch.tensor([0.6, 0.9]), 0.5),
             "two identical boxes: keep the higher score only"),
        Case((_boxes([[0.0, 0.0, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]), torch.tensor([0.8, 0.7]), 0.5),
             "two separate boxes: keep both"),
        Case((_boxes([[0.0, 0.0, 0.25, 0.5], [0.0, 0.0, 0.5, 0.5]]), torch.tensor([0.9, 0.8]), 0.5),
             "IoU exactly 0.5 with threshold 0.5: keep both (suppress only IoU > threshold)"),
        Case((_boxes([[0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4], [0.2, 0.0, 0.6, 0.4]]),
              torch.tensor([0.9, 0.8, 0.7]), 0.5),
             "a chain: box 1 is suppressed by box 0, so it cannot suppress box 2"),
        Case((_boxes([]), torch.zeros(0), 0.5), "no boxes"),
    ]
    generator = _generator(8)
    for n, iou_threshold in [(4, 0.5), (6, 0.3), (8, 0.45), (12, 0.5), (20, 0.6)]:
        boxes = _crowded_boxes(n, iou_threshold, generator)
        cases.append(Case((boxes, _distinct_scores(n, generator), iou_threshold),
                          f"{n} random boxes, threshold {iou_threshold}"))
    return _run_checks("check_nms", fn, cases, nms, _compare_indices, ("boxes", "scores", "iou_threshold"))


def _localization_loss(loc_pred: Tensor, loc_targets: Tensor, labels: Tensor) -> float:
    """The loc_loss of loss.multibox_loss, given class scores that play no part in it."""
    num_classes = max(int(labels.max()) + 1, 2) if labels.numel() else 2
    return float(multibox_loss(loc_pred, torch.zeros(*labels.shape, num_classes), loc_targets, labels)[0])


def check_localization_loss(fn: Callable) -> CheckResult:
    """fn(loc_pred (B, P, 4), loc_targets (B, P, 4), labels (B, P)) -> scalar L_loc / N.

    Smooth L1 summed over the positives' offsets, divided by N, the number of positives in the batch
    (by 1 when N = 0). Reference: the loc_loss of loss.multibox_loss.
    """
    cases = [
        Case((torch.tensor([[[0.5, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]]]), torch.zeros(1, 2, 4),
              torch.tensor([[1, 0]])), "one positive, and a background box whose prediction is ignored"),
        Case((torch.tensor([[[0.5, -2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]]), torch.zeros(1, 2, 4),
              torch.tensor([[2, 1]])), "two positives: the sum divided by N = 2"),
        Case((torch.ones(1, 3, 4), torch.zeros(1, 3, 4), torch.tensor([[0, 0, 0]])),
             "no positives (N = 0): the loss is 0, not NaN"),
        Case((torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 0]], [[0, 0, 0, 0], [2.0, 0, 0, 0]]]), torch.zeros(2, 2, 4),
              torch.tensor([[1, 0], [0, 0]])), "two images: N counts the positives of the whole batch"),
    ]
    generator = _generator(13)
    for batch_size, num_priors in [(1, 6), (2, 8), (3, 10), (4, 16)]:
        loc_pred, _, loc_targets, labels = _loss_case(generator, batch_size, num_priors)
        cases.append(Case((loc_pred, loc_targets, labels), f"{batch_size} random images of {num_priors} priors"))
    return _run_checks("check_localization_loss", fn, cases, _localization_loss, _compare_float,
                       ("loc_pred", "loc_targets", "labels"))


def _confidence_loss(conf_pred: Tensor, labels: Tensor, *neg_pos_ratio: float) -> float:
    """The conf_loss of loss.multibox_loss, given offsets that play no part in it."""
    zeros = torch.zeros(*labels.shape, 4)
    return float(multibox_loss(zeros, conf_pred, zeros, labels, *neg_pos_ratio)[1])


def check_confidence_loss(fn: Callable) -> CheckResult:
    """fn(conf_pred (B, P, C), labels (B, P), neg_pos_ratio=3) -> scalar L_conf / N.

    Cross-entropy summed over the positives and the hard negatives mined per image, divided by N, the
    number of positives in the batch (by 1 when N = 0). Reference: the conf_loss of loss.multibox_loss.
    """
    cases = [
        Case((torch.tensor([[[0.0, 2.0], [1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[1, 0, 0]]), 1),
             "one positive, ratio 1: its loss plus the hardest negative's"),
        Case((torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]), torch.tensor([[0, 0]])),
             "no positives (N = 0): no negatives either, the loss is 0"),
        Case((torch.tensor([[[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.5], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]]),
              torch.tensor([[2, 0, 0, 0, 0]])), "ratio 3: three of the four negatives"),
        Case((torch.tensor([[[0.0, 1.0], [0.0, 2.0]], [[0.0, 3.0], [0.0, 1.5]]]), torch.tensor([[1, 0], [0, 0]])),
             "two images: mining is per image, N counts the whole batch"),
    ]
    generator = _generator(14)
    for batch_size, num_priors, num_classes, ratio in [(1, 8, 3, 3), (2, 10, 4, 2), (3, 12, 5, 3), (2, 20, 3, None)]:
        _, conf_pred, _, labels = _loss_case(generator, batch_size, num_priors, num_classes, 0.2)
        args = (conf_pred, labels) if ratio is None else (conf_pred, labels, ratio)
        cases.append(Case(args, f"{batch_size} random images of {num_priors} priors, {num_classes} classes"))
    return _run_checks("check_confidence_loss", fn, cases, _confidence_loss, _compare_float,
                       ("conf_pred", "labels", "neg_pos_ratio"))


def check_batched_nms(fn: Callable) -> CheckResult:
    """fn(boxes (K, 4), scores (K,), labels (K,), iou_threshold) -> kept indices, by decreasing score.

    NMS within each label: boxes of different labels never suppress each other. Reference: nms.batched_nms.
    """
    same = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5]]  # IoU about 0.9
    cases = [
        Case((_boxes(same), torch.tensor([0.9, 0.8]), torch.tensor([1, 2]), 0.5),
             "two overlapping boxes of different classes: keep both"),
        Case((_boxes(same), torch.tensor([0.9, 0.8]), torch.tensor([3, 3]), 0.5),
             "two overlapping boxes of the same class: keep the better one"),
        Case((_boxes(same + [[0.6, 0.6, 0.9, 0.9]]), torch.tensor([0.7, 0.8, 0.9]), torch.tensor([1, 2, 1]), 0.5),
             "kept boxes of several classes come out by decreasing score"),
        Case((_boxes([]), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5), "no boxes"),
    ]
    generator = _generator(15)
    for n, iou_threshold in [(5, 0.5), (8, 0.45), (12, 0.3), (20, 0.5)]:
        boxes = _crowded_boxes(n, iou_threshold, generator)
        scores = _distinct_scores(n, generator)
        labels = torch.randint(1, 4, (n,), generator=generator)
        cases.append(Case((boxes, scores, labels, iou_threshold), f"{n} random boxes of 3 classes"))
    return _run_checks("check_batched_nms", fn, cases, batched_nms, _compare_indices,
                       ("boxes", "scores", "labels", "iou_threshold"))


# ---------------------------------------------------------------------------------------------------
# Lessons 06-07: augmentation, counting boxes, evaluation
# ---------------------------------------------------------------------------------------------------

def _hflip_boxes(boxes: Tensor) -> Tensor:
    """Mirroring the image left-right sends x to 1 - x, and the left edge becomes the right one."""
    x_min, y_min, x_max, y_max = boxes.unbind(-1)
    return torch.stack([1 - x_max, y_min, 1 - x_min, y_max], dim=-1)


def check_hflip_boxes(fn: Callable) -> CheckResult:
    """fn(boxes (N, 4) normalised xyxy) -> (N, 4) the boxes in the left-right mirrored image."""
    cases = [
        Case((_boxes([[0.0, 0.0, 1.0, 1.0]]),), "the whole image: unchanged"),
        Case((_boxes([[0.1, 0.2, 0.4, 0.6]]),), "a box on the left moves to the right"),
        Case((_boxes([[0.3, 0.1, 0.7, 0.9]]),), "a centred box stays in place"),
        Case((_boxes([]),), "no boxes (N = 0)"),
    ]
    generator = _generator(9)
    cases += [Case((_random_boxes(n, generator),), f"{n} random boxes") for n in [2, 3, 5, 8]]
    return _run_checks("check_hflip_boxes", fn, cases, _hflip_boxes, _compare_tensors, ("boxes",))


def _num_default_boxes(feature_map_sizes: Sequence[int], boxes_per_location: Sequence[int]) -> int:
    """A map of f x f cells with b boxes per cell holds f * f * b default boxes."""
    return sum(f * f * b for f, b in zip(feature_map_sizes, boxes_per_location))


def check_num_default_boxes(fn: Callable) -> CheckResult:
    """fn(feature_map_sizes, boxes_per_location) -> int, the total number of default boxes."""
    cases = [
        Case(([1], [4]), "one 1 x 1 map"),
        Case(([3], [6]), "one 3 x 3 map"),
        Case(([2, 1], [6, 4]), "two maps"),
        Case(([38, 19, 10, 5, 3, 1], [4, 6, 6, 6, 4, 4]), "SSD300: 8732"),
    ]
    generator = _generator(10)
    for _ in range(4):
        m = _randint(1, 6, generator)
        sizes = sorted((_randint(1, 40, generator) for _ in range(m)), reverse=True)
        per_location = [4 if float(torch.rand(1, generator=generator)) < 0.5 else 6 for _ in range(m)]
        cases.append(Case((sizes, per_location), f"{m} random maps"))
    return _run_checks("check_num_default_boxes", fn, cases, _num_default_boxes, _compare_int,
                       ("feature_map_sizes", "boxes_per_location"))


def check_precision_recall(fn: Callable) -> CheckResult:
    """fn(scores (K,), is_true_positive (K,) bool, num_ground_truth) -> (precision (K,), recall (K,)).

    Both in order of decreasing score; reference: evaluate.precision_recall.
    """
    cases = [
        Case((torch.tensor([0.9]), torch.tensor([True]), 1), "one right detection of one object"),
        Case((torch.tensor([0.9]), torch.tensor([False]), 2), "one wrong detection"),
        Case((torch.tensor([0.3, 0.9]), torch.tensor([True, False]), 1),
             "unsorted scores: the higher-scored wrong detection comes first"),
        Case((torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, False, True, True]), 5),
             "four detections, five objects: recall stays below 1"),
        Case((torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3), "no detections (K = 0)"),
    ]
    generator = _generator(11)
    for k in [3, 6, 10, 20]:
        scores = _distinct_scores(k, generator)
        is_true_positive = torch.rand(k, generator=generator) < 0.6
        num_ground_truth = max(int(is_true_positive.sum()) + _randint(0, 3, generator), 1)
        cases.append(Case((scores, is_true_positive, num_ground_truth), f"{k} random detections"))
    return _run_checks("check_precision_recall", fn, cases, precision_recall,
                       _compare_pair(("precision", "recall")), ("scores", "is_true_positive", "num_ground_truth"))


def check_average_precision(fn: Callable,
                            interpolations: Sequence[str] = ("all", "11point", "101point")) -> CheckResult:
    """fn(precision (K,), recall (K,), interpolation) -> float AP; reference: evaluate.average_precision.

    `interpolations` limits the check to the rules an exercise asks for, e.g. ("11point",).
    """
    # Object counts are 1 or primes other than 2 and 5, so no recall k / n lands on a sample point
    # k / 10 or k / 100 (other than 0 and 1), where float rounding (0.3 is 0.30000000000000004 in
    # np.linspace) would make a correct answer depend on how the reader builds the points.
    curves = [
        (*_curve([True], 1), "one right detection: AP 1"),
        (*_curve([False], 3), "one wrong detection: AP 0"),
        (*_curve([True, False], 3), "a right then a wrong detection, 3 objects"),
        (*_curve([False, True, True], 3), "precision rises after a miss: take the best precision to the right"),
        (*_curve([True, True, False, True, False], 7), "five detections, seven objects: recall stops below 1"),
    ]
    generator = _generator(12)
    for k in [6, 10, 25]:
        is_true_positive = (torch.rand(k, generator=generator) < 0.6).tolist()
        num_ground_truth = next(n for n in (3, 7, 11, 13, 17, 19, 23, 29, 31) if n >= sum(is_true_positive) + 1)
        curves.append((*_curve(is_true_positive, num_ground_truth), f"a random curve of {k} detections"))
    cases = [Case((precision, recall, interpolation), f"{note}, {interpolation}")
             for interpolation in interpolations for precision, recall, note in curves]
    return _run_checks("check_average_precision", fn, cases, average_precision, _compare_float,
                       ("precision", "recall", "interpolation"))


# ---------------------------------------------------------------------------------------------------
# Lessons 00 and 02: transfer tasks, and "predict, then run" questions
# ---------------------------------------------------------------------------------------------------

def _xywh_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of boxes written as COCO does, (x_min, y_min, width, height), in any unit (pixels here).

    IoU is a ratio of areas, so the unit cancels: only the format needs converting, to corners.
    """
    def corners(boxes: Tensor) -> Tensor:
        return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)

    return box_iou(corners(boxes1), corners(boxes2))


def _random_xywh_pixel_boxes(n: int, generator: torch.Generator, width: int = 640, height: int = 480) -> Tensor:
    """(n, 4) boxes (x_min, y_min, box width, box height) in whole pixels, inside a width x height image."""
    image_size = torch.tensor([width, height], dtype=torch.float32)
    corner = (torch.rand(n, 2, generator=generator) * (image_size - 8)).floor()
    size = 4 + (torch.rand(n, 2, generator=generator) * (image_size - 4 - corner)).floor()
    return torch.cat([corner, size], dim=1)


def check_iou_xywh(fn: Callable) -> CheckResult:
    """fn(boxes1 (N, 4), boxes2 (M, 4)), both (x_min, y_min, width, height) in pixels -> (N, M) IoU."""
    cases = [
        Case((_boxes([[10, 20, 100, 50]]), _boxes([[10, 20, 100, 50]])), "identical boxes"),
        Case((_boxes([[0, 0, 200, 100]]), _boxes([[100, 0, 200, 100]])), "shifted right by half the width"),
        Case((_boxes([[0, 0, 300, 300]]), _boxes([[100, 100, 100, 100]])), "a small box inside a large one"),
        Case((_boxes([[0, 0, 50, 50]]), _boxes([[60, 70, 50, 50]])), "disjoint boxes"),
        Case((_boxes([[0, 0, 50, 50]]), _boxes([[50, 0, 50, 50]])), "boxes touching along an edge"),
        Case((_boxes([]), _boxes([[5, 5, 10, 10]])), "no boxes in boxes1 (N = 0)"),
    ]
    generator = _generator(13)
    cases += [Case((_random_xywh_pixel_boxes(n, generator), _random_xywh_pixel_boxes(m, generator)),
                   f"{n} by {m} random boxes in a 640 x 480 image") for n, m in [(2, 3), (3, 1), (4, 4), (5, 2)]]
    return _run_checks("check_iou_xywh", fn, cases, _xywh_iou, _compare_tensors, ("boxes1", "boxes2"))


def _diagonal_shift(iou_threshold: float) -> float:
    """The shift s, a fraction of the side, in x and in y at once, at which a square's IoU with its shifted
    copy falls to iou_threshold. The overlap is a square of side 1 - s, so with o = (1 - s)^2,
    IoU = o / (2 - o); solving for s gives s = 1 - sqrt(2 IoU / (1 + IoU))."""
    return 1 - math.sqrt(2 * iou_threshold / (1 + iou_threshold))


def _compare_to_3_decimals(expected: float, received: Any) -> str | None:
    """A number right to 3 decimals: a fine sweep or a bisection is as good as the formula."""
    value = _as_number(received)
    if value is not None and abs(value - expected) <= 1e-3:
        return None
    return _compare_float(expected, received)


def check_diagonal_shift(fn: Callable) -> CheckResult:
    """fn(iou_threshold) -> the shift (fraction of the side, in x and y at once) where a square's IoU with
    its shifted copy falls to iou_threshold; right to 3 decimals."""
    cases = [
        Case((1.0,), "IoU 1: no shift at all"),
        Case((0.5,), "SSD's threshold, 0.5"),
        Case((0.7,), "0.7"),
        Case((0.3,), "0.3"),
        Case((0.1,), "0.1: nearly apart"),
    ]
    generator = _generator(14)
    cases += [Case((round(0.05 + 0.9 * float(torch.rand(1, generator=generator)), 2),), "a random threshold")
              for _ in range(4)]
    return _run_checks("check_diagonal_shift", fn, cases, _diagonal_shift, _compare_to_3_decimals,
                       ("iou_threshold",))


def _variance_per_column(variances: tuple[float, float]) -> Tensor:
    """(4,): the centre variance for cx and cy, the size variance for w and h."""
    return torch.tensor([variances[0], variances[0], variances[1], variances[1]])


def _reencode(offsets: Tensor, priors_cxcywh: Tensor, old_variances: tuple[float, float],
              new_variances: tuple[float, float]) -> Tensor:
    """(P, 4) offsets encoded with old_variances -> the same boxes' offsets under new_variances.

    An offset is a raw offset divided by its variance, so this is offsets * old / new, column by column:
    the same as encode(decode(offsets, priors, old), priors, new), without the round trip.
    """
    return offsets * _variance_per_column(old_variances) / _variance_per_column(new_variances)


def check_reencode(fn: Callable) -> CheckResult:
    """fn(offsets (P, 4), priors_cxcywh (P, 4), old_variances, new_variances) -> (P, 4) offsets of the same
    boxes under new_variances."""
    one_prior = _boxes([[0.5, 0.5, 0.4, 0.4]])
    cases = [
        Case((_boxes([[1.0, -2.0, 0.5, 1.5]]), one_prior, (0.1, 0.2), (0.1, 0.2)),
             "the same variances: nothing changes"),
        Case((_boxes([[1.0, -2.0, 0.5, 1.5]]), one_prior, (0.1, 0.2), (1.0, 1.0)),
             "variances (1, 1): the raw offsets"),
        Case((_boxes([[0.1, -0.2, 0.1, 0.3]]), one_prior, (1.0, 1.0), (0.1, 0.2)),
             "from raw offsets to SSD's variances"),
        Case((_boxes([[1.0, -2.0, 0.5, 1.5]]), one_prior, (0.1, 0.2), (0.2, 0.1)),
             "the two variances swapped"),
        Case((_boxes([]), _boxes([]), (0.1, 0.2), (1.0, 1.0)), "no priors (P = 0)"),
    ]
    generator = _generator(15)
    choices = [(0.1, 0.2), (0.1, 0.1), (0.2, 0.2), (1.0, 1.0), (0.05, 0.1)]
    for n in [2, 3, 5, 8]:
        priors = xyxy_to_cxcywh(_random_boxes(n, generator, min_size=0.1))
        offsets = torch.randn(n, 4, generator=generator).mul(1.5).round(decimals=2)
        old, new = (choices[i] for i in torch.randperm(len(choices), generator=generator)[:2].tolist())
        cases.append(Case((offsets, priors, old, new), f"{n} random offsets, variances {old} -> {new}"))
    return _run_checks("check_reencode", fn, cases, _reencode, _compare_tensors,
                       ("offsets", "priors_cxcywh", "old_variances", "new_variances"))


# "Predict, then run": the reader writes `answer = ...` in a small function, which the checker calls once
# with the question's inputs. A wrong number is answered with the right one and why; a wrong type
# (None, a tensor of many numbers) is only described, so a slip does not give the answer away.

def _check_prediction(name: str, fn: Callable, args: tuple, expected: float, tolerance: float,
                      why: str) -> CheckResult:
    """Call fn(*args) once; right if its number is within `tolerance` of `expected`. Prints why either way."""
    if not callable(fn):
        print(f"✗ {name} needs your function itself, e.g. {name}(my_function), not its result "
              f"(got a {type(fn).__name__}).")
        return CheckResult(False)
    fn_name = getattr(fn, "__name__", "your function")
    answer, error, _ = _call(fn, copy.deepcopy(args), _checking.TIME_LIMIT_S)
    if isinstance(error, NotImplementedError):
        print(f"Not attempted yet: replace `raise NotImplementedError` in {fn_name} with your code.")
        return CheckResult(False)
    if isinstance(error, _TookTooLong):
        print(f"✗ Not yet: {fn_name} took longer than {_checking.TIME_LIMIT_S:g} s and was stopped: "
              "is there a loop that never ends?")
        return CheckResult(False)
    if error is not None:
        print(f"✗ Not yet: {fn_name} {_describe_error(error, fn)}")
        return CheckResult(False)
    value = _as_number(answer)
    if value is None or math.isnan(value):
        message = _wrong_number_type(answer, "one number") if value is None else "returned NaN"
        print(f"✗ Not yet: {fn_name} {message}")
        return CheckResult(False)
    if abs(value - expected) <= tolerance:
        print(f"✓ Correct: passed all checks, {value:g} is right.\n  Why: {why}")
        return CheckResult(True)
    print(f"✗ Not yet: {fn_name} returned {value:g}, expected {expected:g}.\n  Why: {why}")
    return CheckResult(False)


_CONTAINED_BOX_QUESTION = (_boxes([[0.4, 0.4, 0.6, 0.6]]), _boxes([[0.3, 0.3, 0.7, 0.7]]))


def check_prediction_contained_box(fn: Callable) -> CheckResult:
    """fn(object_box (1, 4), default_box (1, 4)) -> the reader's prediction of their IoU, a number."""
    object_box, default_box = _CONTAINED_BOX_QUESTION
    iou = float(box_iou(object_box, default_box)[0, 0])
    why = (f"the overlap is the whole object (0.2 x 0.2 = 0.04) but the union is the whole default box "
           f"(0.4 x 0.4 = 0.16): IoU = {iou:.2f}, far below 0.5. Containing the object is not enough: "
           f"IoU also counts all the background the larger box covers.")
    return _check_prediction("check_prediction_contained_box", fn, _CONTAINED_BOX_QUESTION, iou, 0.01, why)


# Object A (label 1) overlaps prior 1 well; object B (label 2), small, overlaps prior 1 a little, and no
# prior better. Prior 0 is A itself, prior 2 is far from both.
_COMPETING_OBJECTS_QUESTION = (_boxes([[0.1, 0.1, 0.5, 0.5], [0.45, 0.45, 0.6, 0.6]]), torch.tensor([1, 2]),
                               _boxes([[0.3, 0.3, 0.4, 0.4], [0.35, 0.35, 0.4, 0.4], [0.8, 0.8, 0.2, 0.2]]))


def check_prediction_competing_objects(fn: Callable) -> CheckResult:
    """fn(gt_boxes (2, 4), gt_labels (2,), priors (3, 4)) -> the reader's prediction of the label that
    match gives prior 1 (0 for background)."""
    gt_boxes, gt_labels, priors = _COMPETING_OBJECTS_QUESTION
    _, labels = match(gt_boxes, gt_labels, priors)
    ious = box_iou(gt_boxes, cxcywh_to_xyxy(priors))
    why = (f"prior 1 overlaps A by {ious[0, 1]:.2f} (>= 0.5) and B by only {ious[1, 1]:.2f}, but it is B's best "
           f"prior: no prior overlaps B more. Step 1, every object keeps its best prior, comes first and "
           f"the threshold never takes that prior away, so prior 1 learns B (label {int(labels[1])}); A "
           f"still has prior 0 (IoU {ious[0, 0]:.2f}).")
    return _check_prediction("check_prediction_competing_objects", fn, _COMPETING_OBJECTS_QUESTION,
                             int(labels[1]), 0, why)


def _objects_left_without_positive(iou_threshold: float) -> tuple[int, str]:
    """How many objects of the first course photo the threshold alone (match without its step 1) would
    leave with no positive at iou_threshold, and why."""
    photos = load_photos()
    target = photos[0][1]
    best_ious = box_iou(target["boxes"], cxcywh_to_xyxy(ssd300_default_boxes())).max(dim=1).values
    names = [photos.class_names[label] for label in target["labels"].tolist()]
    details = ", ".join(f"{name} {best:.3f}" for name, best in zip(names, best_ious.tolist()))
    why = (f"without step 1 an object gets a positive only if some default box reaches IoU {iou_threshold} "
           f"with it, that is, if its best IoU does. The best IoUs are: {details}.")
    return int((best_ious < iou_threshold).sum()), why


def check_prediction_objects_left_without_positive(fn: Callable) -> CheckResult:
    """fn(iou_threshold) -> the reader's prediction of how many of the first photo's objects would get no
    positive at iou_threshold = 0.7 if match had only its threshold step."""
    expected, why = _objects_left_without_positive(0.7)
    return _check_prediction("check_prediction_objects_left_without_positive", fn, (0.7,), expected, 0, why)


__all__ += ["check_iou_xywh", "check_diagonal_shift", "check_reencode", "check_prediction_contained_box",
            "check_prediction_competing_objects", "check_prediction_objects_left_without_positive"]


if __name__ == "__main__":
    # `python -m ssd_lite.exercises student [...]`: the older spelling of `python -m ssd_lite.student_copies [...]`,
    # kept so that existing instructions keep working.
    import sys

    from ssd_lite.student_copies import main

    if sys.argv[1:2] != ["student"]:
        sys.exit("usage: python -m ssd_lite.exercises student [--notebooks DIR] [--out DIR] [--check]\n"
                 "(now spelled: python -m ssd_lite.student_copies [--notebooks DIR] [--out DIR] [--check])")
    sys.exit(main(sys.argv[2:]))


# ---------------------------------------------------------------------------------------------------
# Lesson 01: the Caffe recipe for scales, where a default box sits in the list, SSD512's two grids
# ---------------------------------------------------------------------------------------------------


__all__ += ["check_caffe_scales", "check_prior_index", "check_prediction_ssd512_grid_shift"]


def _caffe_scales(num_feature_maps: int, first_scale: float, s_min: float, s_max: float) -> list[float]:
    """The Caffe release's m + 1 scales: the first map's by hand, then s_min, s_min + step, ... for the
    other m - 1 maps and the last map's extra box, the step (s_max - s_min) / (m - 2) rounded down to
    whole percent. Counted in whole percent, as the Caffe scripts do: in floats 0.57 - 0.05 is 0.5199999."""
    step_percent = (round(100 * s_max) - round(100 * s_min)) // (num_feature_maps - 2)
    return [first_scale] + [(round(100 * s_min) + step_percent * k) / 100 for k in range(num_feature_maps)]


def _compare_caffe_scales(expected: tuple[list[float], tuple], received: Any):
    """The scales, with a hint for the two usual slips: a step not rounded down, or rounded by floats."""
    scales, (num_feature_maps, first_scale, s_min, s_max) = expected
    problem = _compare_floats(scales, received)
    if problem is None or "wrong values" not in problem:
        return None if problem is None else (problem, scales, received)
    values = [float(v) for v in received]
    exact_step = (s_max - s_min) / (num_feature_maps - 2)
    if _compare_floats([first_scale] + [s_min + exact_step * k for k in range(num_feature_maps)], values) is None:
        problem += (": the step must be rounded down to whole percent (SSD300's (0.9 - 0.2) / 4 = 0.175 "
                    "becomes 0.17)")
    elif _compare_floats(scales[:1] + [s - (k / 100) for k, s in enumerate(scales[1:])], values) is None:
        problem += (": your step is one percent too small, as floats make it (0.57 - 0.05 is 0.5199999...): "
                    "count in whole percent, e.g. round(100 * s_min)")
    return problem, scales, received


def check_caffe_scales(fn: Callable) -> CheckResult:
    """fn(num_feature_maps, first_scale, s_min, s_max) -> list of m + 1 scales by the Caffe release's recipe."""
    cases = [
        Case((6, 0.1, 0.2, 0.9), "SSD300: 0.1 by hand, then 0.2 to 0.9, the step 0.175 rounded down to 0.17"),
        Case((7, 0.07, 0.15, 0.9), "SSD512: 0.07 by hand, then 0.15 to 0.9 over six maps"),
        Case((3, 0.1, 0.2, 0.9), "three maps: one step, the whole range"),
        Case((4, 0.05, 0.3, 0.3), "s_min = s_max: a step of 0"),
        Case((5, 0.1, 0.2, 0.95), "five maps, a step of exactly 0.25"),
    ]
    generator = _generator(101)
    while len(cases) < 9:
        m, first, low, high = (_randint(3, 8, generator), _randint(3, 12, generator), _randint(13, 30, generator),
                               _randint(60, 95, generator))
        # Only settings where a float computation rounds down like the whole-percent one (see _caffe_scales):
        # the hint covers the others, but a case should not hinge on float noise.
        float_steps = {math.floor((high / 100 - low / 100) * 100 / (m - 2)),
                       math.floor((high / 100 - low / 100) / (m - 2) * 100)}
        if float_steps == {(high - low) // (m - 2)}:
            cases.append(Case((m, first / 100, low / 100, high / 100), f"{m} random maps"))
    return _run_checks("check_caffe_scales", fn, cases, _with_inputs(_caffe_scales), _compare_caffe_scales,
                       ("num_feature_maps", "first_scale", "s_min", "s_max"))


def _prior_index(feature_map_sizes: Sequence[int], aspect_ratios: Sequence[Sequence[float]], k: int, row: int,
                 col: int, box: int) -> int:
    """Where box `box` of cell (row, col) of map k sits in default_boxes' order: after every box of the
    earlier maps, then after the row * f + col cells before it in its map, A boxes each."""
    per_cell = [boxes_per_location(ratios) for ratios in aspect_ratios]
    earlier_maps = sum(f * f * a for f, a in zip(feature_map_sizes[:k], per_cell[:k]))
    f = feature_map_sizes[k]
    return earlier_maps + (row * f + col) * per_cell[k] + box


def _locate_prior(feature_map_sizes: Sequence[int], aspect_ratios: Sequence[Sequence[float]], index: int):
    """The inverse of _prior_index: (k, row, col, box) of default box number `index`, or None if there is none."""
    for k, (f, ratios) in enumerate(zip(feature_map_sizes, aspect_ratios)):
        a = boxes_per_location(ratios)
        if 0 <= index < f * f * a:
            cell, box = divmod(index, a)
            return k, cell // f, cell % f, box
        index -= f * f * a
    return None


def _compare_prior_index(expected: tuple[int, tuple], received: Any):
    """The index, and on a wrong one, which default box it points at instead."""
    index, (feature_map_sizes, aspect_ratios, *wanted) = expected
    problem = _compare_int(index, received)
    if problem is None or "wrong number" not in problem:
        return None if problem is None else (problem, index, received)
    value = _as_number(received)
    where = _locate_prior(feature_map_sizes, aspect_ratios, int(value)) if float(value).is_integer() else None
    if where is None:
        total = sum(f * f * boxes_per_location(ratios) for f, ratios in zip(feature_map_sizes, aspect_ratios))
        problem += f": there are {total} default boxes, numbered 0 to {total - 1}"
    else:
        problem += (f": that index is box {where[3]} of cell (row {where[1]}, col {where[2]}) of map {where[0]}; "
                    f"you were asked for box {wanted[3]} of cell (row {wanted[1]}, col {wanted[2]}) of map {wanted[0]}")
    return problem, index, received


def check_prior_index(fn: Callable) -> CheckResult:
    """fn(feature_map_sizes, aspect_ratios, k, row, col, box) -> int, the position of that default box in
    the (P, 4) tensor of priors.default_boxes (map by map, cells row by row, the cell's boxes in order)."""
    ssd300 = ((38, 19, 10, 5, 3, 1), ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))
    ssd512 = ((64, 32, 16, 8, 4, 2, 1), ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)))
    cases = [
        Case((*ssd300, 0, 0, 0, 0), "SSD300's very first default box"),
        Case((*ssd300, 0, 0, 1, 0), "the next cell along the row: after the 4 boxes of cell (0, 0)"),
        Case((*ssd300, 0, 1, 0, 0), "the first cell of the second row: after a whole row of 38 cells"),
        Case((*ssd300, 1, 0, 0, 0), "the first box of conv7: after all 5776 boxes of conv4_3"),
        Case((*ssd300, 5, 0, 0, 3), "SSD300's very last default box"),
        Case((*ssd300, 2, 3, 7, 5), "conv8_2, 6 boxes per cell"),
        Case(((3, 1), ((), (2,)), 0, 2, 1, 1), "a map with ratio 1 only: 2 boxes per cell"),
        Case((*ssd512, 4, 1, 2, 4), "SSD512's conv10_2 (4 x 4)"),
    ]
    generator = _generator(102)
    for _ in range(4):
        m = _randint(1, 5, generator)
        sizes = tuple(sorted((_randint(1, 20, generator) for _ in range(m)), reverse=True))
        ratios = tuple(((), (2,), (2, 3), (2, 3, 4))[_randint(0, 3, generator)] for _ in range(m))
        k = _randint(0, m - 1, generator)
        row, col = _randint(0, sizes[k] - 1, generator), _randint(0, sizes[k] - 1, generator)
        box = _randint(0, boxes_per_location(ratios[k]) - 1, generator)
        cases.append(Case((sizes, ratios, k, row, col, box), f"{m} random maps"))
    return _run_checks("check_prior_index", fn, cases, _with_inputs(_prior_index), _compare_prior_index,
                       ("feature_map_sizes", "aspect_ratios", "k", "row", "col", "box"))


_SSD512_FEATURE_MAP_SIZES = (64, 32, 16, 8, 4, 2, 1)
_SSD512_STEPS = (8, 16, 32, 64, 128, 256, 512)


def _grid_shift(feature_map_sizes: Sequence[int], steps: Sequence[float], image_size: int) -> float:
    """The largest distance in pixels between a cell centre on the paper's grid and on the step grid."""
    m = len(feature_map_sizes)
    scales, ratios = [0.1] * (m + 1), [()] * m  # only the centres matter here
    paper = default_boxes(feature_map_sizes, scales, ratios)
    step_grid = default_boxes(feature_map_sizes, scales, ratios, steps=steps, image_size=image_size)
    return float((step_grid[:, :2] - paper[:, :2]).abs().max()) * image_size


def check_prediction_ssd512_grid_shift(fn: Callable) -> CheckResult:
    """fn(feature_map_sizes, steps, image_size) -> the reader's prediction for SSD512's settings: the largest
    distance in pixels between a cell centre of the paper's grid, (j + 0.5) / f, and of the step grid,
    (j + 0.5) * step / image_size, over all its maps. (_check_prediction: see lessons 00 and 02 above.)"""
    question = (_SSD512_FEATURE_MAP_SIZES, _SSD512_STEPS, 512)
    why = ("512 halves evenly all the way down: 512 / 8 = 64 cells on conv4_3, 512 / 16 = 32 on conv7, ..., "
           "512 / 512 = 1. So every step is 512 / f, and (j + 0.5) * step / 512 = (j + 0.5) / f: the two grids "
           "are one. 300 does not halve evenly (300 / 8 = 37.5 on a 38-cell map), hence SSD300's shifts.")
    return _check_prediction("check_prediction_ssd512_grid_shift", fn, question, _grid_shift(*question), 0.01, why)


# ---------------------------------------------------------------------------------------------------
# Lessons 03 and 04: the gradient of smooth L1, equation 2 on boxes, mining over the whole batch, and
# their "predict, then run" questions (_check_prediction: see lessons 00 and 02 above)
# ---------------------------------------------------------------------------------------------------


__all__ += ["check_smooth_l1_gradient", "check_box_loss", "check_batch_hard_negative_mining",
            "check_prediction_beta_gradient", "check_prediction_batch_mining"]


def _smooth_l1_gradient(input: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """d smooth_l1(input, target, beta) / d input, elementwise: d / beta where |d| < beta, sign(d) beyond,
    with d = input - target. beta = 0 is plain L1: sign(d) everywhere (0 at d = 0, as autograd gives)."""
    difference = input - target
    if beta == 0:
        return torch.sign(difference)
    return (difference / beta).clamp(-1, 1)


def check_smooth_l1_gradient(fn: Callable) -> CheckResult:
    """fn(input, target, beta=1.0) -> the gradient of smooth_l1 with respect to input, same shape.

    Reference: _smooth_l1_gradient, which the tests compare with autograd. Cases without a beta call
    fn(input, target), so they check the default beta too.
    """
    cases = [
        Case((torch.tensor([0.0]), torch.tensor([0.0])), "no error: gradient 0"),
        Case((torch.tensor([0.5]), torch.tensor([0.0])), "a small error: the quadratic zone"),
        Case((torch.tensor([-0.25]), torch.tensor([0.0])), "a small negative error: a negative gradient"),
        Case((torch.tensor([3.0, -30.0]), torch.tensor([0.0, 0.0])), "large errors: the linear zone"),
        Case((torch.tensor([0.0]), torch.tensor([0.3])), "a prediction below its target: d = input - target"),
        Case((torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])), "errors of exactly beta = 1"),
        Case((torch.tensor([0.2, 1.5, -0.4]), torch.tensor([0.0, 0.0, 0.0]), 0.5), "beta = 0.5"),
        Case((torch.tensor([0.5, -2.0, 4.0]), torch.tensor([0.0, 0.0, 0.0]), 10.0),
             "beta = 10: every error in the quadratic zone"),
        Case((torch.tensor([0.7, -0.2]), torch.tensor([0.0, 0.0]), 0.0), "beta = 0: plain L1"),
    ]
    generator = _generator(31)
    for shape, beta in [((5,), None), ((3, 4), 1.0), ((2, 3, 4), 1 / 9), ((8,), 2.0)]:
        input = (torch.randn(shape, generator=generator) * 2).round(decimals=2)
        target = torch.randn(shape, generator=generator).round(decimals=2)
        args = (input, target) if beta is None else (input, target, beta)
        cases.append(Case(args, f"random {tuple(shape)} tensors" + ("" if beta is None else f", beta = {beta:.3g}")))
    return _run_checks("check_smooth_l1_gradient", fn, cases, _smooth_l1_gradient, _compare_tensors,
                       ("input", "target", "beta"))


def _box_loss(predicted_boxes: Tensor, gt_boxes: Tensor, priors: Tensor) -> Tensor:
    """Equation 2 for K positives whose predictions are boxes: (K,) smooth L1 between the predicted box's
    and the object's offsets from their default box (SSD's variances), summed over cx, cy, w, h."""
    return smooth_l1(encode(predicted_boxes, priors), encode(gt_boxes, priors)).sum(dim=1)


def _jitter(boxes_cxcywh: Tensor, shift: float, log_scale: float, generator: torch.Generator) -> Tensor:
    """Boxes moved by about `shift` and resized by a factor of about exp(+-log_scale), at random."""
    centres = boxes_cxcywh[:, :2] + shift * torch.randn(len(boxes_cxcywh), 2, generator=generator)
    sizes = boxes_cxcywh[:, 2:] * (log_scale * torch.randn(len(boxes_cxcywh), 2, generator=generator)).exp()
    return torch.cat([centres, sizes], dim=1)


def check_box_loss(fn: Callable) -> CheckResult:
    """fn(predicted_boxes (K, 4) xyxy, gt_boxes (K, 4) xyxy, priors (K, 4) cxcywh) -> (K,) the localisation
    loss of each positive, before the division by N. Reference: _box_loss (encode, then smooth_l1)."""
    small, large = _boxes([[0.5, 0.5, 0.2, 0.2]]), _boxes([[0.5, 0.5, 0.4, 0.4]])
    cases = [
        Case((_boxes([[0.4, 0.4, 0.6, 0.6]]), _boxes([[0.4, 0.4, 0.6, 0.6]]), small),
             "a perfect prediction: loss 0"),
        Case((_boxes([[0.42, 0.4, 0.62, 0.6]]), _boxes([[0.4, 0.4, 0.6, 0.6]]), small),
             "0.02 to the right, default box 0.2 wide"),
        Case((_boxes([[0.32, 0.3, 0.72, 0.7]]), _boxes([[0.3, 0.3, 0.7, 0.7]]), large),
             "the same 0.02 shift, default box 0.4 wide"),
        Case((_boxes([[0.3, 0.4, 0.7, 0.6]]), _boxes([[0.4, 0.4, 0.6, 0.6]]), small),
             "twice as wide as the object: the linear zone"),
        Case((_boxes([[0.42, 0.4, 0.62, 0.6], [0.3, 0.3, 0.7, 0.8]]), _boxes([[0.4, 0.4, 0.6, 0.6]] * 2),
              torch.cat([small, large])), "two positives: one loss each"),
        Case((_boxes([]), _boxes([]), _boxes([])), "no positives (K = 0)"),
    ]
    generator = _generator(32)
    for k in [3, 5, 8]:
        # Objects at least 0.2 wide, default boxes and predictions near them: every box stays valid.
        gt_boxes = _random_boxes(k, generator, min_size=0.2)
        objects = xyxy_to_cxcywh(gt_boxes)
        priors = _jitter(objects, 0.05, 0.3, generator).round(decimals=3)
        predicted = cxcywh_to_xyxy(_jitter(objects, 0.03, 0.2, generator)).clamp(0, 1).round(decimals=2)
        cases.append(Case((predicted, gt_boxes, priors), f"{k} random positives"))
    return _run_checks("check_box_loss", fn, cases, _box_loss, _compare_tensors,
                       ("predicted_boxes", "gt_boxes", "priors"))


def _batch_hard_negative_mining(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float = 3) -> Tensor:
    """Mining over the whole batch: the neg_pos_ratio * N hardest negatives of all its images together,
    N the batch's positives. (B, P) -> (B, P) bool. Not SSD's rule (it mines per image): lesson 04's variant."""
    flat = hard_negative_mining(conf_loss.reshape(1, -1), labels.reshape(1, -1), neg_pos_ratio)
    return flat.reshape(labels.shape)


def _compare_batch_mining(expected: tuple[Tensor, tuple], received: Any):
    """The batch's mask, or any mask an equally valid tie-break gives; per-image mining is named as such.
    `expected` is (mask, (conf_loss, labels, ...)), from _with_inputs."""
    mask, (conf_loss, labels, *ratio) = expected
    problem = _compare_tensors(mask, received)
    if problem is None or "wrong values" not in problem:
        return None if problem is None else (problem, mask, received)
    received = received.detach().cpu()
    if torch.equal(received, hard_negative_mining(conf_loss, labels, *ratio)):
        return ("mined per image, as SSD does: here rank the negatives of all the images together and keep "
                "neg_pos_ratio times the positives of the whole batch", mask, received)
    flat = _compare_mining((mask.reshape(1, -1), (conf_loss.reshape(1, -1), labels.reshape(1, -1))),
                           received.reshape(1, -1))
    if flat is None:
        return None  # the same choice up to ties
    if "wrong number" in flat[0]:
        return (f"picked {int(received.sum())} negatives in all, expected {int(mask.sum())}: neg_pos_ratio times "
                f"the batch's {int((labels > 0).sum())} positives, or every negative if there are fewer",
                mask, received)
    if "hardest" in flat[0]:
        return ("did not pick the batch's hardest negatives: one left out has a higher loss than one picked",
                mask, received)
    return flat[0], mask, received


def check_batch_hard_negative_mining(fn: Callable) -> CheckResult:
    """fn(conf_loss (B, P), labels (B, P), neg_pos_ratio=3) -> (B, P) bool mask: the neg_pos_ratio * N
    hardest negatives of the whole batch, N its number of positives. Reference: _batch_hard_negative_mining.
    Cases avoid ties in the loss, and any tie-break is accepted."""
    cases = [
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]]), torch.tensor([[1, 0, 0, 0, 0]]), 1),
             "one image: the same as per image"),
        Case((torch.tensor([[0.3, 0.9, 0.1, 0.4], [0.5, 0.8, 0.7, 0.6]]), torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0]]),
              1), "the hardest negative is in the image without objects"),
        Case((torch.tensor([[0.2, 0.8, 0.4, 0.6]]), torch.tensor([[0, 0, 0, 0]])), "no positives: no negatives"),
        Case((torch.tensor([[0.9, 0.1, 0.5], [0.3, 0.7, 0.2]]), torch.tensor([[1, 0, 0], [2, 0, 0]])),
             "more negatives wanted (6) than the batch has (4): take them all"),
        Case((torch.tensor([[0.6, 0.2, 0.3, 0.1, 0.15], [0.05, 0.9, 0.8, 0.7, 0.5]]),
              torch.tensor([[1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]), 2), "ratio 2: both from the second image"),
    ]
    generator = _generator(33)
    for batch_size, num_priors, ratio in [(2, 10, 3), (3, 12, 2), (2, 30, 3), (4, 16, None)]:
        conf_loss, labels = _mining_case(generator, batch_size, num_priors)
        labels[-1] = 0  # one image without objects, where per image and per batch differ most
        args = (conf_loss, labels) if ratio is None else (conf_loss, labels, ratio)
        cases.append(Case(args, f"{batch_size} random images of {num_priors} priors, the last without objects"))
    return _run_checks("check_batch_hard_negative_mining", fn, cases, _with_inputs(_batch_hard_negative_mining),
                       _compare_batch_mining, ("conf_loss", "labels", "neg_pos_ratio"))


_BETA_QUESTION = (0.5, (0.1, 1.0, 10.0))  # an error d, and the betas to compare


def check_prediction_beta_gradient(fn: Callable) -> CheckResult:
    """fn(error, betas) -> the reader's prediction of the beta among `betas` that gives smooth L1 the
    largest gradient at that error (lesson 03's question: d = 0.5, beta 0.1, 1 or 10)."""
    error, betas = _BETA_QUESTION
    gradients = [float(_smooth_l1_gradient(torch.tensor(error), torch.tensor(0.0), beta)) for beta in betas]
    details = ", ".join(f"beta {beta:g}: {gradient:g}" for beta, gradient in zip(betas, gradients))
    why = (f"the gradient is d / beta while |d| < beta, and 1 once |d| >= beta; at d = {error:g} that gives "
           f"{details}. A small beta puts the error in the linear zone, where smooth L1 pushes like L1 with full "
           f"force; a large beta makes it a flattened L2 that hardly pushes at all.")
    best = betas[max(range(len(betas)), key=gradients.__getitem__)]
    return _check_prediction("check_prediction_beta_gradient", fn, _BETA_QUESTION, best, 1e-6, why)


def _batch_mining_question() -> tuple[Tensor, Tensor]:
    """Lesson 04's batch: (conf_loss (2, P), labels (2, P)) for the coffee photo, scored by an untrained
    network (random logits), and an image without objects on which the network sees cups everywhere."""
    photos = load_photos()
    priors = ssd300_default_boxes()
    target = photos[1][1]  # the coffee photo
    _, coffee_labels = match(target["boxes"], target["labels"], priors)
    labels = torch.stack([coffee_labels, torch.zeros_like(coffee_labels)])
    num_classes = len(photos.class_names)
    logits = torch.randn(2, len(priors), num_classes, generator=_generator(1))
    logits[1, :, photos.class_names.index("cup")] += 6.0  # sure of a cup in every box of image 1
    conf_loss = F.cross_entropy(logits.reshape(-1, num_classes), labels.reshape(-1), reduction="none")
    return conf_loss.view(2, -1), labels


def check_prediction_batch_mining(fn: Callable) -> CheckResult:
    """fn(conf_loss (2, P), labels (2, P)) -> the reader's prediction of how many of the negatives mined over
    the whole batch come from image 0, the coffee photo (lesson 04's question)."""
    conf_loss, labels = _batch_mining_question()
    mined = _batch_hard_negative_mining(conf_loss, labels)
    from_photo = int(mined[0].sum())
    negative_loss = conf_loss.masked_fill(labels > 0, float("-inf"))
    hardest_in_photo = float(negative_loss[0].max())
    kth_in_empty = float(negative_loss[1].sort(descending=True).values[int(mined.sum()) - 1])
    why = (f"the batch has N = {int((labels > 0).sum())} positives, all in the photo, so {int(mined.sum())} "
           f"negatives are mined. Ranked together, the image without objects wins them: the network is sure it "
           f"sees a cup in each of its boxes, so its {int(mined.sum())} hardest negatives all cost more (at least "
           f"{kth_in_empty:.2f}) than the photo's hardest ({hardest_in_photo:.2f}). So {from_photo} come from the "
           f"photo, which then learns nothing about its background. Per image (SSD's rule) it is the reverse: "
           f"{int(hard_negative_mining(conf_loss, labels)[0].sum())} from the photo, none from the empty image.")
    return _check_prediction("check_prediction_batch_mining", fn, (conf_loss, labels), from_photo, 0, why)


# ---------------------------------------------------------------------------------------------------
# Lessons 05 and 07: soft-NMS, a chain of boxes, duplicates in a ranked list, how AP reads a curve
# ---------------------------------------------------------------------------------------------------


__all__ += ["check_soft_nms", "check_prediction_nms_chain", "check_precision_recall_with_duplicates",
            "check_prediction_eleven_point_ap", "check_prediction_low_scoring_false_positives"]


def _soft_nms(boxes: Tensor, scores: Tensor, sigma: float = 0.5,
              score_threshold: float = 0.001) -> tuple[Tensor, Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017): take the best box left, as greedy NMS does, but instead of
    dropping the boxes that overlap it, multiply their scores by exp(-IoU^2 / sigma); repeat. A box whose
    score is (or falls) below score_threshold is dropped. Returns keep (K,) int64, in the order chosen,
    and (K,) the scores the kept boxes had when chosen (equal scores: lower index first)."""
    scores = scores.clone()
    remaining = torch.arange(len(boxes))
    remaining = remaining[scores >= score_threshold]
    keep, kept_scores = [], []
    while len(remaining) > 0:
        best = int(remaining[scores[remaining].argmax()])  # argmax gives the first maximum: lower index
        keep.append(best)
        kept_scores.append(float(scores[best]))
        remaining = remaining[remaining != best]
        ious = box_iou(boxes[best][None], boxes[remaining])[0]
        scores[remaining] *= torch.exp(-ious ** 2 / sigma)  # no overlap: factor 1; identical box: exp(-1/sigma)
        remaining = remaining[scores[remaining] >= score_threshold]
    return torch.tensor(keep, dtype=torch.long), torch.tensor(kept_scores, dtype=scores.dtype)


def _soft_nms_margin(boxes: Tensor, scores: Tensor, sigma: float, score_threshold: float) -> float:
    """How close soft-NMS comes to a tie, or to the threshold, on this input (float64): a random case is
    only fair if a correct answer computed in another order cannot decide it the other way."""
    scores = scores.double().clone()
    remaining = list(range(len(boxes)))
    margin = math.inf
    while remaining:
        margin = min([margin] + [abs(float(scores[i]) - score_threshold) for i in remaining])
        remaining = [i for i in remaining if scores[i] >= score_threshold]
        if not remaining:
            break
        ranked = sorted((float(scores[i]) for i in remaining), reverse=True)
        if len(ranked) > 1:
            margin = min(margin, ranked[0] - ranked[1])
        best = max(remaining, key=lambda i: float(scores[i]))
        remaining.remove(best)
        for i in remaining:
            scores[i] *= math.exp(-float(box_iou(boxes[best][None], boxes[i][None])) ** 2 / sigma)
    return margin


def _compare_soft_nms(expected: tuple[tuple[Tensor, Tensor], tuple], received: Any):
    """keep and scores of soft-NMS, with a hint for the answer of plain NMS. `expected` is
    ((keep, scores), inputs), from _with_inputs."""
    (keep, kept_scores), (boxes, scores, sigma, score_threshold) = expected
    problem = _compare_pair(("keep", "scores"))((keep, kept_scores), received)
    if problem is None or not isinstance(received, (tuple, list)) or len(received) != 2:
        return problem
    received_keep = received[0]
    if isinstance(received_keep, Tensor) and received_keep.dim() == 1 and len(received_keep) < len(keep) \
            and set(received_keep.tolist()) < set(keep.tolist()):
        dropped = sorted(set(keep.tolist()) - set(received_keep.tolist()))
        message = (f"dropped boxes {dropped}, which soft-NMS keeps: it does not drop a box that overlaps the "
                   f"chosen one, it multiplies its score by exp(-IoU^2 / sigma), and drops a box only once its "
                   f"score is below score_threshold")
        return message, (keep, kept_scores), received
    return problem


def check_soft_nms(fn: Callable) -> CheckResult:
    """fn(boxes (K, 4) xyxy, scores (K,), sigma, score_threshold) -> (keep (K',) int64, scores (K',)):
    Gaussian soft-NMS, the kept boxes in the order chosen with the scores they had then."""
    same = [0.1, 0.1, 0.5, 0.5]
    cases = [
        Case((_boxes([same]), torch.tensor([0.9]), 0.5, 0.001), "one box: keep it, score unchanged"),
        Case((_boxes([[0.0, 0.0, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]), torch.tensor([0.8, 0.7]), 0.5, 0.001),
             "two separate boxes (IoU 0): both kept, scores unchanged"),
        Case((_boxes([same, same]), torch.tensor([0.6, 0.9]), 0.5, 0.001),
             "two identical boxes: the lower one is kept too, its score times exp(-1 / sigma)"),
        Case((_boxes([[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5], [0.6, 0.6, 0.9, 0.9]]),
              torch.tensor([0.9, 0.85, 0.5]), 0.5, 0.001),
             "after its decay, box 1 falls behind box 2, which overlaps nothing: choose by the new scores"),
        Case((_boxes([same, same, same]), torch.tensor([0.9, 0.8, 0.7]), 0.5, 0.05),
             "three identical boxes: the third decays twice, below score_threshold, and is dropped"),
        Case((_boxes([same, [0.2, 0.1, 0.6, 0.5]]), torch.tensor([0.9, 0.8]), 0.1, 0.001),
             "a small sigma decays harder"),
        Case((_boxes([]), torch.zeros(0), 0.5, 0.001), "no boxes"),
    ]
    generator = _generator(16)
    for n, sigma, score_threshold in [(4, 0.5, 0.001), (6, 0.3, 0.05), (8, 0.5, 0.01), (12, 1.0, 0.1)]:
        while True:
            boxes = _crowded_boxes(n, 0.5, generator)
            scores = _distinct_scores(n, generator)
            if _soft_nms_margin(boxes, scores, sigma, score_threshold) > 1e-3:
                break
        cases.append(Case((boxes, scores, sigma, score_threshold),
                          f"{n} random boxes, sigma {sigma}, score_threshold {score_threshold}"))
    return _run_checks("check_soft_nms", fn, cases, _with_inputs(_soft_nms), _compare_soft_nms,
                       ("boxes", "scores", "sigma", "score_threshold"))


# Lesson 05's three boxes in a row, each a third of its width right of the one before.
_NMS_CHAIN_QUESTION = (_boxes([[0.0, 0.0, 0.3, 0.3], [0.1, 0.0, 0.4, 0.3], [0.2, 0.0, 0.5, 0.3]]),
                       torch.tensor([0.9, 0.8, 0.7]), 0.45)


def check_prediction_nms_chain(fn: Callable) -> CheckResult:
    """fn(boxes (3, 4), scores (3,), iou_threshold) -> the reader's prediction of how many boxes nms keeps."""
    boxes, scores, iou_threshold = _NMS_CHAIN_QUESTION
    keep = nms(boxes, scores, iou_threshold)
    ious = box_iou(boxes, boxes)
    why = (f"box 0 (score 0.9) is kept first and drops box 1, which overlaps it by {ious[0, 1]:.2f} > "
           f"{iou_threshold}. A dropped box suppresses nothing, so box 2 is compared with box 0 only: IoU "
           f"{ious[0, 2]:.2f}, kept. NMS keeps boxes {keep.tolist()}; a chain of overlaps does not make one object.")
    return _check_prediction("check_prediction_nms_chain", fn, _NMS_CHAIN_QUESTION, len(keep), 0, why)


def _precision_recall_with_duplicates(object_hit: Tensor, num_objects: int) -> tuple[Tensor, Tensor]:
    """Precision and recall after each detection of a ranked list (best score first), where object_hit[i]
    is the object detection i overlaps by IoU >= 0.5, or -1 for none. Only the first detection of an object
    finds it; a later one is a duplicate, a false positive."""
    found = set()
    is_true_positive = []
    for hit in object_hit.tolist():
        is_true_positive.append(hit >= 0 and hit not in found)
        found.add(hit)
    rank_scores = torch.arange(len(is_true_positive), 0, -1, dtype=torch.float64)  # already best first
    return precision_recall(rank_scores, torch.tensor(is_true_positive, dtype=torch.bool), num_objects)


def check_precision_recall_with_duplicates(fn: Callable) -> CheckResult:
    """fn(object_hit (K,) int64, best score first, -1 for no object; num_objects) -> (precision (K,),
    recall (K,)), a duplicate of an object already found counting as a false positive."""
    cases = [
        Case((torch.tensor([0]), 1), "one detection finds the one object"),
        Case((torch.tensor([-1]), 2), "one detection on no object"),
        Case((torch.tensor([0, 0]), 1), "the same object twice: the second is a duplicate, a false positive"),
        Case((torch.tensor([0, -1, 0, 1]), 2), "found, wrong, duplicate, found"),
        Case((torch.tensor([2, 2, 2, 0]), 4), "three detections of object 2, then object 0; two objects never found"),
        Case((torch.zeros(0, dtype=torch.long), 3), "no detections (K = 0)"),
    ]
    generator = _generator(17)
    for k, num_objects in [(5, 2), (8, 3), (12, 5), (20, 6)]:
        object_hit = torch.randint(-1, num_objects, (k,), generator=generator)
        cases.append(Case((object_hit, num_objects), f"{k} random detections of {num_objects} objects"))
    return _run_checks("check_precision_recall_with_duplicates", fn, cases, _precision_recall_with_duplicates,
                       _compare_pair(("precision", "recall")), ("object_hit", "num_objects"))


# Lesson 07's one-point curve: a class with 2 objects, and one detection, which is right.
_ONE_POINT_CURVE_QUESTION = (torch.tensor([1.0]), torch.tensor([0.5]))


def check_prediction_eleven_point_ap(fn: Callable) -> CheckResult:
    """fn(precision (1,), recall (1,)) -> the reader's prediction of the 11-point AP of that curve."""
    precision, recall = _ONE_POINT_CURVE_QUESTION
    aps = {rule: average_precision(precision, recall, rule) for rule in ("11point", "all", "101point")}
    why = (f"the envelope is 1 up to recall 0.5 and 0 beyond it. Of the 11 points 0, 0.1, ..., 1.0, six "
           f"(0 to 0.5) read 1: 6/11 = {aps['11point']:.3f}. The area ('all') is 0.5 x 1 = {aps['all']:.3f}, "
           f"and 101 points give 51/101 = {aps['101point']:.3f}. The coarser the sampling, the more the "
           f"point at recall 0, always the curve's best precision, weighs.")
    return _check_prediction("check_prediction_eleven_point_ap", fn, _ONE_POINT_CURVE_QUESTION,
                             aps["11point"], 0.005, why)


# Lesson 07's question: both objects found by the two best detections, then 100 lower-scored wrong ones.
_LOW_SCORING_FALSE_POSITIVES_QUESTION = (torch.cat([torch.tensor([0.9, 0.8]), torch.linspace(0.5, 0.01, 100)]),
                                         torch.cat([torch.ones(2, dtype=torch.bool), torch.zeros(100, dtype=torch.bool)]),
                                         2)


def check_prediction_low_scoring_false_positives(fn: Callable) -> CheckResult:
    """fn(scores (102,), is_true_positive (102,), num_ground_truth) -> the reader's prediction of the
    all-point AP of those detections."""
    scores, is_true_positive, num_ground_truth = _LOW_SCORING_FALSE_POSITIVES_QUESTION
    before = average_precision(*precision_recall(scores[:2], is_true_positive[:2], num_ground_truth))
    after = average_precision(*precision_recall(scores, is_true_positive, num_ground_truth))
    why = (f"the AP is {before:.3f} with the two right detections alone and {after:.3f} with the 100 wrong ones "
           f"added. They come after full recall: the envelope at each recall reads the best precision at that "
           f"recall or higher, and full recall is first reached with precision 1, so the later, lower points "
           f"change nothing. A false positive costs AP only when it scores above some true positive.")
    return _check_prediction("check_prediction_low_scoring_false_positives", fn,
                             _LOW_SCORING_FALSE_POSITIVES_QUESTION, after, 0.005, why)


# ---------------------------------------------------------------------------------------------------
# Appendix A1, the bug zoo: the reader writes the test that catches a bug, and a "predict, then run"
# question (_check_prediction: see lessons 00 and 02 above)
# ---------------------------------------------------------------------------------------------------


class _Bug(NamedTuple):
    """A broken variant for the reader's test: the arguments the test is called with, what is broken,
    and a small input on which it goes wrong with what it gives (shown if the test lets it through)."""
    args: tuple
    note: str
    example: str


def _passed(outcome: Any) -> bool | None:
    """Whether a test's return value says "passed": True or False (also numpy's and one-element bool
    tensors), None for anything else."""
    if isinstance(outcome, (bool, np.bool_)):
        return bool(outcome)
    if isinstance(outcome, Tensor) and outcome.dtype == torch.bool and outcome.numel() == 1:
        return bool(outcome)
    return None


def _check_bug_test(name: str, fn: Callable, correct: tuple, what: str, bugs: Sequence[_Bug]) -> CheckResult:
    """Run the reader's test fn(*args) on the correct function(s), then on each broken variant.

    A test passes a function only by returning True; raising (an AssertionError, usually) or returning
    anything else fails it. The answer is right if the test passes `correct` and fails every bug. Each
    run gets fresh copies of its arguments and leaves torch's random state as it found it, so a test
    may draw random boxes.
    """
    if not callable(fn):
        print(f"✗ {name} needs your function itself, e.g. {name}(my_test), not its result "
              f"(got a {type(fn).__name__}).")
        return CheckResult(False)
    fn_name = getattr(fn, "__name__", "your function")

    def run(args: tuple) -> tuple[Any, BaseException | None]:
        with torch.random.fork_rng(devices=[]):
            outcome, error, _ = _call(fn, copy.deepcopy(args), _checking.TIME_LIMIT_S)
        return outcome, error

    outcome, error = run(correct)
    if isinstance(error, NotImplementedError):
        print(f"Not attempted yet: replace `raise NotImplementedError` in {fn_name} with your code.")
        return CheckResult(False)
    if isinstance(error, _TookTooLong):
        print(f"✗ Not yet: {fn_name} took longer than {_checking.TIME_LIMIT_S:g} s on the correct {what} and "
              "was stopped: is there a loop that never ends?")
        return CheckResult(False)
    if error is not None:
        print(f"✗ Not yet: {fn_name} fails on the correct {what}, expected it to pass (return True):\n"
              f"  {fn_name} {_describe_error(error, fn)}")
        return CheckResult(False)
    if _passed(outcome) is not True:
        message = "returned False" if _passed(outcome) is False else _wrong_number_type(outcome, "True")
        print(f"✗ Not yet: {fn_name} {message} (on the correct {what}, which it must pass: end your test with "
              "`return True`, after the asserts)")
        return CheckResult(False)
    missed = []
    for bug in bugs:
        outcome, error = run(bug.args)
        if isinstance(error, _TookTooLong):
            print(f"✗ Not yet: {fn_name} took longer than {_checking.TIME_LIMIT_S:g} s on a broken {what} "
                  f"({bug.note}) and was stopped: is there a loop that never ends?")
            return CheckResult(False)
        if error is None and _passed(outcome) is True:
            missed.append(bug)
    if not missed:
        print(f"✓ Correct: passed all {len(bugs) + 1} checks: {fn_name} passes the correct {what} and fails each "
              f"of the {len(bugs)} broken ones:")
        for bug in bugs:
            print(f"  - {bug.note}")
        return CheckResult(True)
    print(f"✗ Not yet: {fn_name} passes {len(missed)} of the {len(bugs)} broken {what}s, expected it to fail "
          f"on each (an assert that fails). The first it let through: {missed[0].note}.\n  {missed[0].example}")
    return CheckResult(False)


# Broken horizontal flips of (N, 4) normalised xyxy boxes; the right one is _hflip_boxes (lesson 06).

def _hflip_corners_not_swapped(boxes: Tensor) -> Tensor:
    x_min, y_min, x_max, y_max = boxes.unbind(-1)
    return torch.stack([1 - x_min, y_min, 1 - x_max, y_max], dim=-1)  # the left edge stays "x_min"


def _hflip_flips_y(boxes: Tensor) -> Tensor:
    x_min, y_min, x_max, y_max = boxes.unbind(-1)
    return torch.stack([x_min, 1 - y_max, x_max, 1 - y_min], dim=-1)  # a vertical flip


def _hflip_one_pixel_off(boxes: Tensor) -> Tensor:
    """The pixel-index habit x -> W - 1 - x, on a 128-pixel image: every box lands a pixel too far left."""
    return _hflip_boxes(boxes) - torch.tensor([1 / 128, 0.0, 1 / 128, 0.0], dtype=boxes.dtype)


def _hflip_in_place(boxes: Tensor) -> Tensor:
    """The right boxes, written over the input: the data set's own boxes get flipped too."""
    return boxes.copy_(_hflip_boxes(boxes))


def _flip_example(hflip: Callable) -> str:
    boxes = _boxes([[0.1, 0.2, 0.3, 0.6]])
    flipped = hflip(boxes)
    if hflip is _hflip_in_place:
        return ("hflip(boxes) returns the right boxes, but afterwards `boxes` holds them too: the caller's "
                "boxes were overwritten")
    return f"hflip({_show(_boxes([[0.1, 0.2, 0.3, 0.6]]))}) = {_show(flipped)}; right: {_show(_hflip_boxes(boxes))}"


def check_hflip_test(fn: Callable) -> CheckResult:
    """fn(hflip) -> True if hflip, a function (N, 4) normalised xyxy -> (N, 4) boxes of the left-right
    mirrored image, is right; an AssertionError (or False) if not. Right if it passes _hflip_boxes and fails
    each broken flip."""
    bugs = [_Bug((flip,), note, _flip_example(flip)) for flip, note in [
        (_hflip_corners_not_swapped, "mirrors x but does not swap the corners: x_max < x_min"),
        (_hflip_flips_y, "flips the image upside down instead of left-right"),
        (_hflip_one_pixel_off, "one pixel off: x -> 1 - x - 1/128, the W - 1 - x habit of pixel indices"),
        (_hflip_in_place, "right boxes, but written over its input"),
    ]]
    return _check_bug_test("check_hflip_test", fn, (_hflip_boxes,), "flip", bugs)


# Broken box coders (encode_fn(boxes_xyxy, priors_cxcywh), decode_fn(offsets, priors_cxcywh)). Three are
# consistent, the same slip on both sides, so that decode(encode(boxes)) still gives the boxes back.

def _encode_centre_by_other_side(boxes_xyxy: Tensor, priors_cxcywh: Tensor) -> Tensor:
    """Centre offsets divided by the default box's height for x and by its width for y."""
    boxes, (v0, v1) = xyxy_to_cxcywh(boxes_xyxy), VARIANCES
    return torch.stack([(boxes[:, 0] - priors_cxcywh[:, 0]) / priors_cxcywh[:, 3] / v0,
                        (boxes[:, 1] - priors_cxcywh[:, 1]) / priors_cxcywh[:, 2] / v0,
                        torch.log(boxes[:, 2] / priors_cxcywh[:, 2]) / v1,
                        torch.log(boxes[:, 3] / priors_cxcywh[:, 3]) / v1], dim=1)


def _decode_centre_by_other_side(offsets: Tensor, priors_cxcywh: Tensor) -> Tensor:
    (v0, v1), (cx, cy, w, h) = VARIANCES, priors_cxcywh.unbind(-1)
    boxes = torch.stack([cx + offsets[:, 0] * v0 * h, cy + offsets[:, 1] * v0 * w,
                         w * torch.exp(offsets[:, 2] * v1), h * torch.exp(offsets[:, 3] * v1)], dim=1)
    return cxcywh_to_xyxy(boxes)


def _encode_without_log(boxes_xyxy: Tensor, priors_cxcywh: Tensor) -> Tensor:
    """Size offsets (g_w / d_w - 1) / v1: the ratio, not its log."""
    boxes, (v0, v1) = xyxy_to_cxcywh(boxes_xyxy), VARIANCES
    return torch.cat([(boxes[:, :2] - priors_cxcywh[:, :2]) / priors_cxcywh[:, 2:] / v0,
                      (boxes[:, 2:] / priors_cxcywh[:, 2:] - 1) / v1], dim=1)


def _decode_without_log(offsets: Tensor, priors_cxcywh: Tensor) -> Tensor:
    v0, v1 = VARIANCES
    centres = priors_cxcywh[:, :2] + offsets[:, :2] * v0 * priors_cxcywh[:, 2:]
    sizes = priors_cxcywh[:, 2:] * (1 + offsets[:, 2:] * v1)
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)


def _coder_example(encode_fn: Callable, decode_fn: Callable) -> str:
    box, prior = _boxes([[0.3, 0.2, 0.7, 0.5]]), _boxes([[0.45, 0.4, 0.2, 0.4]])
    offsets = encode_fn(box, prior)
    return (f"with box = {_show(box)} and default box (cxcywh) {_show(prior)}: encode_fn gives {_show(offsets)} "
            f"(right: {_show(encode(box, prior))}), decode_fn(encode_fn(...)) gives {_show(decode_fn(offsets, prior))}")


def _with_variances(function: Callable, variances: tuple[float, float]) -> Callable:
    def with_variances(boxes: Tensor, priors_cxcywh: Tensor) -> Tensor:
        return function(boxes, priors_cxcywh, variances)
    return with_variances


def check_box_coder_test(fn: Callable) -> CheckResult:
    """fn(encode_fn, decode_fn) -> True if the pair computes the paper's offsets (eq. 2, variances 0.1 and
    0.2) and decode_fn inverts encode_fn; an AssertionError (or False) if not. Right if it passes
    ssd_lite's encode and decode and fails each broken pair."""
    pairs = [
        (encode, _with_variances(decode, (1.0, 1.0)), "decode forgets the variances (encode uses them)"),
        (_with_variances(encode, (1.0, 1.0)), decode, "encode forgets the variances (decode uses them)"),
        (_with_variances(encode, VARIANCES[::-1]), _with_variances(decode, VARIANCES[::-1]),
         "the two variances swapped, on both sides: decode(encode(b)) is still b"),
        (_encode_centre_by_other_side, _decode_centre_by_other_side,
         "centre offsets divided by the wrong side (x by the height), on both sides"),
        (_encode_without_log, _decode_without_log, "size offsets without the log, on both sides"),
    ]
    bugs = [_Bug((encode_fn, decode_fn), note, _coder_example(encode_fn, decode_fn))
            for encode_fn, decode_fn, note in pairs]
    return _check_bug_test("check_box_coder_test", fn, (encode, decode), "encode/decode pair", bugs)


_PIXEL_BOX_QUESTION = (_boxes([[40.0, 48.0, 88.0, 96.0]]), 128)  # an object given in pixels of a 128 image


def _pixel_box_positives(pixel_box: Tensor, image_size: int) -> tuple[int, str]:
    """How many of the course model's default boxes a `match` without input checks would make positive
    for one object given in pixels of an image_size image instead of fractions, and why (the checker's answer and
    explanation). The default boxes are fractions of the image, whatever its size."""
    with torch.random.fork_rng(devices=[]):  # building the model draws its random weights: leave no trace
        priors = default_model(num_classes=6).priors
    ious = box_iou(pixel_box, cxcywh_to_xyxy(priors))[0]  # (P,)
    best = int(ious.argmax())  # match's step 1: the object's best default box, whatever its IoU
    positives = set((ious >= 0.5).nonzero().flatten().tolist()) | {best}
    offsets = encode(pixel_box, priors[best:best + 1])
    loc_loss = float(smooth_l1(offsets, torch.zeros_like(offsets)).sum())  # if the network predicted 0
    reach = float(cxcywh_to_xyxy(priors).max())
    x_min, _, x_max, _ = pixel_box[0].tolist()
    why = (f"the default boxes are in fractions of the image (none reaches past {reach:.2f}) and the object lies "
           f"from x = {x_min:g} to {x_max:g}, so "
           f"every IoU is {float(ious.max()):g}: step 2 (IoU >= 0.5) makes none positive. But step 1 gives each "
           f"object its best default box whatever the IoU, and with all IoUs tied at 0 argmax takes the first, "
           f"default box {best}, in the top-left corner. That one box must learn the offsets "
           f"{[round(v, 1) for v in offsets[0].tolist()]}: a localisation loss of about {loc_loss:,.0f} instead of "
           f"about 1, "
           f"and an 'object' in the top-left corner of every image.")
    return len(positives), why


def check_prediction_pixel_positives(fn: Callable) -> CheckResult:
    """fn(pixel_box (1, 4), image_size) -> the reader's prediction of how many default boxes of the course
    model a match without input checks makes positive for an object given in pixels."""
    expected, why = _pixel_box_positives(*_PIXEL_BOX_QUESTION)
    return _check_prediction("check_prediction_pixel_positives", fn, _PIXEL_BOX_QUESTION, expected, 0, why)


__all__ += ["check_hflip_test", "check_box_coder_test", "check_prediction_pixel_positives"]


# ---------------------------------------------------------------------------------------------------
# Lesson 09: the global N carried over to gradient accumulation, the size of SSD's heads, and
# torchvision's name for the 3:1 ratio ("predict, then run": _check_prediction, see lessons 00 and 02)
# ---------------------------------------------------------------------------------------------------


__all__ += ["check_accumulation_scales", "check_head_parameters", "check_prediction_torchvision_neg_pos_ratio"]


def _accumulation_scales(positives_per_micro_batch: Sequence[int]) -> list[float]:
    """The factor for each micro-batch's loss, as multibox_loss returns it (a sum over its images divided by
    max(N_k, 1)), so that the gradients backward adds up over the micro-batches are those of one step on the
    whole batch: undo the division by max(N_k, 1), divide by the whole batch's max(N, 1). No factor K:
    backward adds the micro-batches' gradients up, where DDP averages the processes'."""
    total = sum(positives_per_micro_batch)
    return [max(n, 1) / max(total, 1) for n in positives_per_micro_batch]


def _compare_accumulation_scales(expected: tuple[list[float], tuple], received: Any):
    """The factors, with a hint for the usual slips: DDP's factors (times K), a plain mean, N_k / N."""
    scales, (positives,) = expected
    problem = _compare_floats(scales, received)
    if problem is None or "wrong values" not in problem:
        return None if problem is None else (problem, scales, received)
    values = [_as_number(value) for value in received]
    k, total = len(positives), sum(positives)
    if _compare_floats([k * scale for scale in scales], values) is None:
        problem += (f": these are the factors for {k} DDP processes. DDP averages the processes' gradients, "
                    "hence its factor W; backward adds the micro-batches' gradients up, so no factor K here")
    elif _compare_floats([1 / k] * k, values) is None:
        problem += (": a plain mean of the micro-batches' losses weighs each micro-batch the same, whatever its "
                    "number of positives; the paper divides the sum over the whole batch by its N")
    elif _compare_floats([n / max(total, 1) for n in positives], values) is None:
        problem += (": a micro-batch without positives was divided by max(0, 1) = 1, not by 0, so its factor is "
                    "1 / max(N, 1), not 0 (its sum is 0 with hard negative mining, but not with the focal loss)")
    return problem, scales, received


def check_accumulation_scales(fn: Callable) -> CheckResult:
    """fn(positives_per_micro_batch: list of K ints) -> list of K floats: the factor to multiply each
    micro-batch's loss (multibox_loss's output, divided by max(N_k, 1)) by, so that the accumulated
    gradients equal one step on the whole batch."""
    cases = [
        Case(([7],), "one micro-batch: the whole batch, factor 1"),
        Case(([3, 5],), "two micro-batches"),
        Case(([1, 1, 1, 1],), "four micro-batches of one positive each"),
        Case(([0, 4],), "a micro-batch without any positive"),
        Case(([0, 0],), "no positive in the whole batch: N = 0"),
        Case(([2, 0, 9],), "three micro-batches, one without positives"),
    ]
    generator = _generator(901)
    for k in [2, 4, 8]:
        positives = [0 if float(torch.rand(1, generator=generator)) < 0.25 else _randint(1, 30, generator)
                     for _ in range(k)]
        cases.append(Case((positives,), f"{k} random micro-batches"))
    return _run_checks("check_accumulation_scales", fn, cases, _with_inputs(_accumulation_scales),
                       _compare_accumulation_scales, ("positives_per_micro_batch",))


def _head_parameters(feature_channels: Sequence[int], boxes_per_location: Sequence[int], num_classes: int) -> int:
    """SSD's heads: per map, a 3x3 conv from c channels to 4k offsets and one to Ck class scores, each
    with a bias per output channel: (9c + 1) weights per output channel, k(4 + C) output channels."""
    return sum((9 * c + 1) * k * (4 + num_classes) for c, k in zip(feature_channels, boxes_per_location))


def _compare_head_parameters(expected: tuple[int, tuple], received: Any):
    """The count, with a hint for the usual slips: no biases, C - 1 classes, one head only, 1x1 kernels."""
    count, (channels, per_location, num_classes) = expected
    problem = _compare_int(count, received)
    if problem is None or "wrong number" not in problem:
        return None if problem is None else (problem, count, received)
    value, pairs = _as_number(received), list(zip(channels, per_location))
    if float(value).is_integer():  # "3341550", not "3.34155e+06"
        problem = f"returned a wrong number ({int(value):,} instead of {count:,})"
    slips = [
        (sum(9 * c * k * (4 + num_classes) for c, k in pairs),
         "each output channel of a conv also has a bias: 9c + 1 parameters, not 9c"),
        (_head_parameters(channels, per_location, num_classes - 1),
         "num_classes already counts background (label 0): the conf head has C scores per box, not C - 1"),
        (_head_parameters(channels, per_location, num_classes + 1),
         "num_classes already counts background: C scores per box, not C + 1"),
        (sum((9 * c + 1) * k * num_classes for c, k in pairs), "the loc head (4 offsets per box) is missing"),
        (sum((9 * c + 1) * k * 4 for c, k in pairs), "the conf head (C class scores per box) is missing"),
        (sum((c + 1) * k * (4 + num_classes) for c, k in pairs), "SSD's heads are 3x3 convolutions: 9c weights "
                                                                 "per output channel, not c"),
    ]
    for slip, hint in slips:
        if value == slip:
            problem += f": {hint}"
            break
    return problem, count, received


def check_head_parameters(fn: Callable) -> CheckResult:
    """fn(feature_channels, boxes_per_location, num_classes) -> int, the number of parameters (weights and
    biases) of SSD's loc and conf heads, one 3x3 conv of each per feature map (ssd_lite.model.SSD)."""
    ssd300 = ([512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4])
    ssd512 = ([512, 1024, 512, 256, 256, 256, 256], [4, 6, 6, 6, 6, 4, 4])
    cases = [
        Case(([8], [2], 2), "one map, one class and background"),
        Case(([16, 8], [4, 6], 3), "two maps"),
        Case((*ssd300, 21), "SSD300 on Pascal VOC: 20 classes and background"),
        Case((*ssd300, 81), "SSD300 on COCO: 80 classes and background"),
        Case((*ssd300, 91), "torchvision's default num_classes, 91 (COCO's original category ids)"),
        Case((*ssd512, 21), "SSD512 on Pascal VOC: seven maps"),
        Case(([64, 96, 96, 96], [6, 6, 6, 6], 6), "the course's model on the shapes"),
    ]
    generator = _generator(902)
    for _ in range(3):
        m = _randint(1, 7, generator)
        channels = [(64, 128, 256, 512, 1024)[_randint(0, 4, generator)] for _ in range(m)]
        per_location = [(2, 4, 6)[_randint(0, 2, generator)] for _ in range(m)]
        cases.append(Case((channels, per_location, _randint(2, 100, generator)), f"{m} random maps"))
    return _run_checks("check_head_parameters", fn, cases, _with_inputs(_head_parameters), _compare_head_parameters,
                       ("feature_channels", "boxes_per_location", "num_classes"))


# torchvision's SSD(..., positive_fraction=0.25) (torchvision/models/detection/ssd.py).
_TORCHVISION_POSITIVE_FRACTION = 0.25


def check_prediction_torchvision_neg_pos_ratio(fn: Callable) -> CheckResult:
    """fn(positive_fraction) -> the reader's prediction of the neg_pos_ratio of ssd_lite.loss.multibox_loss
    that torchvision's SSD(positive_fraction=0.25) amounts to."""
    fraction = _TORCHVISION_POSITIVE_FRACTION
    expected = (1 - fraction) / fraction
    why = (f"positive_fraction is the share of positives among the default boxes the classification loss keeps "
           f"in each image: {fraction:g} positives leave {1 - fraction:g} for the mined negatives, "
           f"{1 - fraction:g} / {fraction:g} = {expected:g} negatives per positive. That is our neg_pos_ratio=3, "
           "the paper's 3:1; torchvision computes it in SSD.__init__ as neg_to_pos_ratio = (1 - positive_fraction) "
           "/ positive_fraction.")
    return _check_prediction("check_prediction_torchvision_neg_pos_ratio", fn, (fraction,), expected, 0.01, why)


# ---------------------------------------------------------------------------------------------------
# Lesson 06: a head laid out another way, the size of a conv's output, and how zoom out changes the
# positives ("predict, then run"; _check_prediction: see lessons 00 and 02 above)
# ---------------------------------------------------------------------------------------------------


__all__ += ["check_flatten_value_major", "check_output_size", "check_prediction_zoom_out_positives"]


def _flatten_value_major(head_output: Tensor, num_values: int) -> Tensor:
    """(B, V*k, f, f) whose channel v*k + j holds value v of the cell's box j -> (B, f*f*k, V), in the default
    boxes' order: rows, then columns, then the cell's k boxes (SSD's own heads put box j's V values
    together instead, channel j*V + v, and need only permute(0, 2, 3, 1))."""
    batch, channels, height, width = head_output.shape
    boxes = channels // num_values
    per_value = head_output.reshape(batch, num_values, boxes, height, width)  # (B, V, k, f, f)
    return per_value.permute(0, 3, 4, 2, 1).reshape(batch, height * width * boxes, num_values)


def _misread_layouts(head_output: Tensor, num_values: int) -> list[tuple[Tensor, str]]:
    """The flattenings a reader may write instead, each with what it gets wrong."""
    batch, channels, height, width = head_output.shape
    boxes = channels // num_values
    per_value = head_output.reshape(batch, num_values, boxes, height, width)
    return [
        (head_output.permute(0, 2, 3, 1).reshape(batch, -1, num_values),
         "read the channels box by box (channel j*V + v, SSD's own layout, where permute(0, 2, 3, 1) is enough); "
         "this head groups them by value: channel v*k + j is value v of box j"),
        (per_value.permute(0, 4, 3, 2, 1).reshape(batch, -1, num_values),
         "went through the cells column by column; the default boxes go row by row: rows, then columns"),
        (per_value.permute(0, 2, 3, 4, 1).reshape(batch, -1, num_values),
         "listed every cell for box 0, then every cell for box 1, ...; in the default boxes' order a cell's "
         "k boxes come together, after the cell's row and column"),
        (head_output.reshape(batch, -1, num_values),
         "reshaped without moving the channels: the values of one box must come from the channel axis"),
    ]


def _compare_flatten(expected: tuple[Tensor, tuple], received: Any):
    """The flattened tensor; a wrong order is named when it is one of the usual misreadings."""
    flattened, (head_output, num_values) = expected
    problem = _compare_tensors(flattened, received)
    if problem is None or "wrong values" not in problem:
        return None if problem is None else (problem, flattened, received)
    for misread, what in _misread_layouts(head_output, num_values):
        if torch.allclose(received.detach().cpu().double(), misread.double()):
            return f"{problem}: it {what}", flattened, received
    return problem, flattened, received


def _numbered(*shape: int) -> Tensor:
    """A float tensor holding 0, 1, 2, ... : in a verdict, each number says where it came from."""
    return torch.arange(math.prod(shape), dtype=torch.float32).reshape(shape)


def check_flatten_value_major(fn: Callable) -> CheckResult:
    """fn(head_output (B, V*k, f, f), num_values V) -> (B, f*f*k, V): a head whose channel v*k + j holds value
    v of box j, flattened into the default boxes' order. Reference: _flatten_value_major."""
    cases = [
        Case((_numbered(1, 4, 1, 1), 4), "one cell with one box: its 4 offsets"),
        Case((_numbered(1, 8, 1, 1), 4), "one cell with two boxes: channel v*k + j is value v of box j"),
        Case((_numbered(1, 4, 2, 2), 4), "a 2x2 map, one box per cell: row by row"),
        Case((_numbered(1, 12, 2, 2), 6), "class scores: C = 6 values, two boxes per cell"),
        Case((_numbered(2, 8, 2, 2), 4), "a batch of two images"),
    ]
    generator = _generator(61)
    for batch, values, boxes, f in [(1, 4, 6, 3), (2, 6, 4, 4), (2, 21, 4, 2), (3, 4, 6, 5)]:
        cases.append(Case((torch.randn(batch, values * boxes, f, f, generator=generator), values),
                          f"{batch} image(s), {f}x{f} map, k = {boxes}, V = {values}"))
    return _run_checks("check_flatten_value_major", fn, cases, _with_inputs(_flatten_value_major),
                       _compare_flatten, ("head_output", "num_values"))


def _output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                 ceil_mode: bool = False) -> int:
    """The side of a conv's (or max pool's) output: how many positions of the window fit in the padded input.

    A dilated window spans dilation * (kernel_size - 1) + 1 pixels. ceil_mode counts a last, partial
    window (as SSD300's pool3 does: 75 -> 38), as long as it starts inside the image or its left padding.
    """
    span = dilation * (kernel_size - 1) + 1
    room = size + 2 * padding - span
    positions = (-(-room // stride) if ceil_mode else room // stride) + 1
    if ceil_mode and (positions - 1) * stride >= size + padding:
        positions -= 1  # PyTorch's rule: no window may start in the right padding only
    return positions


def _compare_output_size(expected: tuple[int, tuple], received: Any):
    """The size, with a hint for the usual slips: dilation ignored, ceil_mode ignored, the first window uncounted."""
    size, args = expected
    problem = _compare_int(size, received)
    if problem is None or "wrong number" not in problem:
        return None if problem is None else (problem, size, received)
    value = _as_number(received)
    settings = dict(zip(("size", "kernel_size", "stride", "padding", "dilation", "ceil_mode"), args))
    slips = []
    if settings.get("dilation", 1) > 1:
        slips.append((_output_size(**{**settings, "dilation": 1}),
                      "dilation spreads the kernel's taps apart: a dilated k x k window spans dilation*(k - 1) + 1 "
                      "pixels"))
    if settings.get("ceil_mode", False):
        slips.append((_output_size(**{**settings, "ceil_mode": False}),
                      "ceil_mode=True rounds the division up: a last, partial window counts too"))
    slips.append((size - 1, "count the first window too: (room left) // stride further positions, plus the first"))
    for wrong, hint in slips:
        if value == wrong:
            return f"{problem}: {hint}", size, received
    return problem, size, received


def check_output_size(fn: Callable) -> CheckResult:
    """fn(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False) -> int, the side of a conv's or
    max pool's output for a square input of side `size` (torch.nn.Conv2d's and MaxPool2d's rule; the tests
    compare _output_size with both)."""
    cases = [
        Case((300, 3, 1, 1), "a 3x3 conv with padding 1 keeps the size"),
        Case((300, 2, 2), "a 2x2 pool with stride 2 halves it"),
        Case((75, 2, 2), "an odd side halved, rounding down"),
        Case((75, 2, 2, 0, 1, True), "SSD300's pool3, ceil_mode=True: 75 -> 38"),
        Case((19, 3, 1, 1), "SSD300's pool5, 3x3 with stride 1 and padding 1"),
        Case((19, 3, 1, 6, 6), "SSD300's conv6: 3x3, dilation 6, padding 6"),
        Case((19, 3, 1, 1, 6), "a 3x3 conv with dilation 6 but padding 1"),
        Case((19, 3, 2, 1), "SSD300's conv8_2: stride 2"),
        Case((5, 3), "SSD300's conv10_2: no padding, 5 -> 3"),
    ]
    generator = _generator(62)
    while len(cases) < 14:
        kernel = (1, 3, 5, 7)[_randint(0, 3, generator)]
        stride, dilation = _randint(1, 3, generator), _randint(1, 3, generator)
        padding, ceil_mode = _randint(0, kernel // 2, generator), bool(_randint(0, 1, generator))
        size = _randint(5, 100, generator)
        room = size + 2 * padding - dilation * (kernel - 1) - 1
        # Leave out PyTorch's last-window corner case (see _output_size): this exercise is about the formula.
        if room >= 0 and not (ceil_mode and -(-room // stride) * stride >= size + padding):
            cases.append(Case((size, kernel, stride, padding, dilation, ceil_mode), "random settings"))
    return _run_checks("check_output_size", fn, cases, _with_inputs(_output_size), _compare_output_size,
                       ("size", "kernel_size", "stride", "padding", "dilation", "ceil_mode"))


@functools.lru_cache(maxsize=None)
def _positives_per_object(zoom_out: float) -> float:
    """Lesson 06's measurement: positive default boxes per object, over 60 shapes images zoomed out (half of
    the time, up to zoom_out times) and matched to the course model's default boxes."""
    from ssd_lite.augment import train_transform
    from ssd_lite.model import default_model
    from ssd_lite.shapes import ShapesDataset

    transform = train_transform(128, photometric=False, zoom_out=zoom_out, iou_crop=False, flip=False)
    positives, objects = 0, 0
    with torch.random.fork_rng():  # the model's weights and the zoom's draws leave the reader's generator alone
        priors = default_model(num_classes=6).priors
        torch.manual_seed(0)
        for image, target in ShapesDataset(60, image_size=128, seed=3):
            _, target = transform(image, target)
            _, labels = match(target["boxes"], target["labels"], priors)
            positives += int((labels > 0).sum())
            objects += len(target["labels"])
    return positives / objects


def check_prediction_zoom_out_positives(fn: Callable) -> CheckResult:
    """fn(zoom_out) -> the reader's prediction: with the paper's zoom out (4.0) instead of none, does the average
    number of positive default boxes per object go up (1), down (-1) or stay about the same (0)?"""
    without, with_zoom = _positives_per_object(1.0), _positives_per_object(4.0)
    change = with_zoom - without
    expected = 0 if abs(change) < 0.1 * without else (1 if change > 0 else -1)
    why = (f"{without:.1f} positives per object without zoom out, {with_zoom:.1f} with it. A zoomed-out object is "
           "smaller, often smaller than the smallest default box (0.1 of the side): few default boxes, or none, "
           "overlap it by IoU 0.5, and it may keep only the one box the bipartite step of matching forces on it. "
           "Fewer positives per object is less to learn from in each image.")
    return _check_prediction("check_prediction_zoom_out_positives", fn, (4.0,), expected, 0, why)


# ---------------------------------------------------------------------------------------------------
# Lesson 08: the focal loss by hand, the bias for a prior, the focal factor on SSD's softmax scores
# ---------------------------------------------------------------------------------------------------


__all__ += ["check_sigmoid_focal_loss", "check_prior_bias", "check_softmax_focal_loss"]


def check_sigmoid_focal_loss(fn: Callable) -> CheckResult:
    """fn(inputs, targets, alpha=0.25, gamma=2.0) -> the focal loss of every entry, same shape as inputs.

    Reference: loss.sigmoid_focal_loss (reduction "none"). Cases without alpha and gamma call
    fn(inputs, targets), so they check the defaults too.
    """
    cases = [
        Case((torch.tensor([0.0]), torch.tensor([1.0])), "one undecided 'yes' (p = 0.5): alpha * 0.25 * log 2"),
        Case((torch.tensor([0.0]), torch.tensor([0.0])), "one undecided 'no': weighted by 1 - alpha"),
        Case((torch.tensor([3.0, -3.0]), torch.tensor([1.0, 0.0])), "two easy entries, scaled down by (1 - p_t)^2"),
        Case((torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 1.0]), 0.25, 0.0),
             "gamma = 0: the alpha-weighted cross-entropy"),
        Case((torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.0, 1.0, 0.0]), -1.0, 2.0),
             "alpha = -1: no alpha weighting"),
        Case((torch.tensor([[1.5, -0.5], [0.0, 2.5]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 0.5, 1.0),
             "a (2, 2) tensor, alpha 0.5, gamma 1"),
        Case((torch.tensor([30.0, -30.0]), torch.tensor([0.0, 1.0])),
             "two confident wrong entries (logits +-30): -log(p_t) must come from the logits, "
             "log(sigmoid(x)) is log(0)"),
    ]
    generator = _generator(16)
    for shape, alpha, gamma in [((6,), None, None), ((3, 4), 0.25, 2.0), ((2, 5, 3), 0.75, 0.5), ((8,), -1.0, 5.0)]:
        inputs = (3 * torch.randn(shape, generator=generator)).round(decimals=2)
        targets = (torch.rand(shape, generator=generator) < 0.4).float()
        args = (inputs, targets) if alpha is None else (inputs, targets, alpha, gamma)
        note = "" if alpha is None else f", alpha {alpha:g}, gamma {gamma:g}"
        cases.append(Case(args, f"random {tuple(shape)} logits and targets{note}"))
    return _run_checks("check_sigmoid_focal_loss", fn, cases, sigmoid_focal_loss, _compare_tensors,
                       ("inputs", "targets", "alpha", "gamma"))


def _prior_bias(pi: float) -> float:
    """sigmoid(b) = pi  <=>  b = log(pi / (1 - pi)) = -log((1 - pi) / pi), the paper's formula."""
    return -math.log((1 - pi) / pi)


def check_prior_bias(fn: Callable) -> CheckResult:
    """fn(pi) -> the bias b with sigmoid(b) = pi (focal loss paper, section 3.3), a float."""
    cases = [
        Case((0.01,), "the paper's prior, 0.01"),
        Case((0.5,), "pi = 0.5: no preference, bias 0"),
        Case((0.9,), "pi above 0.5: a positive bias"),
    ]
    cases += [Case((pi,), f"pi = {pi}") for pi in (0.1, 0.001, 0.25, 0.05, 0.7)]
    return _run_checks("check_prior_bias", fn, cases, _prior_bias, _compare_float, ("pi",))


def _softmax_focal_loss(logits: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """The focal factor on softmax scores: -(1 - p_t)^gamma * log(p_t), p_t = softmax(logits)[label]."""
    cross_entropy = F.cross_entropy(logits, labels, reduction="none")  # -log(p_t), from the logits
    return (1 - torch.exp(-cross_entropy)) ** gamma * cross_entropy


def check_softmax_focal_loss(fn: Callable) -> CheckResult:
    """fn(logits (N, C), labels (N,), gamma=2.0) -> (N,) focal loss of each box with softmax scores.

    Cases without a gamma call fn(logits, labels), so they check the default gamma too.
    """
    cases = [
        Case((torch.tensor([[0.0, 0.0]]), torch.tensor([1])), "one box, two classes, a coin toss: 0.25 * log 2"),
        Case((torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([0]), 0.0), "gamma = 0: the plain cross-entropy"),
        Case((torch.tensor([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]), torch.tensor([0, 2])),
             "an easy background box and a confidently wrong one"),
        Case((torch.tensor([[2.0, 1.0, 0.5, -1.0]]), torch.tensor([3]), 1.0), "four classes, gamma 1"),
        Case((torch.tensor([[0.0, 200.0], [200.0, 0.0]]), torch.tensor([0, 1])),
             "two boxes wrong by a logit of 200: log(softmax) must come from the logits"),
    ]
    generator = _generator(17)
    for num_boxes, num_classes, gamma in [(5, 3, None), (8, 4, 2.0), (6, 6, 0.5), (10, 2, 5.0)]:
        logits = (3 * torch.randn(num_boxes, num_classes, generator=generator)).round(decimals=2)
        labels = torch.randint(0, num_classes, (num_boxes,), generator=generator)
        args = (logits, labels) if gamma is None else (logits, labels, gamma)
        cases.append(Case(args, f"{num_boxes} random boxes, {num_classes} classes" +
                          ("" if gamma is None else f", gamma {gamma:g}")))
    return _run_checks("check_softmax_focal_loss", fn, cases, _softmax_focal_loss, _compare_tensors,
                       ("logits", "labels", "gamma"))


__all__ += ["check_prediction_easy_negative_weight"]

_EASY_NEGATIVE_QUESTION = (0.1, 0.25, 2.0)  # p for a "no" target, so p_t = 0.9; the paper's alpha and gamma


def check_prediction_easy_negative_weight(fn: Callable) -> CheckResult:
    """fn(p, alpha, gamma) -> the reader's prediction of focal loss / binary cross-entropy for a "no" target
    scored p, a number."""
    p, alpha, gamma = _EASY_NEGATIVE_QUESTION
    logit, target = torch.logit(torch.tensor([p], dtype=torch.float64)), torch.zeros(1, dtype=torch.float64)
    focal = sigmoid_focal_loss(logit, target, alpha, gamma)
    ratio = float(focal / F.binary_cross_entropy_with_logits(logit, target, reduction="none"))
    why = (f"a 'no' scored p = {p} is answered right with p_t = {1 - p:.1f}, so the modulating factor is "
           f"(1 - p_t)^{gamma:g} = {p ** gamma:.2f}; a 'no' is weighted by 1 - alpha = {1 - alpha:g}, not alpha. "
           f"Together {1 - alpha:g} x {p ** gamma:.2f} = {ratio:.4f}: the focal loss counts this easy negative "
           f"{1 / ratio:.0f} times less than the cross-entropy does.")
    return _check_prediction("check_prediction_easy_negative_weight", fn, _EASY_NEGATIVE_QUESTION, ratio, 1e-4, why)
