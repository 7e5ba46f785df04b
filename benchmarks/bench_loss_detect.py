"""Time ssd_lite's loss and post-processing beside torchvision's SSD on the same tensors.

    python benchmarks/bench_loss_detect.py [--device cpu|cuda] [--repeats 9] [--batch-size 32] [--threads N]

What is timed (medians over --repeats runs, ours and torchvision's alternating, after one warm-up run):
- loss, forward + backward: ssd_lite.loss.multibox_loss versus torchvision.models.detection.SSD.compute_loss,
  called on a randomly initialised ssd300_vgg16(weights=None, weights_backbone=None). Both get the same
  predictions and the same positives. Ours takes targets already encoded by ssd_lite.matching.match
  (as training passes them); torchvision's takes the matched ground-truth indices and encodes the
  positives itself, inside the timed call (a small extra cost on its side, noted in the table).
- postprocess: ssd_lite.nms.postprocess versus SSD.postprocess_detections (decode, softmax, per-class
  threshold 0.01, top 400 per class, per-class NMS at IoU 0.45, top 200 per image), same settings on both
  sides.
  torchvision works in pixels: it gets our priors as pixel xyxy anchors of a 300x300 image.

Inputs: a batch of SSD300-sized predictions (8732 default boxes, 21 classes). Each image has 1 to 6
random ground-truth boxes, matched to the default boxes with ssd_lite.matching.match (IoU 0.5). The
predictions look "slightly trained": offsets = targets + N(0, 0.5^2) noise; logits = N(0, 1) noise plus
--boost (8 by default) on each default box's matched class (background for the negatives). With boost 8
about 1 to 2 thousand (class, box) pairs per image pass the 0.01 threshold, which the script prints;
lower boosts give more candidates (a less trained network), higher ones fewer.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

from ssd_lite.boxes import cxcywh_to_xyxy, encode
from ssd_lite.loss import multibox_loss
from ssd_lite.nms import postprocess
from ssd_lite.priors import ssd300_default_boxes

IMAGE_SIZE = 300
NUM_CLASSES = 21


def make_inputs(batch_size: int, boost: float, seed: int, device: str, matcher):
    """Random ground truth, its matching, and predictions near the targets; see the module docstring."""
    g = torch.Generator().manual_seed(seed)
    priors = ssd300_default_boxes()
    anchors = cxcywh_to_xyxy(priors) * IMAGE_SIZE  # torchvision's anchors: pixel xyxy
    targets, matched_idxs, loc_targets, labels = [], [], [], []
    for _ in range(batch_size):
        num_objects = int(torch.randint(1, 7, (1,), generator=g))
        size = 0.1 + 0.5 * torch.rand(num_objects, 2, generator=g)
        corner = torch.rand(num_objects, 2, generator=g) * (1 - size)
        boxes = torch.cat([corner, corner + size], dim=1)
        object_labels = torch.randint(1, NUM_CLASSES, (num_objects,), generator=g)
        # torchvision's SSDMatcher (IoU >= 0.5, plus each object's best default box) picks the positives;
        # both losses get exactly these, ours encoded with ssd_lite.boxes.encode.
        idx = matcher(torchvision.ops.box_iou(boxes * IMAGE_SIZE, anchors))
        positive = idx >= 0
        loc_target = torch.zeros(len(priors), 4)
        loc_target[positive] = encode(boxes[idx[positive]], priors[positive])
        label = torch.zeros(len(priors), dtype=torch.long)
        label[positive] = object_labels[idx[positive]]
        targets.append({"boxes": (boxes * IMAGE_SIZE).to(device), "labels": object_labels.to(device)})
        matched_idxs.append(idx.to(device))
        loc_targets.append(loc_target)
        labels.append(label)
    loc_targets, labels = torch.stack(loc_targets), torch.stack(labels)
    loc_pred = loc_targets + 0.5 * torch.randn(loc_targets.shape, generator=g)
    conf_pred = torch.randn(batch_size, len(priors), NUM_CLASSES, generator=g)
    conf_pred.scatter_add_(2, labels[..., None], torch.full((batch_size, len(priors), 1), boost))
    to = dict(device=device)
    return (priors.to(**to), [anchors.to(**to)] * batch_size, targets, matched_idxs, loc_pred.to(**to),
            conf_pred.to(**to), loc_targets.to(**to), labels.to(**to))


def median_times(fn_a, fn_b, repeats: int, device: str) -> tuple[float, float]:
    """Median seconds of fn_a and of fn_b, run alternately (a, b, a, b, ...) after one warm-up each,
    so that a busy machine slows both alike."""
    def timed(fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start
    fn_a(), fn_b()  # warm-up
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(fn_a))
        times_b.append(timed(fn_b))
    return statistics.median(times_a), statistics.median(times_b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--boost", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device

    model = torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None,
                                                       num_classes=NUM_CLASSES).to(device)
    (priors, anchors, targets, matched_idxs, loc_pred, conf_pred, loc_targets,
     labels) = make_inputs(args.batch_size, args.boost, args.seed, device, model.proposal_matcher)
    scores = conf_pred.softmax(-1)[..., 1:]
    print(f"device {device}, torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"batch {args.batch_size} x {loc_pred.shape[1]} default boxes x {NUM_CLASSES} classes; "
          f"positives per image {(labels > 0).sum(1).float().mean():.1f}; (class, box) pairs above 0.01 per "
          f"image {(scores > 0.01).sum((1, 2)).float().mean():.0f}, after the 400-per-class cap "
          f"{(scores > 0.01).sum(1).clamp(max=400).sum(1).float().mean():.0f}")

    # --- loss: forward + backward on both sides, same predictions and positives.
    loc_leaf = loc_pred.clone().requires_grad_()
    conf_leaf = conf_pred.clone().requires_grad_()

    def ours_loss():
        loc_loss, conf_loss = multibox_loss(loc_leaf, conf_leaf, loc_targets, labels)
        (loc_loss + conf_loss).backward()
        return loc_loss, conf_loss

    def torchvision_loss():
        losses = model.compute_loss(targets, {"bbox_regression": loc_leaf, "cls_logits": conf_leaf},
                                    anchors, matched_idxs)
        (losses["bbox_regression"] + losses["classification"]).backward()
        return losses["bbox_regression"], losses["classification"]

    ours_values = [float(v.detach()) for v in ours_loss()]
    torchvision_values = [float(v.detach()) for v in torchvision_loss()]
    print(f"loss values (loc, conf): ours {ours_values[0]:.5f}, {ours_values[1]:.5f}; "
          f"torchvision {torchvision_values[0]:.5f}, {torchvision_values[1]:.5f}")

    # --- postprocess: same settings as torchvision's SSD defaults.
    head_outputs = {"bbox_regression": loc_pred, "cls_logits": conf_pred}
    image_shapes = [(IMAGE_SIZE, IMAGE_SIZE)] * args.batch_size

    def ours_postprocess():
        return postprocess(loc_pred, conf_pred, priors, score_threshold=0.01, iou_threshold=0.45, top_k=200)

    def torchvision_postprocess():
        with torch.no_grad():
            return model.postprocess_detections(head_outputs, anchors, image_shapes)

    ours_dets, tv_dets = ours_postprocess(), torchvision_postprocess()
    num_ours = sum(len(d["scores"]) for d in ours_dets)
    same = sum(int(len(o["scores"]) == len(t["scores"]) and torch.equal(o["labels"], t["labels"])
                   and torch.allclose(o["boxes"] * IMAGE_SIZE, t["boxes"], atol=1e-3))
               for o, t in zip(ours_dets, tv_dets))
    print(f"detections: ours {num_ours}, torchvision {sum(len(d['scores']) for d in tv_dets)}; "
          f"images with the same detections (labels equal, boxes within 1e-3 px): {same} / {args.batch_size}")

    rows = [
        ("multibox loss, forward + backward", ours_loss, torchvision_loss,
         "torchvision's call also encodes its positives' targets"),
        ("postprocess (decode, NMS, top 200)", ours_postprocess, torchvision_postprocess, ""),
    ]
    print(f"\nmedian of {args.repeats} runs, milliseconds")
    print(f"{'what':36s} {'ssd_lite':>10s} {'torchvision':>12s} {'ratio':>7s}  note")
    for name, ours_fn, tv_fn, note in rows:
        ours_s, tv_s = median_times(ours_fn, tv_fn, args.repeats, device)
        ours_ms, tv_ms = 1000 * ours_s, 1000 * tv_s
        print(f"{name:36s} {ours_ms:10.1f} {tv_ms:12.1f} {ours_ms / tv_ms:7.2f}  {note}")


if __name__ == "__main__":
    main()
