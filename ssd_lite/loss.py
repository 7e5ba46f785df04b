"""The SSD training objective, the "MultiBox loss" (paper, section 2.2, "Training objective").

    L = (L_conf + alpha * L_loc) / N,   alpha = 1,   N = number of positive (matched) default boxes.

- L_loc, the localisation loss: smooth L1 between the predicted and the target offsets, summed over the
  positives only (a background box has no object to move towards).
- L_conf, the confidence loss: softmax cross-entropy, summed over the positives and over a few
  background boxes chosen by hard negative mining: per image, the negatives the network gets most wrong,
  at most `neg_pos_ratio` (3 in the paper) times as many as that image's positives.

Both are divided by the same N. This module returns them separately so that training can log them;
the loss to minimise is their sum.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ssd_lite.boxes import check_tensor


def _check_smooth_l1_inputs(input: Tensor, target: Tensor, beta: float) -> None:
    check_tensor(input, "input")
    check_tensor(target, "target")
    if input.shape != target.shape:
        raise ValueError(f"smooth_l1 needs input and target of the same shape, got {tuple(input.shape)} "
                         f"and {tuple(target.shape)}")
    if not 0 <= beta < math.inf:  # also rejects NaN, for which every comparison is False
        raise ValueError(f"beta must be a finite number >= 0, got {beta}")


def smooth_l1(input: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Elementwise smooth L1 (Huber-like) loss: same shape as `input` (no reduction).

    With d = |input - target|:  0.5 * d**2 / beta  if d < beta,  else  d - 0.5 * beta.
    Quadratic near zero (the gradient shrinks smoothly as the prediction gets close), linear far away
    (the gradient never exceeds 1, so one badly matched box cannot blow up training the way L2 can).
    beta = 0 gives plain L1. Equals torch.nn.functional.smooth_l1_loss(..., reduction="none").
    """
    _check_smooth_l1_inputs(input, target, beta)
    diff = (input - target).abs()
    if beta == 0:
        return diff  # the quadratic zone has shrunk to nothing: L1
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)


def _check_labels(labels: Tensor, batch_shape: tuple[int, ...]) -> None:
    """Labels: (B, P), any integer dtype (int64, int32, uint8...), >= 0; not bool, not float."""
    check_tensor(labels, "labels")
    if labels.dim() != 2 or tuple(labels.shape) != tuple(batch_shape):
        raise ValueError(f"labels must be a (B, P) tensor matching {tuple(batch_shape)}, "
                         f"got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (0 = background), got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0 (0 = background), got a minimum of {int(labels.min())}")


def _check_neg_pos_ratio(neg_pos_ratio: float) -> None:
    if not 0 <= neg_pos_ratio < math.inf:  # also rejects NaN, for which every comparison is False
        raise ValueError(f"neg_pos_ratio must be a finite number >= 0, got {neg_pos_ratio}")


def _check_mining_inputs(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float) -> None:
    check_tensor(conf_loss, "conf_loss")
    if conf_loss.dim() != 2:
        raise ValueError(f"conf_loss must be a (B, P) tensor, got {tuple(conf_loss.shape)}")
    _check_labels(labels, conf_loss.shape)
    _check_neg_pos_ratio(neg_pos_ratio)


def hard_negative_mining(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float = 3) -> Tensor:
    """Pick, per image, the background boxes with the highest confidence loss: (B, P) bool mask.

    conf_loss: (B, P) the cross-entropy of every default box; labels: (B, P), 0 = background.
    Image b gets min(neg_pos_ratio * num_positives_b, num_negatives_b) negatives (the paper's 3:1,
    counted per image). An image with no positives gets no negatives: its N contribution is 0, and
    the paper's ratio gives 0 * 3 = 0. (Some ports mine a fixed minimum there instead; we follow the
    ratio.) Positives are never in the mask. Ties in the loss go to the lower prior index.

    The choice is a ranking, not something to differentiate: it is computed without gradients.
    """
    _check_mining_inputs(conf_loss, labels, neg_pos_ratio)
    with torch.no_grad():
        positives = labels > 0
        num_positives = positives.sum(dim=1, keepdim=True)  # (B, 1)
        num_negatives = (~positives).sum(dim=1, keepdim=True)  # (B, 1)
        # .long() rounds down, so a fractional ratio (e.g. 2.5) never mines more than ratio * positives;
        # capping first keeps a huge ratio from overflowing int64.
        num_to_mine = (neg_pos_ratio * num_positives).clamp(max=num_negatives).long()
        # Rank the negatives by loss, hardest first; positives get -inf so they rank after every
        # negative and, since num_to_mine <= num_negatives, are never picked.
        negative_loss = conf_loss.detach().masked_fill(positives, float("-inf"))
        order = negative_loss.argsort(dim=1, descending=True, stable=True)  # prior indices, hardest first
        # Mark the first num_to_mine places of each image's order, then send the marks back to the
        # priors they belong to: mined[b, order[b, j]] = (j < num_to_mine[b]).
        first_places = torch.arange(labels.shape[1], device=labels.device)[None, :] < num_to_mine  # (B, P)
        return torch.zeros_like(first_places).scatter_(1, order, first_places)


