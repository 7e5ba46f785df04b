"""The exercise checkers and the student copies of the lessons.

Every checker must accept ssd_lite's own function, reject plausible wrong answers (each defined
below), report an unattempted exercise kindly, and never raise on a wrong answer. The student copies
must be up to date, hold no solutions, and run: their exercise sections are executed in a fresh kernel.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from ssd_lite import exercises as ex
from ssd_lite.boxes import VARIANCES, box_iou, cxcywh_to_xyxy, encode, xyxy_to_cxcywh
from ssd_lite.evaluate import average_precision, precision_recall
from ssd_lite.loss import hard_negative_mining, multibox_loss, smooth_l1
from ssd_lite.matching import match
from ssd_lite.nms import batched_nms, nms
from ssd_lite.priors import cell_default_boxes, prior_scales

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
STUDENT = NOTEBOOKS / "student"
LESSONS = ("00_introduction", "01_default_boxes", "02_matching", "03_smooth_l1_loss",
           "04_hard_negative_mining", "05_nms", "06_training", "07_evaluation")


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
WRONG_ANSWERS = [(name, wrong) for name, (_, wrongs) in CHECKERS.items() for wrong in wrongs]


def test_every_checker_of_the_contract_is_tested():
    public = {name for name in dir(ex) if name.startswith("check_")}
    assert public == set(CHECKERS)


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_accepts_the_reference(name, capsys):
    reference = CHECKERS[name][0]
    assert getattr(ex, name)(reference) is True
    assert capsys.readouterr().out.startswith("✓ Correct: passed all ")


@pytest.mark.parametrize("name, wrong", WRONG_ANSWERS, ids=[wrong.__name__ for _, wrong in WRONG_ANSWERS])
def test_checker_rejects_a_plausible_wrong_answer(name, wrong, capsys):
    assert getattr(ex, name)(wrong) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:")
    assert "expected" in out and "Traceback" not in out


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_reports_the_placeholder_kindly(name, capsys):
    def my_answer(*args, **kwargs):
        # YOUR CODE HERE
        raise NotImplementedError("Exercise: write your code here")

    assert getattr(ex, name)(my_answer) is False
    assert capsys.readouterr().out == ("Not attempted yet: replace `raise NotImplementedError` in my_answer "
                                       "with your code.\n")


@pytest.mark.parametrize("name", CHECKERS)
@pytest.mark.parametrize("answer", [None, torch.zeros(7, 3), "text", (torch.zeros(2),)])
def test_checker_survives_a_wrong_type_or_shape(name, answer, capsys):
    assert getattr(ex, name)(lambda *args, **kwargs: answer) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ Not yet:") and "Traceback" not in out
    if answer is None:
        assert "returned None: did you forget `return`?" in out


@pytest.mark.parametrize("name", CHECKERS)
def test_checker_reports_an_exception_without_traceback(name, capsys):
    def my_answer(*args):
        values = args[0]
        return values[:, :, :, 99]  # too many indices for any input

    assert getattr(ex, name)(my_answer) is False
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
    assert ex.check_iou(torch.zeros(1, 1)) is False
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
    assert ex._compare_mining(expected, other, conf_loss, labels) is None
    wrong = torch.tensor([[False, False, False, True]])
    assert "hardest" in ex._compare_mining(expected, wrong, conf_loss, labels)


def test_check_average_precision_can_be_limited_to_one_interpolation(capsys):
    def eleven_point_only(precision, recall, interpolation):
        return average_precision(precision, recall, "11point")

    assert ex.check_average_precision(eleven_point_only, interpolations=("11point",))
    assert not ex.check_average_precision(eleven_point_only)


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
    student = ex.student_notebook(lesson, "00_test.ipynb")
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
    assert ex.strip_solutions(source, "cell") == (
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
    with pytest.raises(ex.SolutionFormatError, match=re.escape(message)) as error:
        ex.student_notebook(lesson, "notebooks/03_x.ipynb")
    assert "notebooks/03_x.ipynb, cell 1 (ex03-bad)" in str(error.value)


def test_student_tool_refuses_markers_quoted_in_text():
    """nbgrader would take the quoted markers for a solution region and fail on the lesson."""
    lesson = _notebook(_cell("markdown", "## Exercises\nWrite your code between `### BEGIN SOLUTION` and "
                                         "`### END SOLUTION`."))
    with pytest.raises(ex.SolutionFormatError, match=r"07_x.ipynb, cell 0: line 2 mentions a solution marker"):
        ex.student_notebook(lesson, "07_x.ipynb")


def test_student_tool_refuses_a_solution_without_nbgrader_metadata():
    lesson = _notebook(_cell("code", SOLUTION))
    with pytest.raises(ex.SolutionFormatError, match=r"05_x.ipynb, cell 0: has a solution region but no nbgrad"):
        ex.student_notebook(lesson, "05_x.ipynb")
    lesson = _notebook(_cell("code", "def f():\n    return 1", nbgrader="ex05-f"))
    with pytest.raises(ex.SolutionFormatError, match="marked as an nbgrader solution cell but has no"):
        ex.student_notebook(lesson, "05_x.ipynb")


def test_student_command_writes_deterministic_copies_and_checks_them(tmp_path, capsys):
    lessons = tmp_path / "notebooks"
    lessons.mkdir()
    (lessons / "00_a.ipynb").write_text(json.dumps(_notebook(_cell("code", SOLUTION, nbgrader="ex00-d"))))
    (lessons / "scratch.ipynb").write_text(json.dumps(_notebook()))  # not a lesson: not copied
    out = lessons / "student"
    assert ex.main(["student", "--notebooks", str(lessons), "--check"]) == 1  # nothing written yet
    assert ex.main(["student", "--notebooks", str(lessons)]) == 0
    first = (out / "00_a.ipynb").read_bytes()
    assert sorted(path.name for path in out.iterdir()) == ["00_a.ipynb"]
    assert ex.main(["student", "--notebooks", str(lessons), "--out", str(out)]) == 0
    assert (out / "00_a.ipynb").read_bytes() == first
    assert ex.main(["student", "--notebooks", str(lessons), "--check"]) == 0
    (lessons / "00_a.ipynb").write_text(json.dumps(_notebook(_cell("code", "x = 1"))))
    assert ex.main(["student", "--notebooks", str(lessons), "--check"]) == 1
    assert "00_a.ipynb is out of date" in capsys.readouterr().err


def test_student_command_names_the_broken_notebook(tmp_path, capsys):
    (tmp_path / "02_b.ipynb").write_text(json.dumps(_notebook(_cell("code", "def f():\n    ### BEGIN SOLUTION",
                                                                    nbgrader="ex02-f"))))
    assert ex.main(["student", "--notebooks", str(tmp_path)]) == 1
    assert "02_b.ipynb, cell 0 (ex02-f): ### BEGIN SOLUTION on line 2 has no" in capsys.readouterr().err


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
        ex._check_marker_mentions(_text(cell), f"{path.name}, cell {index}")
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
    ex.write_student_copies(NOTEBOOKS, tmp_path)
    fresh = {path.name: path.read_bytes() for path in tmp_path.glob("*.ipynb")}
    committed = {path.name: path.read_bytes() for path in STUDENT.glob("*.ipynb")}
    assert sorted(committed) == sorted(fresh), "notebooks/student/ holds other files than the lessons' copies"
    stale = [name for name in fresh if committed[name] != fresh[name]]
    assert not stale, f"student copies out of date: {stale}; run `python -m ssd_lite.exercises student`"


@pytest.mark.parametrize("lesson", LESSONS)
def test_student_copy_holds_no_solution_and_matches_the_lesson_before_the_exercises(lesson):
    path = STUDENT / f"{lesson}.ipynb"
    assert path.exists(), f"{path} is missing; run `python -m ssd_lite.exercises student`"
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
    assert path.exists(), f"{path} is missing; run `python -m ssd_lite.exercises student`"
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
