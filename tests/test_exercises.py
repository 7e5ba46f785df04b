"""The exercise checkers and the student copies of the lessons.

Every checker must accept ssd_lite's own function, reject plausible wrong answers (each defined
below), report an unattempted exercise kindly, and never raise on a wrong answer, whatever the reader's
code does (loop forever, print a flood, exit, change its input). The student copies
must be up to date, hold no solutions, and run: their exercise sections are executed in a fresh kernel.
"""
from __future__ import annotations

import json
import math
import re
import runpy
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from ssd_lite import _checking, student_copies
from ssd_lite import exercises as ex
from ssd_lite.boxes import VARIANCES, box_iou, cxcywh_to_xyxy, encode, xyxy_to_cxcywh
from ssd_lite.evaluate import average_precision, precision_recall
from ssd_lite.loss import hard_negative_mining, multibox_loss, smooth_l1
from ssd_lite.matching import match
from ssd_lite.nms import batched_nms, nms
from ssd_lite.priors import cell_default_boxes, prior_scales
from ssd_lite.student_copies import SolutionFormatError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
STUDENT = NOTEBOOKS / "student"
LESSONS = ("00_introduction", "01_default_boxes", "02_matching", "03_smooth_l1_loss",
           "04_hard_negative_mining", "05_nms", "06_training", "07_evaluation", "08_focal_loss",
           "09_from_the_course_to_the_paper", "A1_debugging_ssd")


# ---------------------------------------------------------------------------------------------------
# Plausible wrong answers, one small function each
# ---------------------------------------------------------------------------------------------------

def _areas(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def iou_without_clamp(boxes1, boxes2):
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    size = bottom_right - top_left  # missing .clamp(min=0): disjoint boxes get a positive overlap
    intersection = size[..., 0] * size[..., 1]
    return intersection / (_areas(boxes1)[:, None] + _areas(boxes2)[None, :] - intersection)


def iou_swapped_axes(boxes1, boxes2):
    return box_iou(boxes1, boxes2).T


def iou_union_not_minus_intersection(boxes1, boxes2):
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    size = (bottom_right - top_left).clamp(min=0)
    intersection = size[..., 0] * size[..., 1]
    return intersection / (_areas(boxes1)[:, None] + _areas(boxes2)[None, :])


def iou_pixel_plus_one(boxes1, boxes2):
    """The old pixel convention (width = x2 - x1 + 1) applied to normalised boxes."""
    grow = torch.tensor([0.0, 0.0, 1.0, 1.0])
    return box_iou(boxes1 + grow, boxes2 + grow)


def cxcywh_centre_as_half_size(boxes):
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([(x2 - x1) / 2, (y2 - y1) / 2, x2 - x1, y2 - y1], dim=-1)


def cxcywh_wrong_order(boxes):
    return xyxy_to_cxcywh(boxes)[:, [2, 3, 0, 1]]


def cxcywh_transposed(boxes):
    return xyxy_to_cxcywh(boxes).T


def scales_without_extra(num_feature_maps, s_min, s_max):
    return prior_scales(num_feature_maps, s_min, s_max)[:-1]


def scales_divided_by_m(num_feature_maps, s_min, s_max):
    return [s_min + (s_max - s_min) / num_feature_maps * k for k in range(num_feature_maps + 1)]


def scales_off_by_one(num_feature_maps, s_min, s_max):
    step = (s_max - s_min) / (num_feature_maps - 1)
    return [s_min + step * k for k in range(1, num_feature_maps + 2)]


def cell_boxes_without_sqrt(cx, cy, scale, next_scale, aspect_ratios):
    sizes = [(scale, scale), (math.sqrt(scale * next_scale),) * 2]
    for ratio in aspect_ratios:
        sizes += [(scale * ratio, scale / ratio), (scale / ratio, scale * ratio)]
    return torch.tensor([[cx, cy, w, h] for w, h in sizes])


def cell_boxes_mean_extra_scale(cx, cy, scale, next_scale, aspect_ratios):
    boxes = cell_default_boxes(cx, cy, scale, next_scale, aspect_ratios)
    boxes[1, 2:] = (scale + next_scale) / 2
    return boxes


def cell_boxes_without_extra(cx, cy, scale, next_scale, aspect_ratios):
    return torch.cat([cell_default_boxes(cx, cy, scale, next_scale, aspect_ratios)[:1],
                      cell_default_boxes(cx, cy, scale, next_scale, aspect_ratios)[2:]])


def match_without_forced_best_prior(gt_boxes, gt_labels, priors, iou_threshold=0.5):
    if len(gt_boxes) == 0:
        return torch.zeros(len(priors), 4), torch.zeros(len(priors), dtype=torch.long)
    best_iou, best_object = box_iou(gt_boxes, cxcywh_to_xyxy(priors)).max(dim=0)
    labels = gt_labels[best_object].clone()
    labels[best_iou < iou_threshold] = 0
    loc_targets = encode(gt_boxes[best_object], priors)
    loc_targets[labels == 0] = 0
    return loc_targets, labels


def match_strict_threshold(gt_boxes, gt_labels, priors, iou_threshold=0.5):
    """`>` instead of `>=`: a prior at exactly the threshold is missed."""
    return match(gt_boxes, gt_labels, priors, iou_threshold + 1e-6)


def match_background_offsets_kept(gt_boxes, gt_labels, priors, iou_threshold=0.5):
    loc_targets, labels = match(gt_boxes, gt_labels, priors, iou_threshold)
    if len(gt_boxes):
        best_object = box_iou(gt_boxes, cxcywh_to_xyxy(priors)).argmax(dim=0)
        loc_targets = torch.where((labels == 0)[:, None], encode(gt_boxes[best_object], priors), loc_targets)
    return loc_targets, labels


def match_without_variances(gt_boxes, gt_labels, priors, iou_threshold=0.5):
    return match(gt_boxes, gt_labels, priors, iou_threshold, variances=(1.0, 1.0))


def encode_without_variances(boxes_xyxy, priors_cxcywh):
    return encode(boxes_xyxy, priors_cxcywh, (1.0, 1.0))


def encode_swapped_variances(boxes_xyxy, priors_cxcywh):
    return encode(boxes_xyxy, priors_cxcywh, VARIANCES[::-1])


def encode_centre_not_scaled(boxes_xyxy, priors_cxcywh):
    boxes = xyxy_to_cxcywh(boxes_xyxy)
    centre = (boxes[:, :2] - priors_cxcywh[:, :2]) / VARIANCES[0]  # forgot "/ prior size"
    size = torch.log(boxes[:, 2:] / priors_cxcywh[:, 2:]) / VARIANCES[1]
    return torch.cat([centre, size], dim=1)


def encode_xyxy_as_cxcywh(boxes_xyxy, priors_cxcywh):
    return encode(cxcywh_to_xyxy(boxes_xyxy.clamp(min=0.01)), priors_cxcywh)


def smooth_l1_ignores_beta(input, target, beta=1.0):
    return smooth_l1(input, target, 1.0)


def smooth_l1_without_half(input, target, beta=1.0):
    diff = (input - target).abs()
    return torch.where(diff < beta, diff ** 2 / beta, diff - 0.5 * beta)


def smooth_l1_without_abs(input, target, beta=1.0):
    diff = input - target
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)


def smooth_l1_summed(input, target, beta=1.0):
    return smooth_l1(input, target, beta).sum()


def mining_includes_positives(conf_loss, labels, neg_pos_ratio=3):
    return hard_negative_mining(conf_loss, labels, neg_pos_ratio) | (labels > 0)


def mining_easiest_negatives(conf_loss, labels, neg_pos_ratio=3):
    return hard_negative_mining(-conf_loss, labels, neg_pos_ratio)


def mining_one_too_many(conf_loss, labels, neg_pos_ratio=3):
    """Off by one: ratio * positives + 1 negatives, even for an image with no positives."""
    negative_loss = conf_loss.masked_fill(labels > 0, float("-inf"))
    rank = negative_loss.argsort(dim=1, descending=True).argsort(dim=1)
    num_to_mine = (neg_pos_ratio * (labels > 0).sum(dim=1, keepdim=True) + 1).clamp(max=(labels == 0).sum(1, True))
    return rank < num_to_mine


def mining_per_batch(conf_loss, labels, neg_pos_ratio=3):
    """Counts and ranks over the whole batch instead of per image."""
    flat = hard_negative_mining(conf_loss.reshape(1, -1), labels.reshape(1, -1), neg_pos_ratio)
    return flat.reshape(conf_loss.shape)


