"""Evaluation: precision, recall and (mean) average precision (paper, section 3, "Experimental results").

A detector returns, for every image, boxes with a class and a score. To grade them we go class by
class: sort all the class's detections in the test set by score, decide for each one whether it found
an object (a true positive) or not (a false positive), and watch precision and recall as we lower the
score threshold one detection at a time:

    precision = true positives so far / detections so far      ("how many of my answers are right")
    recall    = true positives so far / objects in the test set ("how many of the objects I found")

Average precision (AP) summarises that precision-recall curve in one number, the area under it; the
mean over classes is mAP. Three benchmarks read the area differently (see `average_precision`), and
COCO also averages over ten IoU thresholds (`coco_map`). The SSD paper reports VOC2007 11-point mAP
at IoU 0.5 and, for COCO, the 0.5:0.95 average.

Conventions (chosen to agree with pycocotools, checked in tests/test_evaluate.py):
- A detection matches an object of its class when IoU >= the threshold (pycocotools' `>=`).
- Greedy matching, per image and class, in descending score: each detection takes the best-overlapping
  object *not yet taken*; each object is found at most once, so a second detection of it is a false
  positive (a duplicate). The VOC devkit differs in one corner: it takes the best object overall and
  calls the detection a duplicate if that one is already taken. The two agree unless two objects of
  one class overlap each other heavily.
- "difficult" objects (VOC): they do not count in recall, and a detection that can only match a
  difficult object is ignored (neither true nor false positive). Several detections may sit on one
  difficult object, all ignored, as in the VOC devkit.
- A class with no (non-difficult) object has no recall, so no AP: it gets nan in "ap_per_class" and is
  left out of the mean (pycocotools marks it -1 and leaves it out too).
- Ties in score keep their input order (stable sorts, as pycocotools' mergesort).
"""
from __future__ import annotations

import argparse
import math
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ssd_lite import cli
from ssd_lite.boxes import box_iou, check_boxes
from ssd_lite.device import use_threads

INTERPOLATIONS = ("11point", "all", "101point")

# The sample points and thresholds, built exactly as the reference code builds them (np.linspace in
# pycocotools; the usual Python VOC2007 code, np.arange(0, 1.1, 0.1), gives the same 11 values), so our
# numbers agree with theirs to the last digit. A floating-point quirk comes with them: "0.3" here is
# 0.30000000000000004 and "0.7" among the 101 points is 0.7000000000000001, so a recall of exactly 3/10
# or 7/10 sits just below its point.
RECALL_POINTS_11 = torch.from_numpy(np.linspace(0.0, 1.0, 11))    # VOC2007: 0, 0.1, ..., 1
RECALL_POINTS_101 = torch.from_numpy(np.linspace(0.0, 1.0, 101))  # COCO: 0, 0.01, ..., 1
COCO_IOU_THRESHOLDS = tuple(np.linspace(0.5, 0.95, 10).tolist())  # COCO: 0.50, 0.55, ..., 0.95


def precision_recall(scores: Tensor, is_true_positive: Tensor, num_ground_truth: int) -> tuple[Tensor, Tensor]:
    """Precision and recall after each detection, best score first.

    scores: (K,) the detections' confidences; is_true_positive: (K,) bool, whether each one found an
    object; num_ground_truth: how many objects there are to find (> 0).
    Returns precision (K,) and recall (K,), float64, in order of descending score (ties keep their input
    order): entry i describes "keep the i + 1 best detections".
    """
    scores = torch.as_tensor(scores).detach().cpu()
    is_true_positive = torch.as_tensor(is_true_positive).detach().cpu()
    if scores.dim() != 1 or is_true_positive.shape != scores.shape:
        raise ValueError(f"scores and is_true_positive must both have shape (K,), got {tuple(scores.shape)} "
                         f"and {tuple(is_true_positive.shape)}")
    if is_true_positive.dtype != torch.bool:
        raise ValueError(f"is_true_positive must be a bool tensor, got {is_true_positive.dtype}")
    num_true = int(is_true_positive.sum())
    if num_ground_truth <= 0:
        raise ValueError(f"num_ground_truth must be > 0 (recall = found / num_ground_truth), got {num_ground_truth}")
    if num_true > num_ground_truth:
        raise ValueError(f"{num_true} true positives but only {num_ground_truth} objects: each object can be "
                         "found at most once")
    order = torch.sort(scores, descending=True, stable=True).indices
    # float64: recall is compared with the recall points exactly, as pycocotools does in numpy float64.
    true_positives = is_true_positive[order].to(torch.float64).cumsum(0)
    num_detections = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return true_positives / num_detections, true_positives / num_ground_truth