def _check_loss_inputs(loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor, labels: Tensor,
                       neg_pos_ratio: float) -> None:
    for name, value in [("loc_pred", loc_pred), ("conf_pred", conf_pred), ("loc_targets", loc_targets),
                        ("labels", labels)]:
        check_tensor(value, name)
    if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"loc_pred must have shape (B, P, 4), got {tuple(loc_pred.shape)}")
    if loc_targets.shape != loc_pred.shape:
        raise ValueError(f"loc_targets must have the shape of loc_pred {tuple(loc_pred.shape)}, "
                         f"got {tuple(loc_targets.shape)}")
    if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2]:
        raise ValueError(f"conf_pred must have shape (B, P, C) with (B, P) = {tuple(loc_pred.shape[:2])}, "
                         f"got {tuple(conf_pred.shape)}")
    _check_labels(labels, loc_pred.shape[:2])
    num_classes = conf_pred.shape[-1]
    if labels.numel() and int(labels.max()) >= num_classes:
        raise ValueError(f"labels must be < the number of classes C = {num_classes} "
                         f"(conf_pred's last dimension), got a label {int(labels.max())}")
    _check_neg_pos_ratio(neg_pos_ratio)


def multibox_loss(loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor, labels: Tensor,
                  neg_pos_ratio: float = 3) -> tuple[Tensor, Tensor]:
    """The SSD loss of a batch: (loc_loss, conf_loss), two scalars, each already divided by N.

    loc_pred: (B, P, 4) predicted offsets; conf_pred: (B, P, C) class scores (logits, before softmax);
    loc_targets: (B, P, 4) and labels: (B, P) from `ssd_lite.matching.match`, one row per image.
    N is the number of positives in the whole batch. If N = 0 (no image has an object) both losses
    are 0 and their gradients are zeros, not NaN: we divide by max(N, 1), and with no positives
    hard negative mining picks no negatives, so both sums are empty. labels may be of any integer dtype.
    """
    _check_loss_inputs(loc_pred, conf_pred, loc_targets, labels, neg_pos_ratio)
    positives = labels > 0  # (B, P)
    num_positives = positives.sum()
    # Dividing by max(N, 1) keeps N = 0 finite; the sums are then 0 anyway.
    normaliser = num_positives.clamp(min=1).to(loc_pred.dtype)

    # L_loc: only positives have an object to regress towards.
    loc_loss = smooth_l1(loc_pred[positives], loc_targets[positives]).sum()

    # L_conf: cross-entropy of every box first (mining needs it to rank the negatives), then keep the
    # positives and the mined negatives. cross_entropy wants int64 class indices: hence .long().
    batch_size, num_priors, num_classes = conf_pred.shape
    conf_loss_per_prior = F.cross_entropy(conf_pred.reshape(-1, num_classes), labels.reshape(-1).long(),
                                          reduction="none").view(batch_size, num_priors)
    mined_negatives = hard_negative_mining(conf_loss_per_prior, labels, neg_pos_ratio)
    conf_loss = conf_loss_per_prior[positives | mined_negatives].sum()
    return loc_loss / normaliser, conf_loss / normaliser


# ---------------------------------------------------------------------------------------------------
# Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection", the RetinaNet paper): another
# answer to the flood of easy background boxes. Instead of keeping only the hardest negatives (mining),
# keep every box and scale each one's loss down by how well it is already classified.