def mining_without_clamp(conf_loss, labels, neg_pos_ratio=3):
    """topk with k = ratio * positives, without clamping k to the number of negatives."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(len(labels)):
        k = int(neg_pos_ratio * (labels[b] > 0).sum())
        hardest = conf_loss[b].masked_fill(labels[b] > 0, float("-inf")).topk(k).indices
        mask[b, hardest] = True
    return mask


def _positives(labels):
    return labels > 0


def localization_loss(loc_pred, loc_targets, labels):
    positives = _positives(labels)
    return smooth_l1(loc_pred[positives], loc_targets[positives]).sum() / max(int(positives.sum()), 1)


def localization_loss_nan_without_positives(loc_pred, loc_targets, labels):
    positives = _positives(labels)
    return smooth_l1(loc_pred[positives], loc_targets[positives]).sum() / positives.sum()


def localization_loss_over_all_priors(loc_pred, loc_targets, labels):
    return smooth_l1(loc_pred, loc_targets).sum() / max(int(_positives(labels).sum()), 1)


def localization_loss_mean(loc_pred, loc_targets, labels):
    positives = _positives(labels)
    return smooth_l1(loc_pred[positives], loc_targets[positives]).mean().nan_to_num()


def localization_loss_per_image(loc_pred, loc_targets, labels):
    """N counted per image and averaged, instead of over the batch."""
    per_image = [localization_loss(pred[None], target[None], image_labels[None])
                 for pred, target, image_labels in zip(loc_pred, loc_targets, labels)]
    return sum(per_image) / len(per_image)


def _cross_entropy(conf_pred, labels):
    batch_size, num_priors, num_classes = conf_pred.shape
    return F.cross_entropy(conf_pred.reshape(-1, num_classes), labels.reshape(-1), reduction="none").view(
        batch_size, num_priors)


def confidence_loss_without_mining(conf_pred, labels, neg_pos_ratio=3):
    return _cross_entropy(conf_pred, labels).sum() / max(int(_positives(labels).sum()), 1)


def confidence_loss_divided_by_all_kept(conf_pred, labels, neg_pos_ratio=3):
    ce = _cross_entropy(conf_pred, labels)
    kept = hard_negative_mining(ce, labels, neg_pos_ratio) | _positives(labels)
    return ce[kept].sum() / max(int(kept.sum()), 1)


def confidence_loss_negatives_only(conf_pred, labels, neg_pos_ratio=3):
    ce = _cross_entropy(conf_pred, labels)
    return ce[hard_negative_mining(ce, labels, neg_pos_ratio)].sum() / max(int(_positives(labels).sum()), 1)


def batched_nms_ignores_labels(boxes, scores, labels, iou_threshold):
    return nms(boxes, scores, iou_threshold)


def batched_nms_class_by_class(boxes, scores, labels, iou_threshold):
    kept = [torch.zeros(0, dtype=torch.long)]
    for label in labels.unique().tolist():
        of_label = (labels == label).nonzero()[:, 0]
        kept.append(of_label[nms(boxes[of_label], scores[of_label], iou_threshold)])
    return torch.cat(kept)  # class after class, not by decreasing score


def nms_keeps_lowest_first(boxes, scores, iou_threshold):
    return nms(boxes, -scores, iou_threshold)


def nms_suppresses_at_threshold(boxes, scores, iou_threshold):
    return nms(boxes, scores, iou_threshold - 1e-6)


def nms_suppressed_boxes_still_suppress(boxes, scores, iou_threshold):
    """A box is dropped if ANY higher-scoring box overlaps it, even one that was itself dropped."""
    order = scores.argsort(descending=True)
    ious = box_iou(boxes[order], boxes[order])
    keep = [i for i in range(len(order)) if not (ious[i, :i] > iou_threshold).any()]
    return order[torch.tensor(keep, dtype=torch.long)]


def nms_unsorted(boxes, scores, iou_threshold):
    return nms(boxes, scores, iou_threshold).sort().values


def hflip_corners_not_swapped(boxes):
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([1 - x1, y1, 1 - x2, y2], dim=-1)


def hflip_flips_y(boxes):
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack([x1, 1 - y2, x2, 1 - y1], dim=-1)


def hflip_in_place(boxes):
    boxes[:, [0, 2]] = 1 - boxes[:, [2, 0]]
    return boxes


def count_without_square(feature_map_sizes, boxes_per_location):
    return sum(f * b for f, b in zip(feature_map_sizes, boxes_per_location))


def count_first_map_boxes_only(feature_map_sizes, boxes_per_location):
    return sum(f * f for f in feature_map_sizes) * boxes_per_location[0]


def count_as_list(feature_map_sizes, boxes_per_location):
    return [f * f * b for f, b in zip(feature_map_sizes, boxes_per_location)]


def pr_unsorted(scores, is_true_positive, num_ground_truth):
    true_positives = is_true_positive.double().cumsum(0)
    return true_positives / torch.arange(1, len(scores) + 1), true_positives / num_ground_truth


def pr_recall_over_detections(scores, is_true_positive, num_ground_truth):
    precision, recall = precision_recall(scores, is_true_positive, num_ground_truth)
    return precision, precision


def pr_off_by_one(scores, is_true_positive, num_ground_truth):
    precision, recall = precision_recall(scores, is_true_positive, num_ground_truth)
    counts = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return precision * counts / (counts + 1), recall


def ap_without_envelope(precision, recall, interpolation="all"):
    return average_precision(precision.cummin(0).values, recall, interpolation)


def ap_strict_recall_points(precision, recall, interpolation="all"):
    """Read the 11/101 points with recall > t instead of >= t (and 'all' without the first step)."""
    if interpolation == "all":
        return float(((recall[1:] - recall[:-1]) * precision[1:]).sum())
    points = [i / 10 for i in range(11)] if interpolation == "11point" else [i / 100 for i in range(101)]
    envelope = precision.flip(0).cummax(0).values.flip(0)
    return sum(float(envelope[recall > t].max()) if (recall > t).any() else 0.0 for t in points) / len(points)


def ap_mean_precision(precision, recall, interpolation="all"):
    return float(precision.mean()) if len(precision) else 0.0


# checker: (ssd_lite's reference, [wrong answers])
CHECKERS = {
    "check_iou": (box_iou, [iou_without_clamp, iou_swapped_axes, iou_union_not_minus_intersection,
                            iou_pixel_plus_one]),
    "check_xyxy_to_cxcywh": (xyxy_to_cxcywh, [cxcywh_centre_as_half_size, cxcywh_wrong_order, cxcywh_transposed]),
    "check_prior_scales": (prior_scales, [scales_without_extra, scales_divided_by_m, scales_off_by_one]),
    "check_cell_default_boxes": (cell_default_boxes, [cell_boxes_without_sqrt, cell_boxes_mean_extra_scale,
                                                      cell_boxes_without_extra]),
    "check_match": (match, [match_without_forced_best_prior, match_strict_threshold,
                            match_background_offsets_kept, match_without_variances]),
    "check_encode": (encode, [encode_without_variances, encode_swapped_variances, encode_centre_not_scaled,
                              encode_xyxy_as_cxcywh]),
    "check_smooth_l1": (smooth_l1, [smooth_l1_ignores_beta, smooth_l1_without_half, smooth_l1_without_abs,
                                    smooth_l1_summed]),
    "check_hard_negative_mining": (hard_negative_mining, [mining_includes_positives, mining_easiest_negatives,
                                                          mining_one_too_many, mining_per_batch,
                                                          mining_without_clamp]),
    "check_nms": (nms, [nms_keeps_lowest_first, nms_suppresses_at_threshold, nms_suppressed_boxes_still_suppress,
                        nms_unsorted]),
    "check_localization_loss": (localization_loss, [localization_loss_nan_without_positives,
                                                    localization_loss_over_all_priors, localization_loss_mean,
                                                    localization_loss_per_image]),
    "check_confidence_loss": (lambda conf_pred, labels, neg_pos_ratio=3: multibox_loss(
        torch.zeros(*labels.shape, 4), conf_pred, torch.zeros(*labels.shape, 4), labels, neg_pos_ratio)[1],
        [confidence_loss_without_mining, confidence_loss_divided_by_all_kept, confidence_loss_negatives_only]),
    "check_batched_nms": (batched_nms, [batched_nms_ignores_labels, batched_nms_class_by_class]),
    "check_hflip_boxes": (ex._hflip_boxes, [hflip_corners_not_swapped, hflip_flips_y, hflip_in_place]),
    "check_num_default_boxes": (ex._num_default_boxes, [count_without_square, count_first_map_boxes_only,
                                                        count_as_list]),
    "check_precision_recall": (precision_recall, [pr_unsorted, pr_recall_over_detections, pr_off_by_one]),
    "check_average_precision": (average_precision, [ap_without_envelope, ap_strict_recall_points,
                                                    ap_mean_precision]),
}


def test_every_checker_of_the_contract_is_tested():
    public = {name for name in dir(ex) if name.startswith("check_")}
    assert public == set(CHECKERS)


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_accepts_the_reference(name, capsys):
    reference = CHECKERS[name][0]
    assert getattr(ex, name)(reference)
    assert capsys.readouterr().out.startswith("✓ Correct: passed all ")


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_reports_the_placeholder_kindly(name, capsys):
    def my_answer(*args, **kwargs):
        # YOUR CODE HERE
        raise NotImplementedError("Exercise: write your code here")

    assert not getattr(ex, name)(my_answer)
    assert capsys.readouterr().out == ("Not attempted yet: replace `raise NotImplementedError` in my_answer "
                                       "with your code.\n")


@pytest.mark.parametrize("name", CHECKERS)
@pytest.mark.parametrize("answer", [None, torch.zeros(7, 3), "text", (torch.zeros(2),)])
def test_checker_survives_a_wrong_type_or_shape(name, answer, capsys):
    assert not getattr(ex, name)(lambda *args, **kwargs: answer)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:") and "Traceback" not in out
    if answer is None:
        assert "returned None: did you forget `return`?" in out


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_reports_an_exception_without_traceback(name, capsys):
    def my_answer(*args):
        values = args[0]
        return values[:, :, :, 99]  # too many indices for any input

    assert not getattr(ex, name)(my_answer)
    out = capsys.readouterr().out
    assert "raised IndexError" in out or "raised TypeError" in out
    assert "at line 3 of my_answer: return values[:, :, :, 99]" in out
    assert "Traceback" not in out


def test_failure_report_shows_the_smallest_failing_case(capsys):
    ex.check_iou(iou_without_clamp)
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "✗ Not yet: 8 of 12 cases failed. The smallest failing case (boxes apart in x and in y: no overlap):",
        "    boxes1 = tensor([[0. , 0. , 0.2, 0.2]])",
        "    boxes2 = tensor([[0.5, 0.5, 1. , 1. ]])",
        "  iou_without_clamp returned wrong values (largest difference 0.45 at result[0, 0])",
        "  expected: tensor([[0.]])",
        "  received: tensor([[0.45]])",
    ]


def test_checker_needs_the_function_not_its_result(capsys):
    assert not ex.check_iou(torch.zeros(1, 1))
    assert "needs your function itself" in capsys.readouterr().out


def test_checkers_leave_the_global_random_state_alone(capsys):
    state = torch.random.get_rng_state()
    for name, (reference, _) in CHECKERS.items():
        getattr(ex, name)(reference)
    assert torch.equal(torch.random.get_rng_state(), state)


# Correct answers written differently from ssd_lite's: the checkers must accept them too.

def test_checkers_accept_other_correct_answers(capsys):
    def my_iou(boxes1, boxes2):  # torchvision's, and float64 in and out
        return torchvision.ops.box_iou(boxes1.double(), boxes2.double())

    def my_scales(num_feature_maps, s_min, s_max):  # a tensor instead of a list
        step = (s_max - s_min) / max(num_feature_maps - 1, 1)
        return s_min + step * torch.arange(num_feature_maps + 1)

    def my_count(feature_map_sizes, boxes_per_location):  # a 0-dim tensor
        return (torch.tensor(feature_map_sizes) ** 2 * torch.tensor(boxes_per_location)).sum()

    def my_precision_recall(scores, is_true_positive, num_ground_truth):  # float32
        true_positives = is_true_positive[scores.argsort(descending=True)].float().cumsum(0)
        return true_positives / torch.arange(1, len(scores) + 1), true_positives / num_ground_truth

    def my_average_precision(precision, recall, interpolation):  # points as Python floats, float32 curves
        precision, recall = precision.float(), recall.float()
        if interpolation == "all":
            envelope = precision.flip(0).cummax(0).values.flip(0)
            return float((torch.diff(recall, prepend=torch.zeros(1)) * envelope).sum())
        points = [i / 10 for i in range(11)] if interpolation == "11point" else [i / 100 for i in range(101)]
        return sum(float(precision[recall >= t].max()) if (recall >= t).any() else 0.0 for t in points) / len(points)

    assert ex.check_iou(my_iou)
    assert ex.check_iou(torchvision.ops.box_iou)
    assert ex.check_prior_scales(my_scales)
    assert ex.check_prior_scales(lambda *args: tuple(prior_scales(*args)))
    assert ex.check_num_default_boxes(my_count)
    assert ex.check_nms(torchvision.ops.nms)
    assert ex.check_precision_recall(my_precision_recall)
    assert ex.check_average_precision(my_average_precision)
    assert ex.check_smooth_l1(lambda input, target, beta=1.0: torch.nn.functional.smooth_l1_loss(
        input, target, reduction="none", beta=beta))


def test_mining_check_accepts_any_tie_break():
    conf_loss = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    labels = torch.tensor([[1, 0, 0, 0]])
    expected = hard_negative_mining(conf_loss, labels, 1)  # one of the two tied negatives
    other = torch.tensor([[False, True, True, False]]) ^ expected
    assert not torch.equal(other, expected)
    assert _checking._compare_mining((expected, (conf_loss, labels, 1)), other) is None
    wrong = torch.tensor([[False, False, False, True]])
    assert "hardest" in _checking._compare_mining((expected, (conf_loss, labels, 1)), wrong)[0]


def test_check_average_precision_can_be_limited_to_one_interpolation(capsys):
    def eleven_point_only(precision, recall, interpolation):
        return average_precision(precision, recall, "11point")

    assert ex.check_average_precision(eleven_point_only, interpolations=("11point",))
    assert not ex.check_average_precision(eleven_point_only)


# ---------------------------------------------------------------------------------------------------
# Careless code must not break the checker: endless loops, floods of prints, exits, mutated inputs
# ---------------------------------------------------------------------------------------------------

def test_checker_stops_an_endless_loop(monkeypatch, capsys):
    monkeypatch.setattr(_checking, "TIME_LIMIT_S", 0.2)

    def my_iou(boxes1, boxes2):
        while True:
            try:
                pass
            except Exception:  # a catch-all in the reader's loop must not swallow the time-out
                pass

    started = time.monotonic()
    assert not ex.check_iou(my_iou)
    assert time.monotonic() - started < 2  # stopped on the first case, not after every case
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet: my_iou took longer than 0.2 s on case 1 of 12 (identical boxes) "
                          "and was stopped:")
    assert "did not finish: is there a loop that never ends?" in out


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="SIGALRM is POSIX only")
def test_time_limit_puts_back_the_previous_alarm_handler_and_timer(capsys):
    alarms = []

    def handler(signum, frame):
        alarms.append(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        assert ex.check_iou(box_iou)
        assert signal.getsignal(signal.SIGALRM) is handler
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < remaining <= 0.5  # still counting down to when it was due
        time.sleep(remaining + 0.05)
        assert alarms == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_checker_shows_only_the_start_of_what_the_function_prints(capsys):
    def my_iou(boxes1, boxes2):
        for i in range(3000):
            print("debugging", i)
        return box_iou(boxes1, boxes2) * 2

    assert not ex.check_iou(my_iou)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) < 20
    assert lines[0].startswith("✗ Not yet:") and "  received: tensor([[2.]])" in lines
    assert lines[-7:] == ["  my_iou printed, on this case:", "    debugging 0", "    debugging 1", "    debugging 2",
                          "    debugging 3", "    debugging 4", "    ... 2995 more lines"]

    def chatty_but_right(boxes1, boxes2):
        print("computing", file=sys.stderr)
        return box_iou(boxes1, boxes2)

    assert ex.check_iou(chatty_but_right)
    captured = capsys.readouterr()
    assert captured.out == "✓ Correct: passed all 12 cases.\n" and captured.err == ""


class UnprintableError(Exception):
    def __str__(self):
        raise RuntimeError("no message for you")


def _exits(boxes1, boxes2):
    sys.exit()


def _raises_system_exit(boxes1, boxes2):
    raise SystemExit(2)


def _raises_unprintable(boxes1, boxes2):
    raise UnprintableError


class _Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr either")


@pytest.mark.parametrize("my_iou, message", [
    (_exits, "_exits raised SystemExit (sys.exit() or exit() would end the whole program: return the answer"),
    (_raises_system_exit, "_raises_system_exit raised SystemExit: 2 (sys.exit()"),
    (_raises_unprintable, "_raises_unprintable raised UnprintableError: <UnprintableError object; its str() raised "
                          "RuntimeError>"),
    (lambda boxes1, boxes2: _Unprintable(), "<lambda> returned a _Unprintable, expected a torch.Tensor"),
])
def test_checker_reports_exits_and_unprintable_errors(my_iou, message, capsys):
    assert not ex.check_iou(my_iou)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet: 12 of 12 cases failed.") and message in out and "Traceback" not in out


def test_checker_lets_the_stop_button_through(capsys):
    def my_iou(boxes1, boxes2):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ex.check_iou(my_iou)


def test_checker_rejects_a_right_answer_that_changed_a_list_argument(capsys):
    def my_num_default_boxes(feature_map_sizes, boxes_per_location):
        total = 0
        while feature_map_sizes:  # empties the caller's lists
            total += feature_map_sizes.pop() ** 2 * boxes_per_location.pop()
        return total

    assert not ex.check_num_default_boxes(my_num_default_boxes)
    out = capsys.readouterr().out
    assert ("my_num_default_boxes gave the right answer but changed its input argument `feature_map_sizes` in "
            "place: work on a copy (e.g. `list(feature_map_sizes)`)") in out


def test_checker_rejects_a_change_deep_inside_an_argument(capsys):
    def reference(nested):
        return float(nested[0]["weights"].sum())

    def changes_nested_tensor(nested):
        nested[0]["weights"] += 0  # unchanged: fine
        answer = reference(nested)
        nested[0]["weights"][1] = 5.0
        return answer

    cases = [_checking.Case(([{"weights": torch.tensor([1.0, 2.0])}],), "a list of dicts of tensors")]
    assert _checking._run_checks("check_sum", reference, cases, reference, _checking._compare_float, ("nested",))
    assert not _checking._run_checks("check_sum", changes_nested_tensor, cases, reference, _checking._compare_float,
                                     ("nested",))
    assert "changed its input argument `nested` in place" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_checker_names_a_half_precision_answer_instead_of_calling_it_wrong(dtype, capsys):
    assert not ex.check_iou(lambda boxes1, boxes2: box_iou(boxes1, boxes2).to(dtype))
    assert not ex.check_localization_loss(lambda *args: localization_loss(*args).to(dtype))
    assert not ex.check_prior_scales(lambda *args: torch.tensor(prior_scales(*args), dtype=dtype))
    out = capsys.readouterr().out
    assert out.count(f"of dtype {dtype}, expected float32 (or float64): {dtype} keeps too few digits") == 3
    assert "wrong value" not in out


def test_check_result_is_true_or_false_and_shows_nothing_in_a_notebook(capsys):
    from IPython.core.formatters import DisplayFormatter

    passed, failed = ex.check_iou(box_iou), ex.check_iou(iou_without_clamp)
    assert passed and not failed and passed.passed is True and failed.passed is False
    assert repr(passed) == "CheckResult(passed=True)"
    assert DisplayFormatter().format(passed) == ({}, {})  # what IPython would echo as Out[...]: nothing


# ---------------------------------------------------------------------------------------------------
# The student tool, on small synthetic notebooks (no kernel needed)
# ---------------------------------------------------------------------------------------------------

def _cell(cell_type, source, nbgrader=None, outputs=()):
    cell = {"cell_type": cell_type, "id": f"c{abs(hash(source)) % 10**8}", "metadata": {}, "source": source}
    if nbgrader is not None:
        cell["metadata"]["nbgrader"] = {"grade": False, "grade_id": nbgrader, "locked": False, "schema_version": 3,
                                        "solution": True, "task": False}
    if cell_type == "code":
        cell["outputs"], cell["execution_count"] = list(outputs), 3 if outputs else None
    return cell


def _notebook(*cells):
    return {"cells": list(cells), "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                                              "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


SOLUTION = ('def my_double(x):\n    """Twice x."""\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n'
            '    ### END SOLUTION')


def test_student_copy_replaces_solutions_and_clears_outputs():
    output = {"output_type": "stream", "name": "stdout", "text": "4\n"}
    lesson = _notebook(_cell("markdown", "# Title"), _cell("code", "print(2 + 2)", outputs=[output]),
                       _cell("code", SOLUTION, nbgrader="ex00-double"))
    lesson["metadata"]["widgets"] = {"state": {}}
    lesson["cells"][1]["metadata"]["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00"}
    student = student_copies.student_notebook(lesson, "00_test.ipynb")
    assert "".join(student["cells"][2]["source"]) == (
        'def my_double(x):\n    """Twice x."""\n    # YOUR CODE HERE\n'
        '    raise NotImplementedError("Exercise: write your code here")')
    assert student["cells"][1]["outputs"] == [] and student["cells"][1]["execution_count"] is None
    assert student["cells"][1]["metadata"] == {}
    assert "widgets" not in student["metadata"]
    assert student["cells"][2]["metadata"]["nbgrader"]["solution"] is True  # nbgrader can still use it
    assert lesson["cells"][1]["outputs"] == [output]  # the lesson itself is untouched
    namespace = {}
    exec("".join(student["cells"][2]["source"]), namespace)  # the placeholder cell still runs
    with pytest.raises(NotImplementedError):
        namespace["my_double"](1)


def test_student_copy_keeps_nested_indentation():
    source = "def f(x):\n    if x:\n        ### BEGIN SOLUTION\n        return 1\n        ### END SOLUTION\n    return 0"
    assert student_copies.strip_solutions(source, "cell") == (
        'def f(x):\n    if x:\n        # YOUR CODE HERE\n'
        '        raise NotImplementedError("Exercise: write your code here")\n    return 0')


@pytest.mark.parametrize("source, message", [
    ("def f():\n    ### BEGIN SOLUTION\n    return 1", "### BEGIN SOLUTION on line 2 has no ### END SOLUTION"),
    ("def f():\n    return 1\n    ### END SOLUTION", "line 3 has ### END SOLUTION without ### BEGIN SOLUTION"),
    ("def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION",
     "opens a second ### BEGIN SOLUTION"),
    ("### BEGIN SOLUTION\nx = 1\n### END SOLUTION", "must sit inside a function body"),
    ("def f():\n    ### BEGIN SOLUTION  (the answer)\n    return 1\n    ### END SOLUTION",
     "line 2 mentions a solution marker without being one"),
])
def test_student_tool_refuses_malformed_regions(source, message):
    lesson = _notebook(_cell("markdown", "# Title"), _cell("code", source, nbgrader="ex03-bad"))
    with pytest.raises(SolutionFormatError, match=re.escape(message)) as error:
        student_copies.student_notebook(lesson, "notebooks/03_x.ipynb")
    assert "notebooks/03_x.ipynb, cell 1 (ex03-bad)" in str(error.value)


def test_student_tool_refuses_markers_quoted_in_text():
    """nbgrader would take the quoted markers for a solution region and fail on the lesson."""
    lesson = _notebook(_cell("markdown", "## Exercises\nWrite your code between `### BEGIN SOLUTION` and "
                                         "`### END SOLUTION`."))
    with pytest.raises(SolutionFormatError, match=r"07_x.ipynb, cell 0: line 2 mentions a solution marker"):
        student_copies.student_notebook(lesson, "07_x.ipynb")


def test_student_tool_refuses_a_solution_without_nbgrader_metadata():
    lesson = _notebook(_cell("code", SOLUTION))
    with pytest.raises(SolutionFormatError, match=r"05_x.ipynb, cell 0: has a solution region but no nbgrad"):
        student_copies.student_notebook(lesson, "05_x.ipynb")
    lesson = _notebook(_cell("code", "def f():\n    return 1", nbgrader="ex05-f"))
    with pytest.raises(SolutionFormatError, match="marked as an nbgrader solution cell but has no"):
        student_copies.student_notebook(lesson, "05_x.ipynb")


def test_student_command_writes_deterministic_copies_and_checks_them(tmp_path, capsys):
    lessons = tmp_path / "notebooks"
    lessons.mkdir()
    (lessons / "00_a.ipynb").write_text(json.dumps(_notebook(_cell("code", SOLUTION, nbgrader="ex00-d"))))
    (lessons / "scratch.ipynb").write_text(json.dumps(_notebook()))  # not a lesson: not copied
    assert [p.name for p in student_copies.lesson_paths(lessons)] == ["00_a.ipynb"]
    (lessons / "A1_appendix.ipynb").write_text(json.dumps(_notebook()))  # an appendix: a lesson too
    assert [p.name for p in student_copies.lesson_paths(lessons)] == ["00_a.ipynb", "A1_appendix.ipynb"]
    (lessons / "A1_appendix.ipynb").unlink()
    out = lessons / "student"
    assert student_copies.main(["--notebooks", str(lessons), "--check"]) == 1  # nothing written yet
    assert student_copies.main(["--notebooks", str(lessons)]) == 0
    first = (out / "00_a.ipynb").read_bytes()
    assert sorted(path.name for path in out.iterdir()) == ["00_a.ipynb"]
    assert student_copies.main(["--notebooks", str(lessons), "--out", str(out)]) == 0
    assert (out / "00_a.ipynb").read_bytes() == first
    assert student_copies.main(["--notebooks", str(lessons), "--check"]) == 0
    (lessons / "00_a.ipynb").write_text(json.dumps(_notebook(_cell("code", "x = 1"))))
    assert student_copies.main(["--notebooks", str(lessons), "--check"]) == 1
    assert "00_a.ipynb is out of date" in capsys.readouterr().err


def test_student_command_names_the_broken_notebook(tmp_path, capsys):
    (tmp_path / "02_b.ipynb").write_text(json.dumps(_notebook(_cell("code", "def f():\n    ### BEGIN SOLUTION",
                                                                    nbgrader="ex02-f"))))
    assert student_copies.main(["--notebooks", str(tmp_path)]) == 1
    assert "02_b.ipynb, cell 0 (ex02-f): ### BEGIN SOLUTION on line 2 has no" in capsys.readouterr().err


def test_old_student_command_still_works(tmp_path, monkeypatch, capsys):
    """`python -m ssd_lite.exercises student ...` forwards to `python -m ssd_lite.student_copies ...`."""
    (tmp_path / "00_a.ipynb").write_text(json.dumps(_notebook(_cell("code", SOLUTION, nbgrader="ex00-d"))))

    def run(*arguments):
        monkeypatch.setattr(sys, "argv", ["exercises.py", *arguments])
        with warnings.catch_warnings(), pytest.raises(SystemExit) as exit:
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module is already imported
            runpy.run_module("ssd_lite.exercises", run_name="__main__")
        return exit.value.code

    assert run("student", "--notebooks", str(tmp_path), "--check") == 1
    assert run("student", "--notebooks", str(tmp_path)) == 0
    assert "Wrote 1 student copies" in capsys.readouterr().out
    assert run("student", "--notebooks", str(tmp_path), "--check") == 0
    assert run("--check") not in (0, None)  # the `student` word is still required


# ---------------------------------------------------------------------------------------------------
# The real lessons and their committed student copies
# ---------------------------------------------------------------------------------------------------

def _load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _text(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _exercises_start(notebook, path):
    starts = [i for i, cell in enumerate(notebook["cells"])
              if cell["cell_type"] == "markdown" and _text(cell).lstrip().startswith("## Exercises")]
    assert len(starts) == 1, f"{path.name}: needs exactly one markdown cell starting '## Exercises'"
    return starts[0]


@pytest.mark.parametrize("lesson", LESSONS)
def test_lesson_exercises_follow_the_notebook_standard(lesson):
    path = NOTEBOOKS / f"{lesson}.ipynb"
    assert path.exists(), f"{path} is missing"
    cells = _load(path)["cells"]
    start = _exercises_start(_load(path), path)
    for index, cell in enumerate(cells):  # nbgrader takes any line mentioning a marker for one
        student_copies._check_marker_mentions(_text(cell), f"{path.name}, cell {index}")
    section = cells[start + 1:]
    assert section and section[0]["cell_type"] == "code", "the exercises start with one cell of imports"
    assert "nbgrader" not in section[0]["metadata"] and "BEGIN SOLUTION" not in _text(section[0])
    number = lesson[:2]
    solutions = [i for i, cell in enumerate(section) if cell["metadata"].get("nbgrader", {}).get("solution")]
    assert 2 <= len(solutions) <= 4, f"{lesson}: {len(solutions)} code exercises, expected 2 to 4"
    grade_ids = []
    for i in solutions:
        solution = section[i]
        grade_id = solution["metadata"]["nbgrader"]["grade_id"]
        assert re.fullmatch(rf"ex{number}-[a-z0-9-]+", grade_id), grade_id
        assert "### BEGIN SOLUTION" in _text(solution) and _text(solution).lstrip().startswith("def ")
        assert section[i - 1]["cell_type"] == "markdown", f"{grade_id}: task text comes before the solution"
        check = section[i + 1]
        nbgrader = check["metadata"].get("nbgrader", {})
        assert check["cell_type"] == "code" and re.match(r"check_\w+\(", _text(check).strip()), \
            f"{grade_id}: the cell after the solution must call a checker"
        assert nbgrader.get("grade_id") == f"{grade_id}-check" and nbgrader.get("locked") is True
        assert nbgrader.get("solution") is False
        grade_ids += [grade_id, nbgrader["grade_id"]]
    assert len(set(grade_ids)) == len(grade_ids), f"{lesson}: grade_ids must be unique"
    assert any(cell["cell_type"] == "markdown" and "predict" in _text(cell).lower() for cell in section), \
        f"{lesson}: needs a 'predict, then run' question in its exercises"


def test_student_copies_are_up_to_date(tmp_path):
    missing = [lesson for lesson in LESSONS if not (NOTEBOOKS / f"{lesson}.ipynb").exists()]
    assert not missing, f"lessons missing: {missing}"
    student_copies.write_student_copies(NOTEBOOKS, tmp_path)
    fresh = {path.name: path.read_bytes() for path in tmp_path.glob("*.ipynb")}
    committed = {path.name: path.read_bytes() for path in STUDENT.glob("*.ipynb")}
    assert sorted(committed) == sorted(fresh), "notebooks/student/ holds other files than the lessons' copies"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"student copies out of date: {stale}; run `python -m ssd_lite.student_copies`"


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_copy_holds_no_solution_and_matches_the_lesson_before_the_exercises(lesson):
    path = STUDENT / f"{lesson}.ipynb"
    assert path.exists(), f"{path} is missing; run `python -m ssd_lite.student_copies`"
    student, complete = _load(path), _load(NOTEBOOKS / f"{lesson}.ipynb")
    for cell in student["cells"]:  # (the lesson text may quote the markers; no line may start with one)
        assert not any(line.strip().startswith(("### BEGIN SOLUTION", "### END SOLUTION"))
                       for line in _text(cell).splitlines())
    start = _exercises_start(complete, path)
    assert _exercises_start(student, path) == start
    assert len(student["cells"]) == len(complete["cells"])
    for student_cell, lesson_cell in zip(student["cells"][:start + 1], complete["cells"]):
        assert (student_cell["cell_type"], _text(student_cell)) == (lesson_cell["cell_type"], _text(lesson_cell))
    for cell in student["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
        if cell["metadata"].get("nbgrader", {}).get("solution"):
            assert 'raise NotImplementedError("Exercise: write your code here")' in _text(cell)


@pytest.fixture(scope="module")
def kernel_manager():
    """One kernel, started in notebooks/student/, for all the exercise sections below.

    Each section runs after `%reset -f`, so it starts from an empty namespace and its imports cell must
    bring in every name it uses, as in a fresh kernel; only the module cache is shared, which saves the
    seconds that starting a kernel and importing torch take for each of the eight lessons.
    """
    import nbclient
    import nbformat
    from jupyter_client.utils import run_sync

    starter = nbclient.NotebookClient(nbformat.v4.new_notebook(), kernel_name="python3", timeout=120,
                                      resources={"metadata": {"path": str(STUDENT)}})
    starter.execute(cleanup_kc=False)  # starts the kernel and keeps it running
    starter.kc.stop_channels()
    yield starter.km
    run_sync(starter.km.shutdown_kernel)(now=True)


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_copy_exercises_run_and_report_not_attempted(lesson, kernel_manager):
    """Run the student copy from '## Exercises' to the end, from an empty namespace, in notebooks/student/.

    The cells before it are the lesson's own (checked above), which nbval runs; so the whole student copy
    runs, and each check cell reports its placeholder as not attempted instead of failing.
    """
    import nbclient
    import nbformat

    path = STUDENT / f"{lesson}.ipynb"
    assert path.exists(), f"{path} is missing; run `python -m ssd_lite.student_copies`"
    notebook = nbformat.read(path, as_version=4)
    start = _exercises_start(notebook, path)
    notebook.cells = [nbformat.v4.new_code_cell("%reset -f")] + notebook.cells[start:]
    client = nbclient.NotebookClient(notebook, km=kernel_manager, timeout=120)
    try:
        client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    finally:
        if client.kc is not None:
            client.kc.stop_channels()
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id", "").endswith("-check"):
            printed = "".join(output.get("text", "") for output in cell.outputs)
            assert "Not attempted yet" in printed, f"{lesson}, {cell.metadata.nbgrader.grade_id}: {printed!r}"
            # The verdict alone: no `False` echoed under it.
            assert [output.output_type for output in cell.outputs] == ["stream"], cell.outputs


# ---------------------------------------------------------------------------------------------------
# Lesson 01's checkers: the Caffe recipe for scales, where a default box sits, SSD512's two grids
# ---------------------------------------------------------------------------------------------------

from ssd_lite.priors import (SSD300_ASPECT_RATIOS, SSD300_FEATURE_MAP_SIZES, SSD300_SCALES,  # noqa: E402
                             boxes_per_location, default_boxes)


def caffe_scales_not_rounded(num_feature_maps, first_scale, s_min, s_max):
    step = (s_max - s_min) / (num_feature_maps - 2)
    return [first_scale] + [s_min + step * k for k in range(num_feature_maps)]


def caffe_scales_rounded_to_nearest(num_feature_maps, first_scale, s_min, s_max):
    step = round(100 * (s_max - s_min) / (num_feature_maps - 2)) / 100
    return [first_scale] + [s_min + step * k for k in range(num_feature_maps)]


def caffe_scales_first_map_by_the_equation(num_feature_maps, first_scale, s_min, s_max):
    return prior_scales(num_feature_maps, s_min, s_max)


def caffe_scales_one_percent_short(num_feature_maps, first_scale, s_min, s_max):
    """What float rounding gives when (s_max - s_min) * 100 lands just below a whole number."""
    step = ((round(100 * s_max) - round(100 * s_min)) // (num_feature_maps - 2) - 1) / 100
    return [first_scale] + [s_min + step * k for k in range(num_feature_maps)]


def prior_index_row_col_swapped(feature_map_sizes, aspect_ratios, k, row, col, box):
    return ex._prior_index(feature_map_sizes, aspect_ratios, k, col, row, box)


def prior_index_maps_counted_by_side(feature_map_sizes, aspect_ratios, k, row, col, box):
    earlier = sum(f * boxes_per_location(r) for f, r in zip(feature_map_sizes[:k], aspect_ratios[:k]))
    f, a = feature_map_sizes[k], boxes_per_location(aspect_ratios[k])
    return earlier + (row * f + col) * a + box


def prior_index_boxes_first(feature_map_sizes, aspect_ratios, k, row, col, box):
    """Box by box, then cells: the order of a (B, A*4, f, f) head output read without the permute."""
    earlier = ex._prior_index(feature_map_sizes, aspect_ratios, k, 0, 0, 0)
    f = feature_map_sizes[k]
    return earlier + box * f * f + row * f + col


def prior_index_without_extra_box(feature_map_sizes, aspect_ratios, k, row, col, box):
    per_cell = [1 + 2 * len(r) for r in aspect_ratios]
    earlier = sum(f * f * a for f, a in zip(feature_map_sizes[:k], per_cell[:k]))
    return earlier + (row * feature_map_sizes[k] + col) * per_cell[k] + box


LESSON_01_CHECKERS = {
    "check_caffe_scales": (ex._caffe_scales, [caffe_scales_not_rounded, caffe_scales_rounded_to_nearest,
                                              caffe_scales_first_map_by_the_equation, caffe_scales_one_percent_short]),
    "check_prior_index": (ex._prior_index, [prior_index_row_col_swapped, prior_index_maps_counted_by_side,
                                            prior_index_boxes_first, prior_index_without_extra_box]),
    "check_prediction_ssd512_grid_shift": (lambda sizes, steps, image_size: 0,
                                [lambda *args: 3.947, lambda *args: 19.0, lambda *args: 4]),
}
CHECKERS.update(LESSON_01_CHECKERS)  # so the contract test and the random-state test see them too


def test_caffe_scales_reference_gives_ssd300_and_ssd512():
    assert ex._caffe_scales(6, 0.1, 0.2, 0.9) == pytest.approx(SSD300_SCALES, abs=1e-12)
    ssd512 = ex._caffe_scales(7, 0.07, 0.15, 0.9)
    assert ssd512 == pytest.approx([0.07, 0.15, 0.30, 0.45, 0.60, 0.75, 0.90, 1.05], abs=1e-12)
    ratios = ((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,))
    assert len(default_boxes((64, 32, 16, 8, 4, 2, 1), ssd512, ratios)) == 24564


def test_caffe_scales_verdict_names_the_slip(capsys):
    ex.check_caffe_scales(caffe_scales_not_rounded)
    assert "rounded down to whole percent" in capsys.readouterr().out
    ex.check_caffe_scales(caffe_scales_one_percent_short)
    assert "one percent too small" in capsys.readouterr().out


def test_caffe_scales_check_accepts_a_careful_float_answer(capsys):
    def my_caffe_scales(num_feature_maps, first_scale, s_min, s_max):
        step = math.floor((s_max - s_min) * 100 / (num_feature_maps - 2)) / 100
        return torch.tensor([first_scale] + [s_min + step * k for k in range(num_feature_maps)])

    assert ex.check_caffe_scales(my_caffe_scales)


def test_prior_index_reference_follows_default_boxes_order():
    """The reference index is where default_boxes puts that box: checked against its centres and sizes."""
    generator = torch.Generator().manual_seed(0)
    for maps, ratios in [(SSD300_FEATURE_MAP_SIZES, SSD300_ASPECT_RATIOS), ((4, 3, 1), ((), (2, 3), (2,)))]:
        scales = SSD300_SCALES if maps == SSD300_FEATURE_MAP_SIZES else (0.2, 0.4, 0.6, 0.8)
        priors = default_boxes(maps, scales, ratios)
        assert ex._prior_index(maps, ratios, len(maps) - 1, maps[-1] - 1, maps[-1] - 1,
                               boxes_per_location(ratios[-1]) - 1) == len(priors) - 1
        for _ in range(50):
            k = int(torch.randint(len(maps), (1,), generator=generator))
            row, col = (int(v) for v in torch.randint(maps[k], (2,), generator=generator))
            box = int(torch.randint(boxes_per_location(ratios[k]), (1,), generator=generator))
            expected = cell_default_boxes((col + 0.5) / maps[k], (row + 0.5) / maps[k], scales[k], scales[k + 1],
                                          ratios[k])[box]
            torch.testing.assert_close(priors[ex._prior_index(maps, ratios, k, row, col, box)], expected)
            assert ex._locate_prior(maps, ratios, ex._prior_index(maps, ratios, k, row, col, box)) == (k, row, col, box)


def test_prior_index_verdict_says_which_box_the_answer_points_at(capsys):
    ex.check_prior_index(prior_index_row_col_swapped)
    out = capsys.readouterr().out
    assert ("that index is box 1 of cell (row 1, col 2) of map 0; you were asked for box 1 of cell (row 2, col 1) "
            "of map 0") in out
    ex.check_prior_index(lambda *args: 10 ** 6)
    assert "there are 22 default boxes, numbered 0 to 21" in capsys.readouterr().out  # the smallest case: (3, 1)


def test_ssd512_grid_shift_check_explains_why(capsys):
    assert ex._grid_shift((64, 32, 16, 8, 4, 2, 1), (8, 16, 32, 64, 128, 256, 512), 512) == 0.0
    assert ex._grid_shift((38, 19, 10, 5, 3, 1), (8, 16, 32, 64, 100, 300), 300) == pytest.approx(19.0, abs=1e-3)

    def my_prediction(feature_map_sizes, steps, image_size):
        answer = 0
        return answer

    assert ex.check_prediction_ssd512_grid_shift(my_prediction)
    out = capsys.readouterr().out
    assert out.startswith("✓ Correct") and "the two grids are one" in out
    assert not ex.check_prediction_ssd512_grid_shift(lambda *args: 3.947)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:") and "returned 3.947, expected 0" in out and "the two grids are one" in out


# ---------------------------------------------------------------------------------------------------
# Lessons 00 and 02: transfer tasks and "predict, then run" questions
# ---------------------------------------------------------------------------------------------------

def iou_xywh_read_as_xyxy(boxes1, boxes2):
    return box_iou(boxes1, boxes2)


def iou_xywh_read_as_cxcywh(boxes1, boxes2):
    return box_iou(cxcywh_to_xyxy(boxes1), cxcywh_to_xyxy(boxes2))


def iou_xywh_inclusive_pixels(boxes1, boxes2):
    """The old VOC habit: the last pixel is x_min + width - 1."""
    def corners(boxes):
        return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:] - 1], dim=1)
    return box_iou(corners(boxes1), corners(boxes2))


def diagonal_shift_sideways(iou_threshold):
    return (1 - iou_threshold) / (1 + iou_threshold)  # the lesson's sideways shift, not the diagonal one


def diagonal_shift_overlap_only(iou_threshold):
    return 1 - math.sqrt(iou_threshold)  # overlap area = threshold: forgets the union


def diagonal_shift_as_distance(iou_threshold):
    return math.sqrt(2) * ex._diagonal_shift(iou_threshold)  # the length of the shift, not its x part


def reencode_unchanged(offsets, priors_cxcywh, old_variances, new_variances):
    return offsets.clone()


def reencode_inverted(offsets, priors_cxcywh, old_variances, new_variances):
    return offsets * ex._variance_per_column(new_variances) / ex._variance_per_column(old_variances)


def reencode_centre_variance_everywhere(offsets, priors_cxcywh, old_variances, new_variances):
    return offsets * old_variances[0] / new_variances[0]


LESSON_00_02_CHECKERS = {
    "check_iou_xywh": (ex._xywh_iou, [iou_xywh_read_as_xyxy, iou_xywh_read_as_cxcywh, iou_xywh_inclusive_pixels]),
    "check_diagonal_shift": (ex._diagonal_shift, [diagonal_shift_sideways, diagonal_shift_overlap_only,
                                                  diagonal_shift_as_distance]),
    "check_reencode": (ex._reencode, [reencode_unchanged, reencode_inverted, reencode_centre_variance_everywhere]),
    "check_prediction_contained_box": (lambda object_box, default_box: 0.25,
                                       [lambda object_box, default_box: 0.5, lambda object_box, default_box: 1]),
    "check_prediction_competing_objects": (lambda gt_boxes, gt_labels, priors: 2,
                                           [lambda gt_boxes, gt_labels, priors: 1,
                                            lambda gt_boxes, gt_labels, priors: 0]),
    "check_prediction_objects_left_without_positive": (
        lambda iou_threshold: ex._objects_left_without_positive(iou_threshold)[0],
        [lambda iou_threshold: ex._objects_left_without_positive(iou_threshold)[0] + 1, lambda iou_threshold: 3]),
}
# pytest reads CHECKERS when it collects the tests, after this module has run: added here, these checkers
# go through every test above that takes its checkers from CHECKERS (reference accepted, placeholder,
# wrong types, exceptions, random state) as well as through the contract test.
CHECKERS.update(LESSON_00_02_CHECKERS)


def test_lesson_00_02_checkers_are_in_the_generic_tests():
    assert set(LESSON_00_02_CHECKERS) <= set(CHECKERS)


def test_iou_xywh_check_accepts_torchvision(capsys):
    def my_iou_xywh(boxes1, boxes2):  # torchvision converts the format, and the IoU is scale-free
        convert = torchvision.ops.box_convert
        return torchvision.ops.box_iou(convert(boxes1, "xywh", "xyxy") / 640, convert(boxes2, "xywh", "xyxy") / 640)

    assert ex.check_iou_xywh(my_iou_xywh)
    ex.check_iou_xywh(iou_xywh_read_as_xyxy)
    out = capsys.readouterr().out
    assert "(shifted right by half the width)" in out  # the smallest case that tells the formats apart


def test_diagonal_shift_check_accepts_a_numerical_answer(capsys):
    def my_diagonal_shift(iou_threshold):  # bisection with box_iou, no formula
        square = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
        low, high = 0.0, 1.0
        for _ in range(30):
            middle = (low + high) / 2
            iou = float(box_iou(square, square + middle)[0, 0])
            low, high = (middle, high) if iou > iou_threshold else (low, middle)
        return low

    assert ex.check_diagonal_shift(my_diagonal_shift)
    assert ex.check_diagonal_shift(lambda iou_threshold: round(ex._diagonal_shift(iou_threshold), 3))
    assert not ex.check_diagonal_shift(lambda iou_threshold: round(ex._diagonal_shift(iou_threshold), 2))
    assert ex._diagonal_shift(0.5) == pytest.approx(0.1835, abs=1e-4)


def test_reencode_check_accepts_the_round_trip_through_boxes(capsys):
    from ssd_lite.boxes import decode

    def my_reencode(offsets, priors_cxcywh, old_variances, new_variances):
        boxes = decode(offsets, priors_cxcywh, old_variances)
        return encode(boxes, priors_cxcywh, new_variances)

    assert ex.check_reencode(my_reencode)
    generator = torch.Generator().manual_seed(0)
    priors = xyxy_to_cxcywh(torch.rand(6, 2, generator=generator).mul(0.5).repeat(1, 2)
                            + torch.tensor([0.0, 0.0, 0.3, 0.3]))
    offsets = torch.randn(6, 4, generator=generator)
    assert torch.allclose(ex._reencode(offsets, priors, (0.1, 0.2), (0.3, 0.05)),
                          my_reencode(offsets, priors, (0.1, 0.2), (0.3, 0.05)), atol=1e-4)


def test_prediction_checks_say_why_when_right_and_when_wrong(capsys):
    assert ex.check_prediction_contained_box(lambda object_box, default_box: 1 / 4)
    right = capsys.readouterr().out
    assert right.startswith("✓ Correct: passed all checks, 0.25 is right.\n  Why: ")
    assert not ex.check_prediction_contained_box(lambda object_box, default_box: 0.5)
    wrong = capsys.readouterr().out
    assert wrong.startswith("✗ Not yet: <lambda> returned 0.5, expected 0.25.\n  Why: ")
    assert "0.04" in wrong and "0.16" in wrong


def test_prediction_checks_do_not_give_the_answer_away_on_a_slip(capsys):
    for slip in (None, "0.25", torch.zeros(3), float("nan")):
        assert not ex.check_prediction_contained_box(lambda object_box, default_box: slip)
        out = capsys.readouterr().out
        assert out.startswith("✗ Not yet:") and "expected 0.25" not in out and "Why" not in out


def test_prediction_answers_agree_with_match():
    gt_boxes, gt_labels, priors = ex._COMPETING_OBJECTS_QUESTION
    ious = box_iou(gt_boxes, cxcywh_to_xyxy(priors))
    # The question is the one the lesson asks: prior 1 is B's best prior but overlaps A more, above 0.5.
    assert int(ious[1].argmax()) == 1 and ious[0, 1] >= 0.5 > ious[1, 1] and int(ious[0].argmax()) == 0
    assert match(gt_boxes, gt_labels, priors)[1].tolist() == [1, 2, 0]
    count, why = ex._objects_left_without_positive(0.7)
    assert 0 <= count <= 3 and "person" in why
    assert ex._objects_left_without_positive(0.0)[0] == 0 and ex._objects_left_without_positive(1.0)[0] == 3


def test_prediction_check_reports_an_endless_loop(monkeypatch, capsys):
    monkeypatch.setattr(_checking, "TIME_LIMIT_S", 0.2)

    def predict(iou_threshold):
        while True:
            pass

    assert not ex.check_prediction_objects_left_without_positive(predict)
    assert "took longer than 0.2 s" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# Lessons 03 and 04: the gradient of smooth L1, equation 2 on boxes, mining over the whole batch, and
# their "predict, then run" questions
# ---------------------------------------------------------------------------------------------------

def gradient_of_l1(input, target, beta=1.0):
    return torch.sign(input - target)  # L1's gradient everywhere: forgets the quadratic zone


def gradient_of_l2(input, target, beta=1.0):
    return input - target  # L2's gradient everywhere: forgets the cap at 1


def gradient_ignores_beta(input, target, beta=1.0):
    return (input - target).clamp(-1, 1)


def gradient_with_respect_to_target(input, target, beta=1.0):
    return -ex._smooth_l1_gradient(input, target, beta)


def gradient_without_sign(input, target, beta=1.0):
    return ex._smooth_l1_gradient(input, target, beta).abs()


def box_loss_without_variances(predicted_boxes, gt_boxes, priors):
    return smooth_l1(encode(predicted_boxes, priors, (1.0, 1.0)), encode(gt_boxes, priors, (1.0, 1.0))).sum(dim=1)


def box_loss_on_corners(predicted_boxes, gt_boxes, priors):
    return smooth_l1(predicted_boxes, gt_boxes).sum(dim=1)  # in image units: no default box at all


def box_loss_relative_to_the_object(predicted_boxes, gt_boxes, priors):
    """Offsets of the prediction from the object, not of both from the default box: divides by the wrong size."""
    offsets = encode(predicted_boxes, xyxy_to_cxcywh(gt_boxes))
    return smooth_l1(offsets, torch.zeros_like(offsets)).sum(dim=1)


def box_loss_mean_of_offsets(predicted_boxes, gt_boxes, priors):
    return ex._box_loss(predicted_boxes, gt_boxes, priors) / 4


def batch_mining_easiest(conf_loss, labels, neg_pos_ratio=3):
    return ex._batch_hard_negative_mining(-conf_loss, labels, neg_pos_ratio)


def batch_mining_without_clamp(conf_loss, labels, neg_pos_ratio=3):
    """topk over the batch with k = ratio * positives, never capped at the number of negatives."""
    k = min(int(neg_pos_ratio * (labels > 0).sum()), labels.numel())
    mask = torch.zeros(labels.numel(), dtype=torch.bool)
    mask[conf_loss.masked_fill(labels > 0, float("-inf")).flatten().topk(k).indices] = True
    return mask.view(labels.shape)


def batch_mining_positives_per_image(conf_loss, labels, neg_pos_ratio=3):
    """Ranks the batch together but counts 3 per positive of the first image only."""
    return ex._batch_hard_negative_mining(conf_loss, torch.cat([labels[:1], torch.zeros_like(labels[1:])]),
                                          neg_pos_ratio) & (labels == 0)


LESSON_03_04_CHECKERS = {
    "check_smooth_l1_gradient": (ex._smooth_l1_gradient, [gradient_of_l1, gradient_of_l2, gradient_ignores_beta,
                                                          gradient_with_respect_to_target, gradient_without_sign]),
    "check_box_loss": (ex._box_loss, [box_loss_without_variances, box_loss_on_corners,
                                      box_loss_relative_to_the_object, box_loss_mean_of_offsets]),
    "check_batch_hard_negative_mining": (ex._batch_hard_negative_mining,
                                         [hard_negative_mining, batch_mining_easiest, batch_mining_without_clamp,
                                          batch_mining_positives_per_image]),
    "check_prediction_beta_gradient": (lambda error, betas: 0.1,
                                       [lambda error, betas: 1.0, lambda error, betas: 10.0]),
    "check_prediction_batch_mining": (lambda conf_loss, labels: 0,
                                      [lambda conf_loss, labels: 3 * int((labels > 0).sum()),
                                       lambda conf_loss, labels: int((labels > 0).sum())]),
}
CHECKERS.update(LESSON_03_04_CHECKERS)  # through every generic test above, as for lessons 00 and 02


def test_lesson_03_04_checkers_are_in_the_generic_tests():
    assert set(LESSON_03_04_CHECKERS) <= set(CHECKERS)


@pytest.mark.parametrize("beta", [0.0, 1 / 9, 0.5, 1.0, 2.0])
def test_smooth_l1_gradient_reference_agrees_with_autograd(beta):
    generator = torch.Generator().manual_seed(3)
    input = (torch.randn(200, generator=generator) * 3).requires_grad_()
    target = torch.randn(200, generator=generator)
    # The kinks, where the reference must agree with autograd too: d = 0 and |d| = beta.
    with torch.no_grad():
        input[:3] = target[:3] + torch.tensor([0.0, beta, -beta])
    F.smooth_l1_loss(input, target, reduction="sum", beta=beta).backward()
    assert torch.allclose(ex._smooth_l1_gradient(input.detach(), target, beta), input.grad, atol=1e-6)


def test_smooth_l1_gradient_check_accepts_autograd(capsys):
    def my_gradient(input, target, beta=1.0):
        input = input.clone().requires_grad_()
        (gradient,) = torch.autograd.grad(smooth_l1(input, target, beta).sum(), input)
        return gradient

    assert ex.check_smooth_l1_gradient(my_gradient)


def test_box_loss_reference_is_the_localisation_loss_of_the_decoded_prediction():
    """Equation 2 on boxes equals multibox_loss's L_loc * N when the network predicts those boxes' offsets."""
    from ssd_lite.boxes import decode

    generator = torch.Generator().manual_seed(4)
    gt_boxes = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.4, 0.3, 0.9, 0.8], [0.2, 0.5, 0.45, 0.95]])
    priors = xyxy_to_cxcywh(gt_boxes) * (1 + 0.1 * torch.randn(3, 4, generator=generator))
    loc_pred = encode(gt_boxes, priors) + torch.randn(3, 4, generator=generator)
    predicted_boxes = decode(loc_pred, priors)
    loc_loss, _ = multibox_loss(loc_pred[None], torch.zeros(1, 3, 2), encode(gt_boxes, priors)[None],
                                torch.ones(1, 3, dtype=torch.long))
    assert torch.allclose(ex._box_loss(predicted_boxes, gt_boxes, priors).sum() / 3, loc_loss, atol=1e-4)


def test_box_loss_charges_a_shift_by_the_default_box_size():
    """The lesson's point: the same shift costs less on a larger default box (offsets are relative)."""
    small, large = ex._box_loss(*[torch.tensor(rows) for rows in (
        [[0.42, 0.4, 0.62, 0.6], [0.32, 0.3, 0.72, 0.7]], [[0.4, 0.4, 0.6, 0.6], [0.3, 0.3, 0.7, 0.7]],
        [[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]])]).tolist()
    assert small == pytest.approx(0.5, abs=1e-4) and large == pytest.approx(0.125, abs=1e-4)