def average_precision(precision: Tensor, recall: Tensor, interpolation: str = "all") -> float:
    """The area under a precision-recall curve: one number per class.

    precision, recall: (K,) as returned by `precision_recall` (recall never decreases).
    All three interpolations first replace precision by its envelope, the best precision at this recall
    or any higher one ("if I accept more detections, could I do better?"); they differ in where they read it:
    - "11point" (VOC2007, as in the SSD paper's VOC2007 tables): the mean of the envelope at recall 0, 0.1, ..., 1;
    - "all" (VOC2010 and later): the exact area under the envelope, a rectangle per step in recall;
    - "101point" (COCO): the mean of the envelope at recall 0, 0.01, ..., 1.
    A recall point beyond the largest recall reached counts as precision 0.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    precision = torch.as_tensor(precision).detach().cpu().to(torch.float64)
    recall = torch.as_tensor(recall).detach().cpu().to(torch.float64)
    if precision.dim() != 1 or precision.shape != recall.shape:
        raise ValueError(f"precision and recall must both have shape (K,), got {tuple(precision.shape)} "
                         f"and {tuple(recall.shape)}")
    if len(recall) == 0:
        return 0.0  # no detections: nothing found
    if (recall[1:] < recall[:-1]).any():
        raise ValueError("recall must never decrease: pass precision and recall in order of descending score")

    # Envelope: running maximum from the right (the best precision at this recall or beyond).
    envelope = precision.flip(0).cummax(0).values.flip(0)

    if interpolation == "all":
        # Each detection adds (its gain in recall) x (the envelope there); false positives gain nothing.
        recall_gain = torch.diff(recall, prepend=recall.new_zeros(1))
        return float((recall_gain * envelope).sum())

    points = RECALL_POINTS_11 if interpolation == "11point" else RECALL_POINTS_101
    # For each recall point, the first detection whose recall reaches it (pycocotools: np.searchsorted).
    first_reaching = torch.searchsorted(recall, points, side="left")
    reached = first_reaching < len(recall)
    sampled = torch.zeros_like(points)
    sampled[reached] = envelope[first_reaching[reached]]
    return float(sampled.mean())


def _check_image_dicts(detections: Sequence[dict], targets: Sequence[dict]) -> None:
    if len(detections) != len(targets):
        raise ValueError(f"need one detections dict per target dict, got {len(detections)} and {len(targets)}")
    for i, (found, target) in enumerate(zip(detections, targets)):
        for key in ("boxes", "scores", "labels"):
            if key not in found:
                raise ValueError(f"detections[{i}] has no {key!r} (keys: {sorted(found)})")
        for key in ("boxes", "labels"):
            if key not in target:
                raise ValueError(f"targets[{i}] has no {key!r} (keys: {sorted(target)})")
        # Any box units work (IoU does not care), as long as detections and targets use the same ones.
        check_boxes(found["boxes"], f"detections[{i}]['boxes']", normalised=False, allow_empty=True)
        check_boxes(target["boxes"], f"targets[{i}]['boxes']", normalised=False, allow_empty=True)
        num_found, num_objects = len(found["boxes"]), len(target["boxes"])
        if found["scores"].shape != (num_found,) or found["labels"].shape != (num_found,):
            raise ValueError(f"detections[{i}]: {num_found} boxes need (K,) scores and labels, got "
                             f"{tuple(found['scores'].shape)} and {tuple(found['labels'].shape)}")
        if target["labels"].shape != (num_objects,):
            raise ValueError(f"targets[{i}]: {num_objects} boxes need (G,) labels, got {tuple(target['labels'].shape)}")
        if "difficult" in target and target["difficult"].shape != (num_objects,):
            raise ValueError(f"targets[{i}]: {num_objects} boxes need (G,) difficult flags, got "
                             f"{tuple(target['difficult'].shape)}")


def match_detections(boxes: Tensor, scores: Tensor, gt_boxes: Tensor, gt_difficult: Tensor,
                     iou_threshold: float) -> tuple[Tensor, Tensor]:
    """Greedy matching of one image's detections of one class to its objects of that class.

    boxes: (K, 4) xyxy; scores: (K,); gt_boxes: (G, 4) xyxy; gt_difficult: (G,) bool.
    Returns is_true_positive (K,) bool and is_ignored (K,) bool, in the input order of the detections.
    In descending score, each detection takes the best-overlapping object not yet taken among those with
    IoU >= iou_threshold; failing that, a difficult object makes it ignored; otherwise it is a false positive.
    """
    num_detections = len(boxes)
    is_true_positive = torch.zeros(num_detections, dtype=torch.bool)
    is_ignored = torch.zeros(num_detections, dtype=torch.bool)
    if num_detections == 0 or len(gt_boxes) == 0:
        return is_true_positive, is_ignored
    # float64 so that "IoU >= threshold" is decided as precisely as pycocotools does.
    ious = box_iou(boxes.double(), gt_boxes.double())  # (K, G)
    can_match = ious >= iou_threshold
    overlaps_some_object = can_match.any(dim=1).tolist()
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    # A loop, because matching is greedy: what a detection may take depends on the better ones before it.
    for d in torch.sort(scores, descending=True, stable=True).indices.tolist():
        if not overlaps_some_object[d]:
            continue  # a false positive whatever came before: skip the bookkeeping
        free_objects = can_match[d] & ~taken & ~gt_difficult
        if free_objects.any():
            best = int(ious[d].masked_fill(~free_objects, -1.0).argmax())
            taken[best] = True
            is_true_positive[d] = True
        elif (can_match[d] & gt_difficult).any():
            is_ignored[d] = True
    return is_true_positive, is_ignored


def _prepared(detections: Sequence[dict], targets: Sequence[dict], num_classes: int | None) -> tuple[list, list]:
    """Checked CPU copies of the inputs, every target with a "difficult" flag."""
    _check_image_dicts(detections, targets)
    for image in list(detections) + list(targets):
        labels = image["labels"]
        if (labels < 1).any() or (num_classes is not None and (labels >= num_classes).any()):
            allowed = f"1..{num_classes - 1}" if num_classes is not None else ">= 1"
            raise ValueError(f"labels must be {allowed} (0 is background), got {labels.tolist()}")
    # Evaluation is bookkeeping on a few numbers per detection, so it runs on the CPU whatever device
    # the detector used (a GPU would only add a synchronisation per detection in the matching loop).
    detections = [{key: found[key].detach().cpu() for key in ("boxes", "scores", "labels")} for found in detections]
    targets = [{"boxes": target["boxes"].detach().cpu(), "labels": target["labels"].detach().cpu(),
                "difficult": (target["difficult"].detach().cpu().bool() if "difficult" in target
                              else torch.zeros(len(target["labels"]), dtype=torch.bool))} for target in targets]
    return detections, targets


def _class_matches(detections: list, targets: list, label: int, iou_threshold: float) -> tuple[Tensor, Tensor, int]:
    class_scores, class_true_positive, num_objects = [], [], 0
    for found, target in zip(detections, targets):
        mine, my_objects = found["labels"] == label, target["labels"] == label
        is_true_positive, is_ignored = match_detections(
            found["boxes"][mine], found["scores"][mine], target["boxes"][my_objects],
            target["difficult"][my_objects], iou_threshold)
        # Ignored detections are dropped: they move neither precision nor recall.
        class_scores.append(found["scores"][mine][~is_ignored])
        class_true_positive.append(is_true_positive[~is_ignored])
        num_objects += int((~target["difficult"][my_objects]).sum())
    return torch.cat(class_scores), torch.cat(class_true_positive), num_objects


def class_matches(detections: Sequence[dict], targets: Sequence[dict], label: int,
                  iou_threshold: float = 0.5) -> tuple[Tensor, Tensor, int]:
    """Every detection of one class in a test set, judged: the input of `precision_recall`.

    detections, targets: one dict per image, as for `mean_average_precision`.
    Returns scores (K,) and is_true_positive (K,) bool for the class's K detections over all images
    (image by image, in input order; detections ignored because of a difficult object are left out), and
    num_objects, the class's non-difficult objects.
    """
    detections, targets = _prepared(detections, targets, None)
    return _class_matches(detections, targets, label, iou_threshold)


def mean_average_precision(detections: Sequence[dict], targets: Sequence[dict], iou_threshold: float = 0.5,
                           interpolation: str = "all", num_classes: int | None = None) -> dict:
    """mAP of a detector over a test set, VOC style by default (IoU 0.5, all-point AP).

    detections: one dict per image {"boxes": (K, 4) xyxy, "scores": (K,), "labels": (K,)};
    targets: one dict per image {"boxes": (G, 4) xyxy, "labels": (G,), optional "difficult": (G,) bool}.
    num_classes: C including background; classes 1..C-1 are evaluated. Without it, every label that
    appears in detections or targets is.
    Returns {"map": float, "ap_per_class": {label: AP}}. A class with no non-difficult object gets nan and
    is left out of "map" (nan if no class has an object). See the module docstring for the matching rules.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    detections, targets = _prepared(detections, targets, num_classes)
    if num_classes is not None:
        classes = list(range(1, num_classes))
    else:
        seen = [image["labels"] for image in detections + targets]
        classes = sorted(set(torch.cat(seen).tolist())) if seen else []

    ap_per_class = {}
    for label in classes:
        scores, is_true_positive, num_objects = _class_matches(detections, targets, label, iou_threshold)
        if num_objects == 0:
            ap_per_class[label] = math.nan  # recall is undefined: no AP for this class
            continue
        precision, recall = precision_recall(scores, is_true_positive, num_objects)
        ap_per_class[label] = average_precision(precision, recall, interpolation)

    measured = [ap for ap in ap_per_class.values() if not math.isnan(ap)]
    mean = sum(measured) / len(measured) if measured else math.nan
    return {"map": mean, "ap_per_class": ap_per_class}


