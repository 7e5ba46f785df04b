"""Matching: which default box should predict which object (paper, section 2.2, "Matching strategy").

Training needs a target for every default box: an object's offsets and class, or "background". SSD
matches ground truth to the fixed default boxes, not to the network's predictions, so the targets do
not move while the network learns.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ssd_lite.boxes import box_iou, check_boxes, cxcywh_to_xyxy, encode, VARIANCES


def check_labels(gt_labels: Tensor, num_boxes: int) -> None:
    """Labels are (G,) integers >= 1: 0 is reserved for background."""
    if not isinstance(gt_labels, Tensor) or gt_labels.dim() != 1 or len(gt_labels) != num_boxes:
        shape = tuple(gt_labels.shape) if isinstance(gt_labels, Tensor) else type(gt_labels).__name__
        raise ValueError(f"gt_labels must be a (G,) tensor with one label per box ({num_boxes}), got {shape}")
    if gt_labels.is_floating_point():
        raise ValueError("gt_labels must be an integer tensor")
    if num_boxes and int(gt_labels.min()) < 1:
        raise ValueError(f"gt_labels must be >= 1 (0 means background), got {gt_labels.tolist()}")


def match(gt_boxes: Tensor, gt_labels: Tensor, priors: Tensor, iou_threshold: float = 0.5,
          variances: tuple[float, float] = VARIANCES) -> tuple[Tensor, Tensor]:
    """Assign each default box an object to predict, or background.

    gt_boxes: (G, 4) xyxy in [0, 1]; gt_labels: (G,) in 1..C-1; priors: (P, 4) cxcywh.
    Returns loc_targets (P, 4), the encoded offsets of each prior's object (zeros for background), and
    labels (P,), 0 meaning background.

    Two steps: (1) each object claims the prior it overlaps most, whatever the IoU, so no object goes
    unmatched; (2) every other prior whose best IoU with some object is >= iou_threshold becomes a
    positive for that object. G = 0 is valid: every prior is background.
    """
    check_boxes(gt_boxes, "gt_boxes")
    check_labels(gt_labels, len(gt_boxes))
    num_priors = priors.shape[0]
    if len(gt_boxes) == 0:
        return (torch.zeros(num_priors, 4, device=priors.device),
                torch.zeros(num_priors, dtype=torch.long, device=priors.device))

    ious = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
    best_iou_per_prior, best_object_per_prior = ious.max(dim=0)  # (P,), (P,)

    # Force each object's best prior to match it, even below the threshold: otherwise a small or oddly
    # shaped object could get no positive at all. A plain loop keeps ties well defined: if two objects
    # share a best prior, the later object gets it.
    best_prior_per_object = ious.argmax(dim=1)  # (G,)
    for obj, prior in enumerate(best_prior_per_object.tolist()):
        best_object_per_prior[prior] = obj
        best_iou_per_prior[prior] = 2.0  # above any threshold

    labels = gt_labels.to(priors.device)[best_object_per_prior].clone()
    labels[best_iou_per_prior < iou_threshold] = 0
    # Only positives get offsets: background priors have no object to move towards.
    positives = labels > 0
    loc_targets = torch.zeros(num_priors, 4, device=priors.device, dtype=priors.dtype)
    loc_targets[positives] = encode(gt_boxes[best_object_per_prior[positives]], priors[positives], variances)
    return loc_targets, labels