def test_batch_mining_reference_ranks_the_whole_batch():
    generator = torch.Generator().manual_seed(5)
    for ratio in (1, 2, 3, 2.5):
        conf_loss = torch.rand(3, 40, generator=generator)
        labels = (torch.rand(3, 40, generator=generator) < 0.1).long()
        labels[2] = 0
        mask = ex._batch_hard_negative_mining(conf_loss, labels, ratio)
        # An independent count: floor(ratio * N) hardest of all negatives, by sorting their losses.
        negatives = conf_loss[labels == 0]
        count = min(int(ratio * int((labels > 0).sum())), len(negatives))
        assert int(mask.sum()) == count and not (mask & (labels > 0)).any()
        assert torch.equal(conf_loss[mask].sort().values, negatives.sort().values[len(negatives) - count:])


def test_batch_mining_check_accepts_any_tie_break_and_a_loop(capsys):
    def my_batch_mining(conf_loss, labels, neg_pos_ratio=3):  # a sort over the flattened batch
        flat_loss, flat_labels = conf_loss.flatten(), labels.flatten()
        count = min(int(neg_pos_ratio * int((flat_labels > 0).sum())), int((flat_labels == 0).sum()))
        order = flat_loss.masked_fill(flat_labels > 0, float("-inf")).argsort(descending=True)
        mask = torch.zeros_like(flat_labels, dtype=torch.bool)
        mask[order[:count]] = True
        return mask.view(labels.shape)

    assert ex.check_batch_hard_negative_mining(my_batch_mining)
    conf_loss = torch.tensor([[0.5, 0.1], [0.5, 0.2]])
    labels = torch.tensor([[1, 0], [0, 0]])
    expected = ex._batch_hard_negative_mining(conf_loss, labels, 1)
    other = torch.tensor([[False, False], [True, False]])  # the tied 0.5 is in image 1 only once: the same
    assert ex._compare_batch_mining((expected, (conf_loss, labels, 1)), other) is None