def coco_map(detections: Sequence[dict], targets: Sequence[dict], num_classes: int | None = None,
             iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS) -> dict:
    """COCO-style mAP: the 101-point mAP averaged over IoU thresholds 0.50, 0.55, ..., 0.95.

    Same inputs as `mean_average_precision`. A loose box counts at IoU 0.5 but not at 0.9, so this rewards
    precise localisation. Returns {"map": the average (COCO's "AP"), "map_per_threshold": {threshold: mAP},
    "ap_per_class": {label: AP averaged over the thresholds}}; map_per_threshold[0.5] and [0.75] are COCO's
    "AP50" and "AP75".
    """
    if len(iou_thresholds) == 0:
        raise ValueError("iou_thresholds is empty: coco_map needs at least one IoU threshold")
    results = {t: mean_average_precision(detections, targets, t, "101point", num_classes) for t in iou_thresholds}
    # Keys rounded for reading (0.9, not 0.8999999999999999); the matching used the exact values.
    per_threshold = {round(t, 4): result["map"] for t, result in results.items()}
    labels = next(iter(results.values()))["ap_per_class"].keys() if results else []
    ap_per_class = {label: sum(r["ap_per_class"][label] for r in results.values()) / len(results)
                    for label in labels}
    return {"map": sum(per_threshold.values()) / len(per_threshold), "map_per_threshold": per_threshold,
            "ap_per_class": ap_per_class}


