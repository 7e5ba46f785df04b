"""Matching: which default box should predict which object (paper, section 2.2, "Matching strategy").

Training needs a target for every default box: an object's offsets and class, or "background". SSD
matches ground truth to the fixed default boxes, not to the network's predictions, so the targets do
not move while the network learns.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssd_lite.boxes import (VARIANCES, box_iou, check_boxes, check_priors, check_tensor, check_variances,
                            cxcywh_to_xyxy, encode)


def check_labels(gt_labels: Tensor, num_boxes: int) -> None:
    """Labels are a (G,) tensor of integers >= 1, of any integer dtype: 0 is reserved for background."""
    check_tensor(gt_labels, "gt_labels")
    if gt_labels.dim() != 1 or len(gt_labels) != num_boxes:
        raise ValueError(f"gt_labels must be a (G,) tensor with one label per box ({num_boxes}), "
                         f"got {tuple(gt_labels.shape)}")
    if gt_labels.is_floating_point() or gt_labels.is_complex() or gt_labels.dtype == torch.bool:
        raise ValueError(f"gt_labels must be an integer tensor (class indices), got dtype {gt_labels.dtype}")
    if num_boxes and int(gt_labels.min()) < 1:
        raise ValueError(f"gt_labels must be >= 1 (0 means background), got {gt_labels.tolist()}")


def _check_match_inputs(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, iou_threshold: float,
                        variances: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Validate match's arguments; return gt_boxes in the priors' dtype and gt_labels as int64, both on
    the priors' device (boxes read from numpy are float64; labels may be int32)."""
    check_boxes(gt_boxes, "gt_boxes")
    check_labels(gt_labels, len(gt_boxes))
    check_tensor(priors, "priors")
    if not priors.is_floating_point():
        raise TypeError(f"priors must be a floating-point tensor (normalised cxcywh), got {priors.dtype}")
    check_priors(priors, "priors")
    if not 0 <= iou_threshold <= 1:  # also rejects NaN, for which every comparison is False
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    check_variances(variances)
    return gt_boxes.to(priors.device, priors.dtype), gt_labels.to(priors.device, torch.long)


def match(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, iou_threshold: float = 0.5,
          variances: tuple[float, float] = VARIANCES) -> tuple[Tensor, Tensor]:
    """Assign each default box an object to predict, or background.

    gt_boxes: (G, 4) xyxy in [0, 1]; gt_labels: (G,) in 1..C-1; priors: (P, 4) cxcywh.
    Returns loc_targets (P, 4), the encoded offsets of each prior's object (zeros for background), in
    the priors' dtype, and labels (P,) int64, 0 meaning background.

    Two steps: (1) each object claims the prior it overlaps most, whatever the IoU, so no object goes
    unmatched; (2) every other prior whose best IoU with some object is >= iou_threshold becomes a
    positive for that object. G = 0 is valid: every prior is background.
    """
    gt_boxes, gt_labels = _check_match_inputs(gt_boxes, gt_labels, priors, iou_threshold, variances)
    num_priors = priors.shape[0]
    if len(gt_boxes) == 0:
        return (torch.zeros(num_priors, 4, device=priors.device, dtype=priors.dtype),
                torch.zeros(num_priors, dtype=torch.long, device=priors.device))

    ious = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
    best_iou_per_prior, best_object_per_prior = ious.max(dim=0)  # (P,), (P,)

    # Force each object's best prior to match it, even below the threshold: otherwise a small or oddly
    # shaped object could get no positive at all. A plain loop keeps ties well defined: if two objects
    # share a best prior, the later object gets it.
    best_prior_per_object = ious.argmax(dim=1)  # (G,)
    for obj, prior in enumerate(best_prior_per_object.tolist()):
        best_object_per_prior[prior] = obj
        best_iou_per_prior[prior] = 2.0  # above any threshold (iou_threshold <= 1)

    labels = gt_labels[best_object_per_prior]
    labels[best_iou_per_prior < iou_threshold] = 0
    # Only positives get offsets: background priors have no object to move towards.
    positives = labels > 0
    loc_targets = torch.zeros(num_priors, 4, device=priors.device, dtype=priors.dtype)
    loc_targets[positives] = encode(gt_boxes[best_object_per_prior[positives]], priors[positives], variances)
    return loc_targets, labels