def test_prediction_questions_of_lessons_03_04_say_why(capsys):
    assert ex.check_prediction_beta_gradient(lambda error, betas: 0.1)
    right = capsys.readouterr().out
    assert right.startswith("✓ Correct: passed all checks, 0.1 is right.\n  Why: ") and "beta 10: 0.05" in right
    assert not ex.check_prediction_batch_mining(lambda conf_loss, labels: 42)
    wrong = capsys.readouterr().out
    assert wrong.startswith("✗ Not yet: <lambda> returned 42, expected 0.\n  Why: ") and "Per image" in wrong


def test_batch_mining_question_is_the_one_the_lesson_asks():
    conf_loss, labels = ex._batch_mining_question()
    assert labels.shape == (2, 8732) and int((labels[0] > 0).sum()) > 0 and int((labels[1] > 0).sum()) == 0
    per_image = hard_negative_mining(conf_loss, labels).sum(dim=1).tolist()
    per_batch = ex._batch_hard_negative_mining(conf_loss, labels).sum(dim=1).tolist()
    assert per_image == [3 * int((labels > 0).sum()), 0] and per_batch == [0, per_image[0]]


# ---------------------------------------------------------------------------------------------------
# Lessons 05 and 07: soft-NMS, a chain of boxes, duplicates in a ranked list, how AP reads a curve
# ---------------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402  (this section's imports sit with it, at the end of the module)