def to_coco(detections: Sequence[dict], targets: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
            num_classes: int) -> tuple[dict, list[dict]]:
    """Our per-image dicts in the COCO json format, for pycocotools (or any COCO tool).

    image_sizes: (width, height) of each image (the course's convention, as PIL), to turn normalised xyxy
    boxes into COCO's pixel
    [x, y, width, height]. Image i gets id i + 1, label k is category k, objects get ids from 1 (COCO
    counts 0 as "no match"). "difficult" has no COCO equivalent and is dropped.
    Returns the ground truth (a dict with "images", "annotations", "categories") and the results list.
    """
    if not (len(detections) == len(targets) == len(image_sizes)):
        raise ValueError(f"need one detections dict, target and image size per image, got {len(detections)}, "
                         f"{len(targets)} and {len(image_sizes)}")

    def pixel_xywh(boxes: Tensor, width: int, height: int) -> list[list[float]]:
        x_min, y_min, x_max, y_max = boxes.detach().cpu().double().unbind(-1)
        return torch.stack([x_min * width, y_min * height, (x_max - x_min) * width, (y_max - y_min) * height],
                           dim=-1).tolist()

    images, annotations, results = [], [], []
    for image_id, (found, target, (width, height)) in enumerate(zip(detections, targets, image_sizes), start=1):
        images.append({"id": image_id, "height": height, "width": width})
        for box, label in zip(pixel_xywh(target["boxes"], width, height), target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        for box, label, score in zip(pixel_xywh(found["boxes"], width, height), found["labels"].tolist(),
                                     found["scores"].tolist()):
            results.append({"image_id": image_id, "category_id": label, "bbox": box, "score": score})
    categories = [{"id": label, "name": str(label)} for label in range(1, num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


# ---------------------------------------------------------------------------------------------------
# Command line: python -m ssd_lite.evaluate --checkpoint model.pt [--data VOC_DIR --split val]
# ---------------------------------------------------------------------------------------------------

def evaluation_report(detections: Sequence[dict], targets: Sequence[dict], class_names: Sequence[str]) -> str:
    """The three benchmarks' mAP and a per-class table, as printed by the command line."""
    num_classes = len(class_names)
    voc = mean_average_precision(detections, targets, 0.5, "all", num_classes)
    voc2007 = mean_average_precision(detections, targets, 0.5, "11point", num_classes)
    coco = coco_map(detections, targets, num_classes)
    lines = [f"images: {len(targets)}, objects: {sum(len(t['labels']) for t in targets)}, "
             f"detections: {sum(len(d['labels']) for d in detections)}",
             f"VOC2010+ mAP@0.5 (all points):    {voc['map']:.4f}",
             f"VOC2007  mAP@0.5 (11 points):     {voc2007['map']:.4f}",
             f"COCO     mAP@[0.50:0.95] (101 points): {coco['map']:.4f}   "
             f"(AP50 {coco['map_per_threshold'][0.5]:.4f}, AP75 {coco['map_per_threshold'][0.75]:.4f})",
             "",
             f"{'class':<14} {'objects':>7} {'AP@0.5 all':>10} {'11-point':>9} {'COCO AP':>8}"]
    for label in range(1, num_classes):
        num_objects = sum(int((t["labels"] == label).sum()) for t in targets)
        lines.append(f"{class_names[label]:<14} {num_objects:>7} {voc['ap_per_class'][label]:>10.4f} "
                     f"{voc2007['ap_per_class'][label]:>9.4f} {coco['ap_per_class'][label]:>8.4f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd_lite.evaluate",
        description="Measure a trained SSD: VOC mAP@0.5 (all-point and 11-point) and COCO-style mAP@[0.50:0.95]. "
                    "Without --data it uses held-out synthetic shapes images (the seed the checkpoint records "
                    "for them, never seen in training).")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by python -m ssd_lite.train")
    parser.add_argument("--data", help="a Pascal VOC folder (JPEGImages/, Annotations/, ImageSets/Main/)")
    parser.add_argument("--split", default="val", help="the VOC split to evaluate (default: val)")
    parser.add_argument("--num-images", type=cli.positive_int, default=None,
                        help="how many synthetic images, without --data (default: as recorded in the checkpoint)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the synthetic images, without --data (default: the held-out seed recorded "
                             "in the checkpoint)")
    parser.add_argument("--batch-size", type=cli.positive_int, default=32)
    cli.add_common_flags(parser)
    args = parser.parse_args(argv)

    # Imported here: the metrics above need no model, and `import ssd_lite.evaluate` stays light.
    from ssd_lite.shapes import ShapesDataset
    from ssd_lite.voc import VOCDataset
    from ssd_lite.detect import predict_dataset
    from ssd_lite.checkpoint import load_checkpoint

    use_threads(args.threads)
    model, checkpoint = load_checkpoint(args.checkpoint, device=args.device)
    class_names = tuple(checkpoint["class_names"])
    if args.data:
        # predict_dataset resizes each image to the model's input; the normalised boxes need no change.
        dataset = VOCDataset(args.data, args.split, class_names=class_names)
        where = f"VOC folder {args.data}, split {args.split!r}"
    else:
        recorded = checkpoint.get("data", {})
        seed = args.seed if args.seed is not None else recorded.get("held_out_seed")
        num_images = args.num_images if args.num_images is not None else recorded.get("held_out_num_images", 500)
        if seed is None:
            parser.error(f"{args.checkpoint} records no held-out seed for synthetic images "
                         "(was it trained on VOC data?): pass --data, or --seed")
        if args.seed is not None and seed == recorded.get("seed"):
            print(f"warning: seed {seed} is the training seed: these images were seen in training")
        # Drawn at the training images' size (the model's input for runs saved before draw_size), and resized
        # to the model's input by predict_dataset.
        dataset = ShapesDataset(num_images, image_size=recorded.get("draw_size", model.image_size), seed=seed)
        where = f"{num_images} synthetic shapes images, seed {seed}"
    print(f"checkpoint: {args.checkpoint}\ndata: {where}")
    detections, targets = predict_dataset(model, dataset, batch_size=args.batch_size)
    print(evaluation_report(detections, targets, class_names))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main, prog="python -m ssd_lite.evaluate"))
