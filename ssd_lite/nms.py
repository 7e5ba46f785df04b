"""From 8732 predictions to a few detections: non-maximum suppression (paper, section 3, "Inference").

SSD predicts a box and class scores at every default box, so one object is found by many neighbouring
default boxes at once. Greedy non-maximum suppression keeps the best-scoring box, drops every box that
overlaps it by more than an IoU threshold (0.45 in the paper), and repeats with the best box left.
It is done per class: a dog box should not suppress the person box it overlaps.

`nms` and `batched_nms` give the same kept indices, in the same order, as torchvision.ops.nms and
torchvision.ops.batched_nms. `detect` turns a batch of network outputs into detections.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssd_lite.boxes import box_iou, check_boxes, decode

# The original Caffe SSD (nms_param { top_k: 400 }) keeps only the 400 best-scoring boxes of each class
# before NMS: low-scoring boxes beyond them almost never survive into the final top 200, and capping
# bounds the work. torchvision's SSD does the same (topk_candidates=400).
NMS_TOP_K = 400


def _check_nms_inputs(boxes: Tensor, scores: Tensor, iou_threshold: float) -> None:
    # Detections may be clipped to a line at the image edge, and NMS works in any units: allow both.
    check_boxes(boxes, "boxes", normalised=False, allow_empty=True)
    if not isinstance(scores, Tensor) or scores.shape != (len(boxes),):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must have shape ({len(boxes)},), one per box, got {shape}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    boxes: (N, 4) xyxy (any units); scores: (N,); a box is dropped if its IoU with a kept, higher-scoring
    box is > iou_threshold. Returns the (K,) int64 indices of the kept boxes, highest score first.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    # Highest score first. A stable sort puts equal scores in index order, as torchvision does.
    order = scores.argsort(descending=True, stable=True)
    boxes = boxes[order]
    # Every pair's IoU once, up front; the loop below then only looks rows up. (`detect` caps the
    # candidates per class, and even a few thousand boxes make an affordable N x N table.)
    compatible = box_iou(boxes, boxes) <= iou_threshold  # (N, N): may both survive; in score order
    compatible.fill_diagonal_(False)  # so that a kept box also leaves the list of remaining ones
    compatible = compatible.to(torch.uint8)  # uint8, not bool: max() below needs numbers
    remaining = torch.ones(len(boxes), dtype=torch.uint8, device=boxes.device)
    keep = []
    # One pass per KEPT box, not per candidate: the best box left is kept, and it removes itself and
    # every box it overlaps by more than the threshold.
    while len(keep) < len(boxes):
        any_left, best = remaining.max(dim=0)  # max returns the FIRST maximum: the best-scoring box left
        if not any_left:
            break
        keep.append(int(best))
        remaining &= compatible[best]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
    """Non-maximum suppression within each label: boxes of different labels never suppress each other.

    boxes: (N, 4) xyxy; scores: (N,); labels: (N,) integers. Returns (K,) int64 indices, highest score first.
    """
    _check_nms_inputs(boxes, scores, iou_threshold)
    if not isinstance(labels, Tensor) or labels.shape != scores.shape:
        raise ValueError(f"labels must have shape ({len(boxes)},), one per box")
    keep = [torch.zeros(0, dtype=torch.long, device=boxes.device)]
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        keep.append(members[nms(boxes[members], scores[members], iou_threshold)])
    keep = torch.cat(keep)
    # All labels together, best first (stable: equal scores keep their order).
    return keep[scores[keep].argsort(descending=True, stable=True)]


@torch.no_grad()
def detect(loc_pred: Tensor, conf_pred: Tensor, priors: Tensor, score_threshold: float = 0.01,
           iou_threshold: float = 0.45, top_k: int = 200,
           candidates_per_class: int = NMS_TOP_K) -> list[dict[str, Tensor]]:
    """Network outputs -> detections, per image (paper, section 3; defaults of the original SSD).

    loc_pred: (B, P, 4) offsets; conf_pred: (B, P, C) logits, class 0 = background; priors: (P, 4) cxcywh.
    Steps: decode the offsets into boxes clipped to [0, 1]; softmax; for each class c >= 1, keep the
    `candidates_per_class` best scores above `score_threshold` (> , as torchvision); greedy NMS within
    each class; keep the `top_k` best detections of the image over all classes.
    Returns B dicts {"boxes": (K, 4) xyxy in [0, 1], "scores": (K,), "labels": (K,) int64 in 1..C-1},
    highest score first; K = 0 when nothing passes the threshold.
    """
    if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"loc_pred must have shape (B, P, 4), got {tuple(loc_pred.shape)}")
    if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2] or conf_pred.shape[-1] < 2:
        raise ValueError(f"conf_pred must have shape (B, P, C) with (B, P) = {tuple(loc_pred.shape[:2])} "
                         f"and C >= 2 (background + a class), got {tuple(conf_pred.shape)}")
    if priors.shape != loc_pred.shape[1:]:
        raise ValueError(f"priors must have shape (P, 4) = {tuple(loc_pred.shape[1:])}, got {tuple(priors.shape)}")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if top_k < 1 or candidates_per_class < 1:
        raise ValueError(f"top_k and candidates_per_class must be >= 1, got {top_k}, {candidates_per_class}")
    batch_size, num_priors, num_classes = conf_pred.shape
    device = loc_pred.device

    boxes = decode(loc_pred, priors.to(loc_pred.dtype)).clamp(0, 1)  # (B, P, 4) xyxy
    scores = conf_pred.softmax(dim=-1)[..., 1:]  # (B, P, C-1): background is never a detection

    # 1. Candidates: for each image and class (a "group"), its best `candidates_per_class` boxes above
    # the score threshold, best first. Groups are padded to the longest one, K; `remaining` marks the
    # real candidates not yet decided. (topk then threshold keeps the same boxes as threshold then topk.)
    k = min(candidates_per_class, num_priors)
    group_scores, group_priors = scores.transpose(1, 2).topk(k, dim=2)  # (B, C-1, k) each, sorted
    remaining = group_scores > score_threshold
    width = int(remaining.sum(dim=2).max()) if remaining.numel() else 0  # K
    group_scores, group_priors, remaining = (group_scores[..., :width], group_priors[..., :width],
                                             remaining[..., :width])
    # One always-empty column at the end, index K: where a group with no candidates left points.
    remaining = torch.nn.functional.pad(remaining, (0, 1), value=False)  # (B, C-1, K + 1)
    kept = torch.zeros_like(remaining)
    group_boxes = boxes.gather(1, group_priors.reshape(batch_size, -1, 1).expand(-1, -1, 4))
    group_boxes = torch.nn.functional.pad(group_boxes.view(batch_size, num_classes - 1, width, 4),
                                          (0, 0, 0, 1))  # (B, C-1, K + 1, 4)
    x_min, y_min, x_max, y_max = group_boxes.unbind(dim=3)  # (B, C-1, K + 1) each
    areas = (x_max - x_min) * (y_max - y_min)
    padded_scores = torch.nn.functional.pad(group_scores, (0, 1), value=-1.0)  # -1: below any score

    # 2. Greedy NMS in every group at once. A group's candidates are in score order, so its first
    # remaining one is the best left: keep it and drop the group's boxes that overlap it by more than
    # iou_threshold. One round per kept box of the longest-lived group, not one per candidate box.
    # The result is the same as per-class NMS run group by group (tests check it against torchvision).
    start = 0  # columns before `start` are decided in every group: skip them
    while True:
        groups_left = remaining.any(dim=2, keepdim=True)  # (B, C-1, 1)
        if not bool(groups_left.any()):
            break
        best = torch.where(groups_left, remaining.int().argmax(dim=2, keepdim=True), width)  # (B, C-1, 1)
        # An image is settled once top_k of its kept boxes outscore every box still undecided in it:
        # nothing kept later could enter its top_k, so stop working on it.
        best_left_score = padded_scores.gather(2, best).amax(dim=(1, 2))  # (B,)
        settled = (kept & (padded_scores > best_left_score[:, None, None])).sum(dim=(1, 2)) >= top_k
        if bool(settled.any()):
            remaining &= ~settled[:, None, None]
            best = best.masked_fill(settled[:, None, None], width)
        start = int(best.min())
        kept.scatter_(2, best, True)  # (the padding column K may be marked: it is dropped below)
        # IoU of each group's best box with its still-undecided columns: the arithmetic of box_iou.
        cols = slice(start, width)
        overlap_w = (torch.min(x_max.gather(2, best), x_max[..., cols])
                     - torch.max(x_min.gather(2, best), x_min[..., cols])).clamp_(min=0)
        overlap_h = (torch.min(y_max.gather(2, best), y_max[..., cols])
                     - torch.max(y_min.gather(2, best), y_min[..., cols])).clamp_(min=0)
        intersection = overlap_w * overlap_h
        union = areas.gather(2, best) + areas[..., cols] - intersection
        ious = intersection / union.clamp_(min=torch.finfo(union.dtype).tiny)  # (B, C-1, K - start)
        remaining[..., cols] &= ious <= iou_threshold
        remaining.scatter_(2, best, False)

    # 3. The top_k kept boxes of each image over all classes, best first.
    kept = kept[..., :width]
    group_labels = torch.arange(1, num_classes, device=device)[None, :, None].expand_as(group_priors)
    kept_scores = group_scores.masked_fill(~kept, -1.0).reshape(batch_size, -1)
    top_scores, order = kept_scores.sort(dim=1, descending=True, stable=True)
    num_kept = kept.reshape(batch_size, -1).sum(dim=1).clamp(max=top_k).tolist()
    detections = []
    for i, count in enumerate(num_kept):
        chosen = order[i, :count]
        detections.append({"boxes": group_boxes[i, :, :width].reshape(-1, 4)[chosen],
                           "scores": top_scores[i, :count],
                           "labels": group_labels[i].reshape(-1)[chosen]})
    return detections