from ssd_lite.evaluate import match_detections  # noqa: E402


def soft_nms_linear(boxes, scores, sigma=0.5, score_threshold=0.001):
    """The linear soft-NMS of the same paper, score * (1 - IoU), instead of the Gaussian one."""
    scores = scores.clone()
    remaining, keep, kept = list(range(len(boxes))), [], []
    while remaining:
        best = max(remaining, key=lambda i: float(scores[i]))
        keep.append(best)
        kept.append(float(scores[best]))
        remaining.remove(best)
        for i in remaining:
            scores[i] *= 1 - float(box_iou(boxes[best][None], boxes[i][None]))
        remaining = [i for i in remaining if scores[i] >= score_threshold]
    return torch.tensor(keep, dtype=torch.long), torch.tensor(kept)


def soft_nms_sigma_not_squared(boxes, scores, sigma=0.5, score_threshold=0.001):
    """exp(-IoU / sigma): the IoU not squared."""
    scores = scores.clone()
    remaining, keep, kept = list(range(len(boxes))), [], []
    while remaining:
        best = max(remaining, key=lambda i: float(scores[i]))
        keep.append(best)
        kept.append(float(scores[best]))
        remaining.remove(best)
        for i in remaining:
            scores[i] *= math.exp(-float(box_iou(boxes[best][None], boxes[i][None])) / sigma)
        remaining = [i for i in remaining if scores[i] >= score_threshold]
    return torch.tensor(keep, dtype=torch.long), torch.tensor(kept)