def _check_focal_inputs(inputs: Tensor, targets: Tensor, alpha: float, gamma: float, reduction: str) -> None:
    if not isinstance(inputs, Tensor) or not isinstance(targets, Tensor):
        raise TypeError(f"sigmoid_focal_loss needs two tensors, got {type(inputs).__name__} and "
                        f"{type(targets).__name__}")
    if not inputs.is_floating_point() or not targets.is_floating_point():
        raise TypeError(f"inputs (logits) and targets (0/1 per entry) must be floating-point tensors, got "
                        f"{inputs.dtype} and {targets.dtype}: convert the targets with .float()")
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs and targets must have the same shape, got {tuple(inputs.shape)} and "
                         f"{tuple(targets.shape)}")
    if not (math.isfinite(alpha) and alpha <= 1):
        raise ValueError(f"alpha must be in [0, 1] (the weight of the positives), or negative to turn the "
                         f"weighting off, got {alpha}")
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be a finite number >= 0 (0 gives the plain cross-entropy), got {gamma}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def sigmoid_focal_loss(inputs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0,
                       reduction: str = "none") -> Tensor:
    """The focal loss of independent yes/no scores: FL(p_t) = -alpha_t * (1 - p_t)^gamma * log(p_t).

    inputs: logits of any shape; targets: same shape, 1 for "yes", 0 for "no" (values in between
    interpolate). p = sigmoid(inputs); p_t = p where the target is 1 and 1 - p where it is 0, the
    probability given to the right answer. alpha_t = alpha for targets 1 and 1 - alpha for targets 0;
    a negative alpha (conventionally -1) turns this weighting off. gamma = 0 gives the alpha-weighted
    binary cross-entropy. reduction: "none" (same shape as inputs), "mean" or "sum" (a scalar).
    Same arguments and values as torchvision.ops.sigmoid_focal_loss; unlike it, the gradient stays finite
    for gamma < 1 on saturated logits.
    """
    _check_focal_inputs(inputs, targets, alpha, gamma, reduction)
    # -log(p_t) from the logits: log(sigmoid(x)) would round to log(0) = -inf once |x| is large.
    cross_entropy = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    # 1 - p_t, the probability given to the wrong answer, with sigmoid(-x) for 1 - sigmoid(x): the same
    # number, but it does not round to 0 for a confident box (x > 17 in float32).
    prob_wrong = targets * torch.sigmoid(-inputs) + (1 - targets) * torch.sigmoid(inputs)
    # The modulating factor (1 - p_t)^gamma: near 1 for a misclassified box, near 0 for an easy one. The
    # clamp changes no value that matters: for gamma < 1 the slope of u^gamma is infinite at u = 0, and
    # a prob_wrong that underflowed to 0 would turn the gradient into NaN.
    loss = (prob_wrong.clamp(min=torch.finfo(prob_wrong.dtype).tiny) ** gamma) * cross_entropy
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _check_focal_multibox_inputs(loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor,
                                 labels: Tensor) -> None:
    for name, value in (("loc_pred", loc_pred), ("conf_pred", conf_pred), ("loc_targets", loc_targets),
                        ("labels", labels)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if loc_pred.dim() != 3 or loc_pred.shape[-1] != 4:
        raise ValueError(f"loc_pred must have shape (B, P, 4), got {tuple(loc_pred.shape)}")
    if loc_targets.shape != loc_pred.shape:
        raise ValueError(f"loc_targets must have the shape of loc_pred {tuple(loc_pred.shape)}, "
                         f"got {tuple(loc_targets.shape)}")
    if conf_pred.dim() != 3 or conf_pred.shape[:2] != loc_pred.shape[:2] or conf_pred.shape[-1] < 2:
        raise ValueError(f"conf_pred must have shape (B, P, C) with (B, P) = {tuple(loc_pred.shape[:2])} "
                         f"and C >= 2 (background + at least one class), got {tuple(conf_pred.shape)}")
    if labels.shape != loc_pred.shape[:2]:
        raise ValueError(f"labels must have shape (B, P) = {tuple(loc_pred.shape[:2])}, "
                         f"got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (0 = background), got dtype {labels.dtype}")
    num_classes = conf_pred.shape[-1]
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1} (0 = background, C = {num_classes} is "
                         f"conf_pred's last dimension), got values from {int(labels.min())} "
                         f"to {int(labels.max())}")


def focal_multibox_loss(loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor, labels: Tensor,
                        alpha: float = 0.25, gamma: float = 2.0) -> tuple[Tensor, Tensor]:
    """SSD's loss with RetinaNet's focal loss for the classes: (loc_loss, conf_loss), each divided by N.

    Same inputs as multibox_loss: loc_pred (B, P, 4); conf_pred (B, P, C) logits; loc_targets (B, P, 4)
    and labels (B, P) from `ssd_lite.matching.match`. Each class 1..C-1 gets its own sigmoid score:
    column c of conf_pred says "this box holds a class c object"; column 0 is unused, background is
    "every class off". conf_loss is sigmoid_focal_loss summed over every default box (no mining: the
    focal factor does the down-weighting); loc_loss is the smooth L1 of the positives, as in SSD. N is
    the number of positives in the batch. With N = 0 we divide by 1: loc_loss is 0, and conf_loss is
    the (finite) loss of the background boxes, which still teaches the network to say "nothing here".
    """
    _check_focal_multibox_inputs(loc_pred, conf_pred, loc_targets, labels)
    positives = labels > 0  # (B, P)
    normaliser = positives.sum().clamp(min=1).to(loc_pred.dtype)

    loc_loss = smooth_l1(loc_pred[positives], loc_targets[positives]).sum()

    # One-hot targets without the background column: label c lights up column c, label 0 none.
    num_classes = conf_pred.shape[-1]
    class_targets = F.one_hot(labels.long(), num_classes)[..., 1:].to(conf_pred.dtype)  # (B, P, C-1)
    conf_loss = sigmoid_focal_loss(conf_pred[..., 1:], class_targets, alpha, gamma, reduction="sum")
    return loc_loss / normaliser, conf_loss / normaliser
