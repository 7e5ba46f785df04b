"""From 8732 predictions to a few detections: non-maximum suppression (paper, section 3, "Inference").

SSD predicts a box and class scores at every default box, so one object is found by many neighbouring
default boxes at once. Greedy non-maximum suppression keeps the best-scoring box, drops every box that
overlaps it by more than an IoU threshold (0.45 in the paper), and repeats with the best box left.
It is done per class: a dog box should not suppress the person box it overlaps.

- `nms`: greedy NMS, the textbook loop; `batched_nms`: NMS within each label;
- `postprocess`: a batch of network outputs -> detections per image (decode, class scores, per-class
  candidates, per-class NMS, the best per image); torchvision calls this step `postprocess_detections`.
`nms` and `batched_nms` give the same kept indices, in the same order, as torchvision.ops.nms and
torchvision.ops.batched_nms.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from ssd_lite.boxes import box_iou, check_boxes, check_tensor, decode

# The original Caffe SSD (nms_param { top_k: 400 }) keeps only the 400 best-scoring boxes of each class
# before NMS: low-scoring boxes beyond them almost never survive into the final top 200, and capping
# bounds the work. torchvision's SSD does the same (topk_candidates=400).
NMS_TOP_K = 400


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression: keep the best box left, drop every box that overlaps it by
    IoU > iou_threshold, repeat until no box is left.

    boxes: (N, 4) xyxy (any units); scores: (N,). Returns the (K,) int64 indices of the kept boxes,
    highest score first (equal scores: lower index first, as torchvision.ops.nms).
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    remaining = scores.argsort(descending=True, stable=True)  # best first; stable: ties in index order
    keep = []
    while len(remaining) > 0:
        best, remaining = remaining[0], remaining[1:]
        keep.append(int(best))
        ious = box_iou(boxes[best][None], boxes[remaining])[0]  # the best box against every box left
        remaining = remaining[ious <= iou_threshold]  # drop the boxes that are the same object again
    return torch.tensor(keep, dtype=torch.long, device=boxes.device)


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each label: boxes of different labels never suppress each other.

    boxes: (N, 4) xyxy; scores: (N,); labels: (N,) integers. Returns (K,) int64 indices, highest score
    first (equal scores: lower index first). The result is `nms` run on each label's boxes on their own,
    merged by score; `_greedy_nms_all_groups` computes it for all labels together, for speed.
    """
    _check_nms_inputs(boxes, scores, iou_threshold, labels)
    kept = _greedy_nms_all_groups(boxes, scores, labels, iou_threshold)  # (N,) bool
    keep = kept.nonzero().flatten()  # in index order, so that the stable sort leaves ties in index order
    return keep[scores[keep].argsort(descending=True, stable=True)]


@torch.no_grad()
def postprocess(loc_pred: Tensor, conf_pred: Tensor, priors: Tensor, score_threshold: float = 0.01,
                iou_threshold: float = 0.45, top_k: int = 200, candidates_per_class: int = NMS_TOP_K,
                class_scores: str = "softmax") -> list[dict[str, Tensor]]:
    """Network outputs -> detections per image: SSD's inference (paper, section 3; original defaults).

    loc_pred: (B, P, 4) offsets; conf_pred: (B, P, C) logits; priors: (P, 4) cxcywh. The steps:
    1. decode the offsets into xyxy boxes, clipped to [0, 1];
    2. class scores: "softmax" (SSD) over the C columns, column 0 (background) dropped; "sigmoid" (focal
       loss models, column 0 unused) of columns 1..C-1, each class on its own;
    3. per class, the scores > score_threshold (as torchvision), at most the candidates_per_class best;
    4. greedy NMS within each class (iou_threshold); 5. the top_k best of each image over all classes.
    A prediction whose decoded box or score is NaN or infinite (a diverging network) is dropped before
    step 3: it never suppresses a clean box and never appears in the output.
    Returns B dicts {"boxes": (K, 4) xyxy in [0, 1], "scores": (K,), "labels": (K,) int64 in 1..C-1},
    highest score first; K = 0 when nothing passes the threshold.
    """
    _check_postprocess_inputs(loc_pred, conf_pred, priors, score_threshold, iou_threshold, top_k,
                              candidates_per_class, class_scores)
    boxes = decode(loc_pred, priors.to(loc_pred.dtype))  # 1. (B, P, 4) xyxy
    if class_scores == "softmax":  # 2. (B, P, C-1), column c-1 holding class c
        scores = conf_pred.softmax(dim=-1)[..., 1:]  # background is never a detection
    else:
        scores = conf_pred[..., 1:].sigmoid()
    # A NaN box has a NaN IoU with every box, which would drop its whole class: it is never a candidate.
    # (A NaN score passes no threshold; softmax and sigmoid never give an infinite one.)
    finite_boxes, boxes = torch.isfinite(boxes).all(dim=-1), boxes.clamp(0, 1)  # (B, P), (B, P, 4)
    # 3. The candidates of the whole batch, each (N,): image, default box, label, score.
    image, prior, labels, candidate_scores = _candidates(scores, finite_boxes, score_threshold, candidates_per_class)
    candidate_boxes = boxes[image, prior]  # (N, 4)
    # 4. Per-class NMS: batched_nms, one group per (image, class); the helper skips the candidates
    # too low to reach any image's top_k.
    groups = image * conf_pred.shape[2] + labels
    keep = _batched_nms_for_top_k(candidate_boxes, candidate_scores, groups, image, iou_threshold, top_k)
    # 5. keep is best first: each image's first top_k.
    kept_image = image[keep]
    best = [keep[kept_image == i][:top_k] for i in range(len(conf_pred))]
    return [{"boxes": candidate_boxes[k], "scores": candidate_scores[k], "labels": labels[k]} for k in best]