def soft_nms_without_resorting(boxes, scores, sigma=0.5, score_threshold=0.001):
    """Decays the scores but visits the boxes in their original order: a decayed box is never overtaken."""
    scores = scores.clone()
    order = scores.argsort(descending=True).tolist()
    keep, kept = [], []
    for position, best in enumerate(order):
        if scores[best] < score_threshold:
            continue
        keep.append(best)
        kept.append(float(scores[best]))
        for i in order[position + 1:]:
            scores[i] *= math.exp(-float(box_iou(boxes[best][None], boxes[i][None])) ** 2 / sigma)
    return torch.tensor(keep, dtype=torch.long), torch.tensor(kept)


def soft_nms_hard(boxes, scores, sigma=0.5, score_threshold=0.001):
    """Plain NMS: drops the overlapping boxes instead of lowering their scores."""
    keep = nms(boxes, scores, 0.5)
    return keep, scores[keep]


def soft_nms_original_scores(boxes, scores, sigma=0.5, score_threshold=0.001):
    """The right boxes in the right order, but each with its score before any decay."""
    keep, _ = ex._soft_nms(boxes, scores, sigma, score_threshold)
    return keep, scores[keep]


def duplicates_count_as_found(object_hit, num_objects):
    true_positives = (object_hit >= 0).double().cumsum(0)
    return true_positives / torch.arange(1, len(object_hit) + 1), true_positives / num_objects


def duplicates_left_out(object_hit, num_objects):
    """Skips the duplicates, as if NMS had removed them: fewer entries than detections."""
    seen, kept = set(), []
    for hit in object_hit.tolist():
        if hit < 0 or hit not in seen:
            kept.append(hit)
        seen.add(hit)
    return ex._precision_recall_with_duplicates(torch.tensor(kept, dtype=torch.long), num_objects)


def duplicates_recall_over_detections(object_hit, num_objects):
    precision, _ = ex._precision_recall_with_duplicates(object_hit, num_objects)
    return precision, precision


LESSON_05_07_CHECKERS = {
    "check_soft_nms": (ex._soft_nms, [soft_nms_linear, soft_nms_sigma_not_squared, soft_nms_without_resorting,
                                      soft_nms_hard, soft_nms_original_scores]),
    "check_prediction_nms_chain": (lambda boxes, scores, iou_threshold: 2,
                                   [lambda boxes, scores, iou_threshold: 1, lambda boxes, scores, iou_threshold: 3]),
    "check_precision_recall_with_duplicates": (ex._precision_recall_with_duplicates,
                                               [duplicates_count_as_found, duplicates_left_out,
                                                duplicates_recall_over_detections]),
    "check_prediction_eleven_point_ap": (lambda precision, recall: 6 / 11,
                                         [lambda precision, recall: 0.5, lambda precision, recall: 51 / 101]),
    "check_prediction_low_scoring_false_positives": (
        lambda scores, is_true_positive, num_ground_truth: 1.0,
        [lambda scores, is_true_positive, num_ground_truth: 2 / 102,
         lambda scores, is_true_positive, num_ground_truth: 0.5]),
}
CHECKERS.update(LESSON_05_07_CHECKERS)  # through every generic test above, as for lessons 00 to 04


def test_lesson_05_07_checkers_are_in_the_generic_tests():
    assert set(LESSON_05_07_CHECKERS) <= set(CHECKERS)


def _soft_nms_numpy(boxes, scores, sigma, score_threshold):
    """Soft-NMS written the way its authors' Cython loop is: position i holds the i-th box chosen; the best
    of the rest is swapped into it, then every box after it is decayed, and one below the threshold is
    swapped out to the end."""
    boxes, scores = boxes.double().numpy().copy(), scores.double().numpy().copy()
    index = np.arange(len(boxes))
    count, i = len(boxes), 0
    while i < count:
        best = i + int(np.argmax(scores[i:count]))
        for array in (boxes, scores, index):
            array[[i, best]] = array[[best, i]]
        j = i + 1
        while j < count:
            top_left = np.maximum(boxes[i, :2], boxes[j, :2])
            bottom_right = np.minimum(boxes[i, 2:], boxes[j, 2:])
            overlap = np.prod(np.clip(bottom_right - top_left, 0, None))
            areas = np.prod(boxes[i, 2:] - boxes[i, :2]) + np.prod(boxes[j, 2:] - boxes[j, :2])
            scores[j] *= np.exp(-(overlap / (areas - overlap)) ** 2 / sigma)
            if scores[j] < score_threshold:
                count -= 1
                for array in (boxes, scores, index):
                    array[[j, count]] = array[[count, j]]
            else:
                j += 1
        i += 1
    return index[:count].tolist(), scores[:count]


@pytest.mark.parametrize("seed", range(6))
def test_soft_nms_reference_agrees_with_the_authors_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    for sigma, score_threshold in [(0.5, 0.001), (0.3, 0.05), (1.0, 0.2)]:
        boxes = ex._crowded_boxes(10, 0.5, generator)
        scores = torch.rand(10, generator=generator).mul(0.9).add(0.1)
        if ex._soft_nms_margin(boxes, scores, sigma, score_threshold) < 1e-6:
            continue  # a tie: either order is right
        keep, kept_scores = ex._soft_nms(boxes, scores, sigma, score_threshold)
        their_keep, their_scores = _soft_nms_numpy(boxes, scores, sigma, score_threshold)
        assert keep.tolist() == their_keep
        assert np.allclose(kept_scores.double().numpy(), their_scores, atol=1e-6)


def test_soft_nms_limits_are_nms_and_no_suppression():
    """sigma -> 0 decays every overlapping box to nothing: torchvision's NMS at threshold 0. sigma -> inf
    decays nothing: every box, by decreasing score."""
    generator = torch.Generator().manual_seed(7)
    boxes = ex._random_boxes(30, generator)
    scores = ex._distinct_scores(30, generator)
    ious = box_iou(boxes, boxes)
    assert not ((ious > 0) & (ious < 1e-3)).any()  # no overlap so tiny that exp(-IoU^2 / sigma) stays large
    keep, _ = ex._soft_nms(boxes, scores, sigma=1e-9, score_threshold=0.001)
    assert torch.equal(keep, torchvision.ops.nms(boxes, scores, 0.0))
    keep, kept_scores = ex._soft_nms(boxes, scores, sigma=1e9, score_threshold=0.001)
    assert torch.equal(keep, scores.argsort(descending=True)) and torch.allclose(kept_scores, scores[keep])


def test_soft_nms_check_accepts_another_correct_answer_and_names_plain_nms(capsys):
    def my_soft_nms(boxes, scores, sigma=0.5, score_threshold=0.001):  # float64, lists, no argmax
        scores = scores.double().tolist()
        remaining, keep, kept = [i for i in range(len(scores)) if scores[i] >= score_threshold], [], []
        while remaining:
            best = sorted(remaining, key=lambda i: (-scores[i], i))[0]
            keep.append(best)
            kept.append(scores[best])
            remaining.remove(best)
            for i in remaining:
                scores[i] *= math.exp(-float(torchvision.ops.box_iou(boxes[best][None], boxes[i][None])) ** 2 / sigma)
            remaining = [i for i in remaining if scores[i] >= score_threshold]
        return torch.tensor(keep, dtype=torch.long), torch.tensor(kept, dtype=torch.float64)

    assert ex.check_soft_nms(my_soft_nms)
    capsys.readouterr()
    assert not ex.check_soft_nms(soft_nms_hard)
    out = capsys.readouterr().out
    assert "(two identical boxes: the lower one is kept too" in out and "dropped boxes [0], which soft-NMS keeps" in out


def test_nms_chain_question_is_the_one_the_lesson_asks(capsys):
    boxes, scores, iou_threshold = ex._NMS_CHAIN_QUESTION
    ious = box_iou(boxes, boxes)
    assert ious[0, 1] == pytest.approx(0.5) and ious[1, 2] == pytest.approx(0.5) and ious[0, 2] == pytest.approx(0.2)
    assert nms(boxes, scores, iou_threshold).tolist() == [0, 2]
    assert nms(boxes, scores, 0.6).tolist() == [0, 1, 2]
    assert not ex.check_prediction_nms_chain(lambda boxes, scores, iou_threshold: 1)
    assert "A dropped box suppresses nothing" in capsys.readouterr().out


@pytest.mark.parametrize("seed", range(5))
def test_duplicates_reference_agrees_with_match_detections(seed):
    """Boxes built so that each detection overlaps one object (or none): the greedy matching of
    ssd_lite.evaluate must judge them as the ranked-list rule does."""
    generator = torch.Generator().manual_seed(seed)
    num_objects = 4
    objects = torch.tensor([[0.05 + 0.24 * g, 0.1, 0.2 + 0.24 * g, 0.6] for g in range(num_objects)])
    object_hit = torch.randint(-1, num_objects, (15,), generator=generator)
    nowhere = torch.tensor([0.1, 0.7, 0.3, 0.95])  # below every object
    jitter = torch.rand(15, 4, generator=generator) * 0.02
    boxes = torch.stack([objects[h] if h >= 0 else nowhere for h in object_hit.tolist()]) + jitter
    scores = torch.linspace(0.95, 0.05, 15)
    is_true_positive, _ = match_detections(boxes, scores, objects, torch.zeros(num_objects, dtype=torch.bool), 0.5)
    expected = precision_recall(scores, is_true_positive, num_objects)
    received = ex._precision_recall_with_duplicates(object_hit, num_objects)
    assert all(torch.allclose(e, r) for e, r in zip(expected, received))


def test_duplicates_verdict_shows_the_smallest_duplicate(capsys):
    assert not ex.check_precision_recall_with_duplicates(duplicates_count_as_found)
    out = capsys.readouterr().out
    assert "(the same object twice: the second is a duplicate, a false positive)" in out
    assert "object_hit = tensor([0, 0])" in out


def test_ap_questions_are_the_ones_the_lesson_asks(capsys):
    precision, recall = ex._ONE_POINT_CURVE_QUESTION
    assert average_precision(precision, recall, "11point") == pytest.approx(6 / 11)
    scores, is_true_positive, num_ground_truth = ex._LOW_SCORING_FALSE_POSITIVES_QUESTION
    assert len(scores) == 102 and int(is_true_positive.sum()) == 2 == num_ground_truth
    assert (scores[2:] < scores[1]).all()  # every wrong detection scores below both right ones
    assert ex.check_prediction_eleven_point_ap(lambda precision, recall: 0.545)
    assert "6/11" in capsys.readouterr().out
    assert not ex.check_prediction_low_scoring_false_positives(lambda *args: 0.02)
    assert "after full recall" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# Appendix A1 (the bug zoo): tests that catch bugs, and a "predict, then run" question
# ---------------------------------------------------------------------------------------------------

def good_hflip_test(hflip):
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.6], [0.5, 0.0, 1.0, 0.5]])
    before = boxes.clone()
    flipped = hflip(boxes)
    assert torch.equal(boxes, before), "hflip changed its input"
    assert torch.allclose(flipped, torch.tensor([[0.7, 0.2, 0.9, 0.6], [0.0, 0.0, 0.5, 0.5]])), flipped
    return True


def hflip_test_of_widths_only(hflip):
    flipped = hflip(torch.tensor([[0.1, 0.2, 0.3, 0.6]]))
    assert (flipped[:, 2] > flipped[:, 0]).all()
    return True


def hflip_test_twice_is_identity(hflip):
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.6]])
    assert torch.allclose(hflip(hflip(boxes)), boxes)  # true of the unswapped and the vertical flip too
    return True


def hflip_test_without_input_check(hflip):
    assert torch.allclose(hflip(torch.tensor([[0.1, 0.2, 0.3, 0.6]])), torch.tensor([[0.7, 0.2, 0.9, 0.6]]))
    return True


