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

import torch
import torch.nn.functional as F
from torch import Tensor


def smooth_l1(input: Tensor, target: Tensor, beta: float = 1.0) -> Tensor:
    """Elementwise smooth L1 (Huber-like) loss: same shape as `input` (no reduction).

    With d = |input - target|:  0.5 * d**2 / beta  if d < beta,  else  d - 0.5 * beta.
    Quadratic near zero (the gradient shrinks smoothly as the prediction gets close), linear far away
    (the gradient never exceeds 1, so one badly matched box cannot blow up training the way L2 can).
    beta = 0 gives plain L1. Equals torch.nn.functional.smooth_l1_loss(..., reduction="none").
    """
    if not isinstance(input, Tensor) or not isinstance(target, Tensor):
        raise TypeError("smooth_l1 needs two tensors")
    if input.shape != target.shape:
        raise ValueError(f"smooth_l1 needs input and target of the same shape, got {tuple(input.shape)} "
                         f"and {tuple(target.shape)}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    diff = (input - target).abs()
    if beta == 0:
        return diff  # the quadratic zone has shrunk to nothing: L1
    return torch.where(diff < beta, 0.5 * diff ** 2 / beta, diff - 0.5 * beta)


def _check_labels(labels: Tensor, batch_shape: tuple[int, ...]) -> None:
    if not isinstance(labels, Tensor) or labels.dim() != 2 or tuple(labels.shape) != tuple(batch_shape):
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a (B, P) tensor matching {tuple(batch_shape)}, got {shape}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor (0 = background), got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0 (0 = background), got a minimum of {int(labels.min())}")


def hard_negative_mining(conf_loss: Tensor, labels: Tensor, neg_pos_ratio: float = 3) -> Tensor:
    """Pick, per image, the background boxes with the highest confidence loss: (B, P) bool mask.

    conf_loss: (B, P) the cross-entropy of every default box; labels: (B, P), 0 = background.
    Image b gets min(neg_pos_ratio * num_positives_b, num_negatives_b) negatives (the paper's 3:1,
    counted per image). An image with no positives gets no negatives: its N contribution is 0, and
    the paper's ratio gives 0 * 3 = 0. (Some ports mine a fixed minimum there instead; we follow the
    ratio.) Positives are never in the mask. Ties in the loss go to the lower prior index.

    The choice is a ranking, not something to differentiate: it is computed without gradients.
    """
    if not isinstance(conf_loss, Tensor) or conf_loss.dim() != 2:
        shape = tuple(conf_loss.shape) if isinstance(conf_loss, Tensor) else type(conf_loss).__name__
        raise ValueError(f"conf_loss must be a (B, P) tensor, got {shape}")
    _check_labels(labels, conf_loss.shape)
    if neg_pos_ratio < 0:
        raise ValueError(f"neg_pos_ratio must be >= 0, got {neg_pos_ratio}")
    with torch.no_grad():
        positives = labels > 0
        num_positives = positives.sum(dim=1, keepdim=True)  # (B, 1)
        num_negatives = (~positives).sum(dim=1, keepdim=True)  # (B, 1)
        # .long() rounds down, so a fractional ratio (e.g. 2.5) never mines more than ratio * positives.
        num_to_mine = (neg_pos_ratio * num_positives).long().clamp(max=num_negatives)
        # Rank the negatives by loss, hardest first; positives get -inf so they rank after every
        # negative and, since num_to_mine <= num_negatives, are never picked.
        negative_loss = conf_loss.detach().masked_fill(positives, float("-inf"))
        order = negative_loss.argsort(dim=1, descending=True, stable=True)  # prior indices, hardest first
        # Mark the first num_to_mine places of each image's order, then send the marks back to the
        # priors they belong to: mined[b, order[b, j]] = (j < num_to_mine[b]).
        first_places = torch.arange(labels.shape[1], device=labels.device)[None, :] < num_to_mine  # (B, P)
        return torch.zeros_like(first_places).scatter_(1, order, first_places)


def multibox_loss(loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor, labels: Tensor,
                  neg_pos_ratio: float = 3) -> tuple[Tensor, Tensor]:
    """The SSD loss of a batch: (loc_loss, conf_loss), two scalars, each already divided by N.

    loc_pred: (B, P, 4) predicted offsets; conf_pred: (B, P, C) class scores (logits, before softmax);
    loc_targets: (B, P, 4) and labels: (B, P) from `ssd_lite.matching.match`, one row per image.
    N is the number of positives in the whole batch. If N = 0 (no image has an object) both losses
    are 0 and their gradients are zeros, not NaN: we divide by max(N, 1), and with no positives
    hard negative mining picks no negatives, so both sums are empty.
    """
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

    positives = labels > 0  # (B, P)
    num_positives = positives.sum()
    # Dividing by max(N, 1) keeps N = 0 finite; the sums are then 0 anyway.
    normaliser = num_positives.clamp(min=1).to(loc_pred.dtype)

    # L_loc: only positives have an object to regress towards.
    loc_loss = smooth_l1(loc_pred[positives], loc_targets[positives]).sum()

    # L_conf: cross-entropy of every box first (mining needs it to rank the negatives), then keep the
    # positives and the mined negatives.
    batch_size, num_priors = labels.shape
    conf_loss_per_prior = F.cross_entropy(conf_pred.reshape(-1, num_classes), labels.reshape(-1),
                                          reduction="none").view(batch_size, num_priors)
    mined_negatives = hard_negative_mining(conf_loss_per_prior, labels, neg_pos_ratio)
    conf_loss = conf_loss_per_prior[positives | mined_negatives].sum()
    return loc_loss / normaliser, conf_loss / normaliser