def _candidates(scores: Tensor, usable: Tensor, score_threshold: float,
                candidates_per_class: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Step 3 of `postprocess` for a whole batch: each (image, default box, class) scoring above
    score_threshold, at most the candidates_per_class best of each (image, class).

    scores: (B, P, C-1), column c-1 holding class c; usable: (B, P) bool, False for a default box whose
    prediction must not be a candidate. Returns four (N,) tensors: image index, default box index, label
    in 1..C-1, score. A trained network rarely gives a class more than candidates_per_class scores above
    the threshold: the cap is then skipped, which saves a top-k over the P default boxes of every class.
    """
    image, prior, column = (scores > score_threshold).nonzero(as_tuple=True)
    if bool((torch.bincount(image * scores.shape[2] + column) > candidates_per_class).any()):
        # Some (image, class) has more: the best candidates_per_class of each, then the threshold.
        passing = (scores > score_threshold) & usable[..., None]  # (B, P, C-1)
        top_k = min(candidates_per_class, scores.shape[1])
        top_scores, top_priors = torch.where(passing, scores, -1.0).topk(top_k, dim=1)  # (B, top_k, C-1)
        image, rank, column = (top_scores > score_threshold).nonzero(as_tuple=True)
        prior = top_priors[image, rank, column]
    chosen = usable[image, prior]
    return image[chosen], prior[chosen], column[chosen] + 1, scores[image, prior, column][chosen]


def _batched_nms_for_top_k(boxes: Tensor, scores: Tensor, groups: Tensor, images: Tensor,
                           iou_threshold: float, top_k: int) -> Tensor:
    """batched_nms(boxes, scores, groups, iou_threshold), but only as much of it as the top_k best
    survivors of each image need (no group spans two images; images: (N,) the image of each box).

    Returns (K,) indices, best first, whose first top_k in each image are those of the full batched_nms.
    Why this exists: whether NMS keeps a box depends only on the better boxes of its group, so NMS over
    each image's `limit` best candidates decides them exactly as NMS over all of them does. Once that
    leaves top_k survivors in every image, the lower candidates cannot enter any top_k and are never
    looked at; a trained network's top 200 come from its best few hundred candidates, out of thousands.
    Otherwise `limit` grows fourfold and NMS runs again.
    """
    order, _, rank = _sort_by_group(scores, images)
    rank_in_image = torch.empty_like(rank)
    rank_in_image[order] = rank  # (N,): 0 for the best candidate of its image
    images_size = torch.bincount(images)
    limit = 2 * top_k
    while True:
        chosen = (rank_in_image < limit).nonzero().flatten()  # in index order, so ties break as in batched_nms
        keep = chosen[batched_nms(boxes[chosen], scores[chosen], groups[chosen], iou_threshold)]
        kept_per_image = torch.bincount(images[keep], minlength=len(images_size))
        if bool(((kept_per_image >= top_k) | (images_size <= limit)).all()):
            return keep
        limit *= 4


def _sort_by_group(scores: Tensor, groups: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sort (N,) boxes by group, and within a group best score first (equal scores: lower index first).

    Returns `order`, the (N,) indices that sort, and for the sorted boxes two (N,) tensors: their
    group's row number in 0..G-1 and their rank within the group, 0 for its best box.
    """
    order = scores.argsort(descending=True, stable=True)
    order = order[groups[order].argsort(stable=True)]  # stable: keeps the score order within a group
    _, row, sizes = groups[order].unique_consecutive(return_inverse=True, return_counts=True)
    first_of_row = sizes.cumsum(0) - sizes
    return order, row, torch.arange(len(order), device=order.device) - first_of_row[row]


def _greedy_nms_all_groups(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS within every group, all groups at once: (N,) bool, True for the boxes kept.

    Why this exists: `nms` is a Python loop, one pass per kept box, and SSD's post-processing needs one
    NMS per (image, class): 32 x 20 = 640 per SSD300 batch, far slower one by one than torchvision's
    C++ kernel. Here each group's boxes fill a row of a (G, K) table, best first, and every pass does
    one step of `nms` in all rows at once: keep the row's first box left, drop the boxes of the row
    that overlap it by IoU > iou_threshold (box_iou's arithmetic, so the same decisions). There are as
    many passes as the busiest group keeps boxes; rows with no box left, and leading columns decided in
    every row, are cut away as the passes go. Tests check the result against `nms` and torchvision.
    """
    kept = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    if len(boxes) == 0:
        return kept
    order, row, rank = _sort_by_group(scores, groups)
    table = torch.full((int(row[-1]) + 1, int(rank.max()) + 1), -1, device=boxes.device)  # -1: no box
    table[row, rank] = order  # (G, K) box indices
    boxes = boxes.to(torch.promote_types(boxes.dtype, torch.float32))  # the dtype box_iou computes in
    x_min, y_min, x_max, y_max = boxes[table.clamp(min=0)].unbind(dim=2)  # (G, K) each
    areas = (x_max - x_min) * (y_max - y_min)
    remaining = table >= 0  # neither kept nor dropped yet
    while True:
        active = remaining.any(dim=1)
        if not bool(active.all()):  # rows with no box left are done: cut them away
            table, x_min, y_min, x_max, y_max, areas, remaining = (
                t[active] for t in (table, x_min, y_min, x_max, y_max, areas, remaining))
            if len(table) == 0:
                return kept
        best = remaining.int().argmax(dim=1, keepdim=True)  # (R, 1): argmax gives the FIRST box left
        start = int(best.min())  # the columns before are decided in every row: cut them away
        table, x_min, y_min, x_max, y_max, areas, remaining = (
            t[:, start:] for t in (table, x_min, y_min, x_max, y_max, areas, remaining))
        best -= start
        kept[table.gather(1, best)] = True
        width = (torch.min(x_max.gather(1, best), x_max) - torch.max(x_min.gather(1, best), x_min)).clamp(min=0)
        height = (torch.min(y_max.gather(1, best), y_max) - torch.max(y_min.gather(1, best), y_min)).clamp(min=0)
        intersection = width * height
        union = areas.gather(1, best) + areas - intersection
        remaining &= intersection / union.clamp(min=torch.finfo(union.dtype).tiny) <= iou_threshold
        remaining.scatter_(1, best, False)


def _check_fraction(value, name: str) -> None:
    # `not 0 <= value <= 1` also catches NaN: every comparison with NaN is false.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _check_nms_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float, labels: Tensor | None = None) -> None:
    # Detections may be clipped to a line at the image edge, and NMS works in any units: allow both.
    check_boxes(boxes, "boxes", normalised=False, allow_empty=True)
    for name, values in (("scores", scores), ("labels", labels)):
        if values is None:
            continue
        check_tensor(values, name)
        if values.shape != (len(boxes),):
            raise ValueError(f"{name} must have shape ({len(boxes)},), one per box, got {tuple(values.shape)}")
    if torch.isnan(scores).any():
        raise ValueError(f"scores must not be NaN, got NaN at index {int(torch.isnan(scores).nonzero()[0])}")
    _check_fraction(iou_threshold, "iou_threshold")


def _check_postprocess_inputs(loc_pred: Tensor, conf_pred: Tensor, priors: Tensor, score_threshold: float,
                              iou_threshold: float, top_k: int, candidates_per_class: int,
                              class_scores: str) -> None:
    for name, value in (("loc_pred", loc_pred), ("conf_pred", conf_pred), ("priors", priors)):
        check_tensor(value, name)
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}; convert it with .float()")
    if not loc_pred.device == conf_pred.device == priors.device:
        raise ValueError(f"loc_pred, conf_pred and priors must be on one device, got {loc_pred.device}, "
                         f"{conf_pred.device} and {priors.device}")
    if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"loc_pred must have shape (B, P, 4), got {tuple(loc_pred.shape)}")
    if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2] or conf_pred.shape[-1] < 2:
        raise ValueError(f"conf_pred must have shape (B, P, C) with (B, P) = {tuple(loc_pred.shape[:2])} "
                         f"and C >= 2 (background + a class), got {tuple(conf_pred.shape)}")
    if priors.shape != loc_pred.shape[1:]:
        raise ValueError(f"priors must have shape (P, 4) = {tuple(loc_pred.shape[1:])}, got {tuple(priors.shape)}")
    _check_fraction(score_threshold, "score_threshold")
    _check_fraction(iou_threshold, "iou_threshold")
    for name, value in (("top_k", top_k), ("candidates_per_class", candidates_per_class)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if class_scores not in ("softmax", "sigmoid"):
        raise ValueError(f"class_scores must be 'softmax' or 'sigmoid', got {class_scores!r}")