def hflip_test_of_pixel_indices(hflip):
    """Expects W - 1 - x: rejects the right flip."""
    flipped = hflip(torch.tensor([[0.1, 0.2, 0.3, 0.6]]))
    assert torch.allclose(flipped, torch.tensor([[0.7 - 1 / 128, 0.2, 0.9 - 1 / 128, 0.6]]))
    return True


def good_box_coder_test(encode_fn, decode_fn):
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])  # not square: x and y scale differently
    boxes = torch.tensor([[0.35, 0.4, 0.75, 0.8]])  # centre (0.55, 0.6), twice as wide as the prior
    offsets = encode_fn(boxes, priors)
    assert torch.allclose(offsets, torch.tensor([[2.5, 2.5, math.log(2) / 0.2, 0.0]]), atol=1e-4), offsets
    assert torch.allclose(decode_fn(offsets, priors), boxes, atol=1e-5)
    return True


def box_coder_test_round_trip_only(encode_fn, decode_fn):
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    boxes = torch.tensor([[0.35, 0.4, 0.75, 0.8]])
    assert torch.allclose(decode_fn(encode_fn(boxes, priors), priors), boxes, atol=1e-5)
    return True


def box_coder_test_square_prior(encode_fn, decode_fn):
    """A known value, but on a square default box: dividing x by the height goes unseen."""
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    boxes = torch.tensor([[0.35, 0.4, 0.75, 0.8]])
    offsets = encode_fn(boxes, priors)
    expected = torch.tensor([[2.5, 5.0, math.log(2) / 0.2, math.log(2) / 0.2]])
    assert torch.allclose(offsets, expected, atol=1e-4)
    assert torch.allclose(decode_fn(offsets, priors), boxes, atol=1e-5)
    return True


def box_coder_test_encode_only(encode_fn, decode_fn):
    priors = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    boxes = torch.tensor([[0.35, 0.4, 0.75, 0.8]])
    assert torch.allclose(encode_fn(boxes, priors), torch.tensor([[2.5, 2.5, math.log(2) / 0.2, 0.0]]), atol=1e-4)
    return True


APPENDIX_A1_CHECKERS = {
    "check_hflip_test": (good_hflip_test, [hflip_test_of_widths_only, hflip_test_twice_is_identity,
                                           hflip_test_without_input_check, hflip_test_of_pixel_indices]),
    "check_box_coder_test": (good_box_coder_test, [box_coder_test_round_trip_only, box_coder_test_square_prior,
                                                   box_coder_test_encode_only]),
    "check_prediction_pixel_positives": (lambda pixel_box, image_size: 1,
                                         [lambda pixel_box, image_size: 0, lambda pixel_box, image_size: 2]),
}
CHECKERS.update(APPENDIX_A1_CHECKERS)  # through the generic tests too (see LESSON_00_02_CHECKERS)


def test_appendix_a1_checkers_are_in_the_generic_tests():
    assert set(APPENDIX_A1_CHECKERS) <= set(CHECKERS)


def test_bug_test_verdict_lists_the_bugs_caught_and_names_the_first_missed(capsys):
    assert ex.check_hflip_test(good_hflip_test)
    out = capsys.readouterr().out
    assert out.startswith("✓ Correct: passed all 5 checks: good_hflip_test passes the correct flip and fails each "
                          "of the 4 broken ones:")
    assert "x_max < x_min" in out and "written over its input" in out
    assert not ex.check_box_coder_test(box_coder_test_round_trip_only)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet: box_coder_test_round_trip_only passes 3 of the 5 broken encode/decode pairs")
    assert "The first it let through: the two variances swapped" in out
    assert "encode_fn gives tensor([[ 1.25" in out and "(right: tensor([[ 2.5" in out  # the smallest input


def test_bug_test_that_fails_the_right_function_is_shown_its_assert(capsys):
    assert not ex.check_hflip_test(hflip_test_of_pixel_indices)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet: hflip_test_of_pixel_indices fails on the correct flip, expected it to pass")
    assert "raised AssertionError" in out and "at line 4 of hflip_test_of_pixel_indices: assert torch.allclose" in out


def test_bug_test_must_say_true(capsys):
    def forgot_return(hflip):
        assert torch.equal(hflip(torch.tensor([[0.0, 0.0, 1.0, 1.0]])), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))

    assert not ex.check_hflip_test(forgot_return)
    assert "end your test with `return True`" in capsys.readouterr().out
    assert ex.check_box_coder_test(lambda encode_fn, decode_fn: torch.tensor(good_box_coder_test(encode_fn, decode_fn)))
    capsys.readouterr()
    # A test may answer False instead of raising: a broken flip is failed all the same.
    def returns_false(hflip):
        flipped = hflip(torch.tensor([[0.1, 0.2, 0.3, 0.6]]))
        return torch.allclose(flipped, torch.tensor([[0.7, 0.2, 0.9, 0.6]]))

    assert not ex.check_hflip_test(returns_false)
    out = capsys.readouterr().out
    assert "passes 1 of the 4 broken flips" in out and "The first it let through: right boxes, but written" in out


def test_bug_test_that_loops_is_stopped(monkeypatch, capsys):
    monkeypatch.setattr(_checking, "TIME_LIMIT_S", 0.2)

    def endless(hflip):
        while True:
            pass

    assert not ex.check_hflip_test(endless)
    assert "took longer than 0.2 s on the correct flip" in capsys.readouterr().out


def test_bug_test_may_use_the_random_generator(capsys):
    def random_round_trip(encode_fn, decode_fn):
        priors = torch.rand(5, 4) * 0.3 + 0.2
        boxes = cxcywh_to_xyxy(torch.rand(5, 4) * 0.3 + 0.2)
        assert torch.allclose(decode_fn(encode_fn(boxes, priors), priors), boxes, atol=1e-5)
        return good_box_coder_test(encode_fn, decode_fn)

    state = torch.random.get_rng_state()
    assert ex.check_box_coder_test(random_round_trip)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_broken_variants_are_broken_as_their_notes_say():
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.6], [0.35, 0.4, 0.75, 0.8]])
    priors = torch.tensor([[0.25, 0.35, 0.3, 0.2], [0.5, 0.5, 0.2, 0.4]])
    for encode_fn, decode_fn in [(ex._encode_centre_by_other_side, ex._decode_centre_by_other_side),
                                 (ex._encode_without_log, ex._decode_without_log)]:
        offsets = encode_fn(boxes, priors)
        assert not torch.allclose(offsets, encode(boxes, priors))  # wrong offsets ...
        assert torch.allclose(decode_fn(offsets, priors), boxes, atol=1e-6)  # ... that decode back to the boxes
    flipped = ex._hflip_corners_not_swapped(boxes)
    assert (flipped[:, 2] < flipped[:, 0]).all()
    inputs = boxes.clone()
    assert torch.equal(ex._hflip_in_place(inputs), ex._hflip_boxes(boxes))
    assert torch.equal(inputs, ex._hflip_boxes(boxes))  # the input was overwritten


def test_pixel_box_answer_is_what_match_does_without_its_check(monkeypatch):
    import ssd_lite.matching
    from ssd_lite.model import default_model

    pixel_box, image_size = ex._PIXEL_BOX_QUESTION
    priors = default_model(num_classes=6, image_size=image_size).priors
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        match(pixel_box, torch.tensor([1]), priors)
    monkeypatch.setattr(ssd_lite.matching, "check_boxes", lambda *args, **kwargs: None)
    loc_targets, labels = match(pixel_box, torch.tensor([1]), priors)
    expected, why = ex._pixel_box_positives(pixel_box, image_size)
    assert int((labels > 0).sum()) == expected == 1 and int(labels.argmax()) == 0
    assert loc_targets[0, 0] > 1000 and "default box 0" in why


# ---------------------------------------------------------------------------------------------------
# Lesson 09: the global N carried over to gradient accumulation, the size of SSD's heads, and
# torchvision's name for the 3:1 ratio
# ---------------------------------------------------------------------------------------------------

import inspect  # noqa: E402  (this section's imports sit with it, at the end of the module)

from torchvision.models.detection.ssd import SSD as TorchvisionSSD  # noqa: E402

from ssd_lite.loss import focal_multibox_loss  # noqa: E402
from ssd_lite.model import default_model, ssd300_vgg16  # noqa: E402


def accumulation_scales_of_ddp(positives_per_micro_batch):
    """DDP's factors, max(N_k, 1) * W / max(N, 1): right for processes, whose gradients DDP averages."""
    total = sum(positives_per_micro_batch)
    return [max(n, 1) * len(positives_per_micro_batch) / max(total, 1) for n in positives_per_micro_batch]


def accumulation_scales_mean(positives_per_micro_batch):
    """A plain mean of the micro-batches' losses."""
    return [1 / len(positives_per_micro_batch)] * len(positives_per_micro_batch)


def accumulation_scales_without_max(positives_per_micro_batch):
    """N_k / N: forgets that a micro-batch without positives was divided by 1, not by 0."""
    total = sum(positives_per_micro_batch)
    return [n / max(total, 1) for n in positives_per_micro_batch]


def accumulation_scales_none(positives_per_micro_batch):
    """Adds the micro-batches' losses as they are."""
    return [1.0] * len(positives_per_micro_batch)


def head_parameters_without_biases(feature_channels, boxes_per_location, num_classes):
    return sum(9 * c * k * (4 + num_classes) for c, k in zip(feature_channels, boxes_per_location))


def head_parameters_without_background(feature_channels, boxes_per_location, num_classes):
    return ex._head_parameters(feature_channels, boxes_per_location, num_classes - 1)


def head_parameters_one_by_one(feature_channels, boxes_per_location, num_classes):
    return sum((c + 1) * k * (4 + num_classes) for c, k in zip(feature_channels, boxes_per_location))


def head_parameters_conf_only(feature_channels, boxes_per_location, num_classes):
    return sum((9 * c + 1) * k * num_classes for c, k in zip(feature_channels, boxes_per_location))


LESSON_09_CHECKERS = {
    "check_accumulation_scales": (ex._accumulation_scales, [accumulation_scales_of_ddp, accumulation_scales_mean,
                                                            accumulation_scales_without_max,
                                                            accumulation_scales_none]),
    "check_head_parameters": (ex._head_parameters, [head_parameters_without_biases, head_parameters_without_background,
                                                    head_parameters_one_by_one, head_parameters_conf_only]),
    "check_prediction_torchvision_neg_pos_ratio": (lambda positive_fraction: 3,
                                                   [lambda positive_fraction: 1 / 3, lambda positive_fraction: 4]),
}
CHECKERS.update(LESSON_09_CHECKERS)  # through the generic tests too (see LESSON_00_02_CHECKERS)


def test_lesson_09_checkers_are_in_the_generic_tests():
    assert set(LESSON_09_CHECKERS) <= set(CHECKERS)


@pytest.mark.parametrize("objective", [multibox_loss, focal_multibox_loss])
def test_accumulation_scales_give_the_gradient_of_the_whole_batch(objective):
    """Micro-batches of 1, 0 and 3 images' worth of positives, each loss times its factor, gradients added
    up: the gradient of one loss on the whole batch (the focal loss makes the micro-batch without
    positives count, so a factor 0 there would be caught)."""
    generator = torch.Generator().manual_seed(9)
    labels = torch.zeros(6, 50, dtype=torch.long)
    labels[0, :2] = 1
    labels[4, 10:13] = 2
    labels[5, 20] = 3
    loc_pred = torch.randn(6, 50, 4, generator=generator, requires_grad=True)
    conf_pred = torch.randn(6, 50, 4, generator=generator, requires_grad=True)
    loc_targets = torch.randn(6, 50, 4, generator=generator)
    whole = torch.autograd.grad(sum(objective(loc_pred, conf_pred, loc_targets, labels)), (loc_pred, conf_pred))
    micro_batches = [slice(0, 2), slice(2, 4), slice(4, 6)]
    positives = [int((labels[part] > 0).sum()) for part in micro_batches]
    assert positives == [2, 0, 4]
    accumulated = sum(factor * sum(objective(loc_pred[part], conf_pred[part], loc_targets[part], labels[part]))
                      for factor, part in zip(ex._accumulation_scales(positives), micro_batches))
    for expected, received in zip(whole, torch.autograd.grad(accumulated, (loc_pred, conf_pred))):
        torch.testing.assert_close(received, expected, rtol=1e-5, atol=1e-6)


def test_accumulation_verdicts_name_the_slip(capsys):
    ex.check_accumulation_scales(accumulation_scales_of_ddp)
    assert "factors for 2 DDP processes" in capsys.readouterr().out
    ex.check_accumulation_scales(accumulation_scales_without_max)
    out = capsys.readouterr().out
    assert "positives_per_micro_batch = [0, 4]" in out and "divided by max(0, 1) = 1" in out
    ex.check_accumulation_scales(accumulation_scales_mean)
    assert "plain mean" in capsys.readouterr().out


def _heads_of(model):
    return sum(p.numel() for heads in (model.loc_heads, model.conf_heads) for p in heads.parameters())


def test_head_parameters_reference_counts_real_heads():
    # On the meta device: shapes only, no memory, built in a blink.
    with torch.device("meta"):
        ours = {c: ssd300_vgg16(c) for c in (21, 81)}
        torchvision_ssd = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None,
                                                                    num_classes=91)
        small = default_model(6)
    ssd300 = ([512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4])
    for num_classes, model in ours.items():
        assert ex._head_parameters(*ssd300, num_classes) == _heads_of(model)
    assert ex._head_parameters(*ssd300, 91) == sum(p.numel() for p in torchvision_ssd.head.parameters())
    channels = [head.in_channels for head in small.loc_heads]
    assert ex._head_parameters(channels, small.boxes_per_location, 6) == _heads_of(small)
    assert ([64, 96, 96, 96], [6, 6, 6, 6]) == (channels, small.boxes_per_location)  # the checker's case


def test_head_parameter_verdict_names_the_slip_and_writes_whole_numbers(capsys):
    ex.check_head_parameters(head_parameters_without_biases)
    assert "also has a bias" in capsys.readouterr().out
    ex.check_head_parameters(lambda channels, per_location, num_classes: 3341550 if num_classes == 21 else 0)
    out = capsys.readouterr().out
    assert "e+0" not in out and "instead of 876" in out


def test_torchvision_neg_pos_question_is_torchvisions_default(capsys):
    fraction = inspect.signature(TorchvisionSSD.__init__).parameters["positive_fraction"].default
    assert fraction == ex._TORCHVISION_POSITIVE_FRACTION
    assert ex.check_prediction_torchvision_neg_pos_ratio(lambda positive_fraction: 3.0)
    assert "neg_to_pos_ratio" in capsys.readouterr().out
    assert inspect.signature(multibox_loss).parameters["neg_pos_ratio"].default == 3


# ---------------------------------------------------------------------------------------------------
# Lesson 06: a head laid out value by value, the size of a conv's output, zoom out and the positives
# ---------------------------------------------------------------------------------------------------

def flatten_box_major(head_output, num_values):
    """SSD.forward's own line, copied: right for channel j*V + v, wrong for this head."""
    return head_output.permute(0, 2, 3, 1).reshape(head_output.shape[0], -1, num_values)


def flatten_columns_first(head_output, num_values):
    batch, channels, f, _ = head_output.shape
    per_value = head_output.reshape(batch, num_values, channels // num_values, f, f)
    return per_value.permute(0, 4, 3, 2, 1).reshape(batch, -1, num_values)


def flatten_boxes_before_cells(head_output, num_values):
    batch = head_output.shape[0]
    return head_output.reshape(batch, num_values, -1).transpose(1, 2)


def flatten_without_permute(head_output, num_values):
    return head_output.reshape(head_output.shape[0], -1, num_values)


def output_size_without_dilation(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    return ex._output_size(size, kernel_size, stride, padding, 1, ceil_mode)


def output_size_floor_always(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def output_size_without_first_window(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    return ex._output_size(size, kernel_size, stride, padding, dilation, ceil_mode) - 1


LESSON_06_CHECKERS = {
    "check_flatten_value_major": (ex._flatten_value_major, [flatten_box_major, flatten_columns_first,
                                                            flatten_boxes_before_cells, flatten_without_permute]),
    "check_output_size": (ex._output_size, [output_size_without_dilation, output_size_floor_always,
                                            output_size_without_first_window]),
    "check_prediction_zoom_out_positives": (lambda zoom_out: -1, [lambda zoom_out: 1, lambda zoom_out: 0]),
}
CHECKERS.update(LESSON_06_CHECKERS)  # through every generic test above, as for the other lessons


def test_lesson_06_checkers_are_in_the_generic_tests():
    assert set(LESSON_06_CHECKERS) <= set(CHECKERS)


@pytest.mark.parametrize("boxes, num_values", [(6, 4), (6, 6), (4, 21)])
def test_value_major_reference_gives_the_order_of_the_model_and_its_default_boxes(boxes, num_values):
    """Regrouping a real head's channels value by value, then flattening with the reference, gives exactly what
    SSD.forward gives from the original head: prediction i still belongs to default box i."""
    from ssd_lite.model import small_ssd
    torch.manual_seed(0)
    model = small_ssd(num_values if num_values > 4 else 6, aspect_ratios=[(2, 3) if boxes == 6 else (2,)] * 4).eval()
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        fmap = model.features((images - model.mean) / model.std)[0]
        head = (model.loc_heads if num_values == 4 else model.conf_heads)[0]
        box_major = head(fmap)  # (B, k*V, f, f), channel j*V + v
        loc, conf = model(images)
    batch, _, f, _ = box_major.shape
    value_major = box_major.reshape(batch, boxes, num_values, f, f).transpose(1, 2).reshape(batch, -1, f, f)
    flattened = ex._flatten_value_major(value_major, num_values)
    from_model = (loc if num_values == 4 else conf)[:, :f * f * boxes]
    assert torch.equal(flattened, from_model)


def test_flatten_verdict_names_the_copied_line(capsys):
    ex.check_flatten_value_major(flatten_box_major)
    out = capsys.readouterr().out
    assert "one cell with two boxes" in out and "read the channels box by box" in out
    ex.check_flatten_value_major(flatten_columns_first)
    assert "column by column" in capsys.readouterr().out


def test_output_size_reference_agrees_with_torch():
    generator = torch.Generator().manual_seed(6)
    for _ in range(300):
        kernel, stride, dilation = (int(torch.randint(low, high, (1,), generator=generator))
                                    for low, high in [(1, 8), (1, 4), (1, 4)])
        padding = int(torch.randint(0, kernel // 2 + 1, (1,), generator=generator))
        size = int(torch.randint(1, 60, (1,), generator=generator))
        if size + 2 * padding < dilation * (kernel - 1) + 1:
            continue  # the window does not fit: torch raises, no size to compare
        image = torch.zeros(1, 1, size, size)
        conv = F.conv2d(image, torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding, dilation=dilation)
        assert ex._output_size(size, kernel, stride, padding, dilation) == conv.shape[-1]
        for ceil_mode in (False, True):  # every corner of the ceil rule, including the right-padding one
            pooled = F.max_pool2d(image, kernel, stride, padding, dilation, ceil_mode=ceil_mode)
            assert ex._output_size(size, kernel, stride, padding, dilation, ceil_mode) == pooled.shape[-1]
    assert [ex._output_size(*args) for args in [(75, 2, 2, 0, 1, True), (19, 3, 1, 6, 6), (5, 3)]] == [38, 19, 3]


def test_output_size_verdict_names_the_slip(capsys):
    ex.check_output_size(output_size_without_dilation)
    assert "dilation spreads the kernel" in capsys.readouterr().out
    ex.check_output_size(output_size_floor_always)
    assert "ceil_mode=True rounds the division up" in capsys.readouterr().out
    ex.check_output_size(output_size_without_first_window)
    assert "count the first window too" in capsys.readouterr().out


def test_zoom_out_question_is_the_lessons_measurement(capsys):
    without, with_zoom = ex._positives_per_object(1.0), ex._positives_per_object(4.0)
    assert with_zoom < 0.9 * without  # clearly down: the expected answer is -1
    assert ex.check_prediction_zoom_out_positives(lambda zoom_out: -1)
    assert f"{without:.1f} positives per object without zoom out, {with_zoom:.1f} with it" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# Lesson 08: the focal loss by hand, the bias for a prior, the focal factor on SSD's softmax scores
# ---------------------------------------------------------------------------------------------------

from ssd_lite.loss import sigmoid_focal_loss  # noqa: E402  (this section's imports sit with it)


def focal_from_probabilities(inputs, targets, alpha=0.25, gamma=2.0):
    """log(sigmoid(x)): right for moderate logits, infinite for a confident wrong one."""
    p = torch.sigmoid(inputs)
    p_t = targets * p + (1 - targets) * (1 - p)
    loss = -(1 - p_t) ** gamma * torch.log(p_t)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss if alpha >= 0 else loss


def focal_without_alpha(inputs, targets, alpha=0.25, gamma=2.0):
    return sigmoid_focal_loss(inputs, targets, alpha=-1, gamma=gamma)


def focal_alpha_on_negatives(inputs, targets, alpha=0.25, gamma=2.0):
    return sigmoid_focal_loss(inputs, targets, alpha=1 - alpha if alpha >= 0 else alpha, gamma=gamma)


def focal_factor_p_t(inputs, targets, alpha=0.25, gamma=2.0):
    """p_t^gamma instead of (1 - p_t)^gamma: weighs the easy entries up instead of down."""
    cross_entropy = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    loss = torch.exp(-cross_entropy) ** gamma * cross_entropy
    return (alpha * targets + (1 - alpha) * (1 - targets)) * loss if alpha >= 0 else loss


def focal_summed(inputs, targets, alpha=0.25, gamma=2.0):
    return sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction="sum")


def bias_log_pi(pi):
    return math.log(pi)


def bias_sign_flipped(pi):
    return math.log((1 - pi) / pi)


def bias_is_pi(pi):
    return pi


def softmax_focal_plain_cross_entropy(logits, labels, gamma=2.0):
    return F.cross_entropy(logits, labels, reduction="none")


def softmax_focal_from_probabilities(logits, labels, gamma=2.0):
    p_t = logits.softmax(dim=1).gather(1, labels[:, None])[:, 0]
    return -(1 - p_t) ** gamma * torch.log(p_t)


def softmax_focal_sigmoid_of_label(logits, labels, gamma=2.0):
    """The label's logit alone through a sigmoid: ignores what the other classes say."""
    label_logits = logits.gather(1, labels[:, None])[:, 0]
    return sigmoid_focal_loss(label_logits, torch.ones_like(label_logits), alpha=-1, gamma=gamma)


def softmax_focal_mean(logits, labels, gamma=2.0):
    return ex._softmax_focal_loss(logits, labels, gamma).mean()


LESSON_08_CHECKERS = {
    "check_sigmoid_focal_loss": (sigmoid_focal_loss, [focal_from_probabilities, focal_without_alpha,
                                                      focal_alpha_on_negatives, focal_factor_p_t, focal_summed]),
    "check_prior_bias": (ex._prior_bias, [bias_log_pi, bias_sign_flipped, bias_is_pi]),
    "check_softmax_focal_loss": (ex._softmax_focal_loss, [softmax_focal_plain_cross_entropy,
                                                          softmax_focal_from_probabilities,
                                                          softmax_focal_sigmoid_of_label, softmax_focal_mean]),
    # 0.25 x 0.01: alpha instead of 1 - alpha; the modulating factor alone; the cross-entropy's own weight.
    "check_prediction_easy_negative_weight": (lambda p, alpha, gamma: 0.0075,
                                              [lambda p, alpha, gamma: 0.0025, lambda p, alpha, gamma: 0.01,
                                               lambda p, alpha, gamma: 1]),
}
CHECKERS.update(LESSON_08_CHECKERS)  # through every generic test above, as for the other lessons


def test_lesson_08_checkers_are_in_the_generic_tests():
    assert set(LESSON_08_CHECKERS) <= set(CHECKERS)


def test_lesson_08_checkers_accept_other_correct_answers(capsys):
    def my_prior_bias(pi):  # a 0-dim float64 tensor, from torch's logit
        return torch.logit(torch.tensor(pi, dtype=torch.float64))

    def my_softmax_focal_loss(logits, labels, gamma=2.0):  # log-softmax, then pick the label's column
        log_p_t = logits.log_softmax(dim=1).gather(1, labels[:, None])[:, 0]
        return -(1 - log_p_t.exp()) ** gamma * log_p_t

    assert ex.check_sigmoid_focal_loss(torchvision.ops.sigmoid_focal_loss)
    assert ex.check_prior_bias(my_prior_bias)
    assert ex.check_softmax_focal_loss(my_softmax_focal_loss)


def test_focal_loss_check_names_the_unstable_answer(capsys):
    assert not ex.check_sigmoid_focal_loss(focal_from_probabilities)
    out = capsys.readouterr().out
    assert "1 of 11 cases failed" in out and "must come from the logits" in out


def test_easy_negative_prediction_says_why(capsys):
    assert ex.check_prediction_easy_negative_weight(lambda p, alpha, gamma: 0.75 * 0.1 ** 2)
    right = capsys.readouterr().out
    assert right.startswith("✓ Correct: passed all checks, 0.0075 is right.\n  Why: ") and "1 - alpha" in right
    assert not ex.check_prediction_easy_negative_weight(lambda p, alpha, gamma: 0.25 * 0.1 ** 2)
    assert "expected 0.0075" in capsys.readouterr().out


def test_an_infinite_answer_is_named_not_printed_as_the_largest_float(capsys):
    assert not ex.check_sigmoid_focal_loss(focal_from_probabilities)  # log(sigmoid(-30)) in float32 is -inf
    out = capsys.readouterr().out
    assert "containing infinity" in out and "e+308" not in out
    expected = torch.tensor([1.0, math.inf])
    assert "containing infinity" in _checking._compare_tensors(torch.tensor([1.0, 2.0]), torch.tensor([math.inf, 2.0]))
    message = _checking._compare_tensors(expected, torch.tensor([1.0, -math.inf]))
    assert "largest difference inf at result[1]" in message


# ---------------------------------------------------------------------------------------------------
# Every lesson's plausible wrong answers, each rejected by its checker. (The tests above that are
# parametrised with CHECKERS itself see every lesson's checkers, since pytest reads the dict when it
# collects; a list has to be built here, after the last lesson's CHECKERS.update.)
# ---------------------------------------------------------------------------------------------------

WRONG_ANSWERS = [(name, wrong) for name, (_, wrongs) in CHECKERS.items() for wrong in wrongs]


@pytest.mark.parametrize("name, wrong", WRONG_ANSWERS,
                         ids=[f"{name}-{i}" for i, (name, _) in enumerate(WRONG_ANSWERS)])
def test_checker_rejects_a_plausible_wrong_answer(name, wrong, capsys):
    assert not getattr(ex, name)(wrong)
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:")
    assert "expected" in out and "Traceback" not in out
