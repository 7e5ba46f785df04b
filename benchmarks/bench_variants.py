"""Benchmark: variants of the default training run, on the road to held-out mAP 0.95 (issue 13; not a test).

Each variant changes one thing of the baseline, `default-128`: the course's default run as it stood when
these variants were measured (the 128 px model, channels 24-48-96-128-128-128, 16000 shapes images x 4
epochs = 4000 steps at batch 16, AdamW at 3e-3 with warm-up and cosine decay, photometric distortion and
flips), and keeps the rest: same training images, same augmentation, same number of steps. The winner,
`input-192-narrow` at --steps-scale 0.85 (13600 images x 4 epochs = 3400 steps), is the default run since
(`python -m ssd_lite.train`, ssd_lite.model.default_model). Each is scored on the same 500 held-out images
(ShapesDataset(500, 128, seed=1000), lesson 06's):
- mAP@0.5 (VOC all-point), the course's target;
- recall by object size: the share of objects found by a detection of the right class scoring above 0.5
  with IoU >= 0.5, by size sqrt(w * h) as a fraction of the image side (the bins of lesson 06);
- recall at any score (every detection predict keeps, score > 0.01), by size: the most the ranking can
  reach, whatever the threshold; the focal loss, for one, gives lower scores than softmax with mining;
- what the N best-scored detections of the whole set are (N = the number of held-out objects): right,
  a duplicate, the wrong class on an object (IoU >= 0.5), a poor box (IoU 0.1-0.5), or background; and
  the median score of the right ones (a model can rank well with low scores);
- recall by background kind (gradient, stripes, blotches: see ssd_lite.shapes._random_background), and
  how many of held-out #7's five shapes are found (striped background, 0 found by the default run);
- steps, training seconds, seconds per step, and the load average before and after training: the
  machine is shared, so time depends on what else runs, while mAP after a fixed number of steps does not.

Usage:
    python benchmarks/bench_variants.py [--variants default-128,focal] [--seed 0] [--threads 2]
                                        [--steps-scale 1.0] [--json OUT] [--save-dir DIR]
    python benchmarks/bench_variants.py --show benchmarks/results/variants.json   # print a saved table
    python benchmarks/bench_variants.py --rescore DIR --variants ... --json OUT   # score saved models again
--json adds this run's rows to OUT, replacing rows of the same variant, seed and steps-scale, so that
variants run one at a time collect into one table. --steps-scale 0.02 shortens every run (fewer training
images, same epochs) for a smoke test.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ssd_lite.augment import train_transform
from ssd_lite.boxes import box_iou
from ssd_lite.checkpoint import load_checkpoint, save_checkpoint
from ssd_lite.data import CachedDataset
from ssd_lite.detect import predict_dataset
from ssd_lite.evaluate import mean_average_precision
from ssd_lite.loss import focal_multibox_loss, multibox_loss
from ssd_lite.model import SSD, small_ssd
from ssd_lite.shapes import ShapesDataset, _random_background
from ssd_lite.train import (DEFAULT_AUGMENTATION, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR,
                            DEFAULT_WARMUP, DEFAULT_WEIGHT_DECAY, HELD_OUT_NUM_IMAGES, HELD_OUT_SEED, SHAPES_DRAW_SIZE,
                            train)

SIZE_BINS = ((0.0, 0.10), (0.10, 0.15), (0.15, 0.30), (0.30, 1.0))  # lesson 06's recall-by-size bins
BACKGROUND_KINDS = ("gradient", "stripes", "blotches")  # the order of _random_background's `kind`
SCORE_THRESHOLD = 0.5  # a detection "counts" for recall above this score, as in lesson 06's figures
WATCHED_IMAGE = 7  # lesson 06's held-out #7: striped; the 128 px default run found 0 to 2 of its 5 shapes
# The baseline (the default run before input-192-narrow was adopted): its input size and training images.
BASE_IMAGE_SIZE = 128
BASE_NUM_IMAGES = 16000


def _default_boxes_model(num_classes: int, image_size: int, s_min: float = 0.1, s_max: float = 0.7,
                         class_scores: str = "softmax", **options) -> SSD:
    """The baseline's network (default_model before issue 13: small_ssd's widths 24-48-96-128-128-128 at 128 px,
    scales 0.1-0.7, ratios 1, 2, 3 and inverses), with other default boxes, widths or head options."""
    options.setdefault("aspect_ratios", [(2, 3)] * 4)
    return small_ssd(num_classes, image_size=image_size, s_min=s_min, s_max=s_max, class_scores=class_scores,
                     **options)


@dataclass(frozen=True)
class Variant:
    """One change to the baseline (default-128). build(num_classes, image_size) -> the model, before training."""
    description: str
    build: Callable[[int, int], SSD] = _default_boxes_model
    image_size: int = BASE_IMAGE_SIZE
    loss: str = "mining"  # "mining": multibox_loss; "focal": focal_multibox_loss with `loss_options`
    loss_options: dict = field(default_factory=dict)
    lr: float = DEFAULT_LR
    augmentation: dict = field(default_factory=lambda: dict(DEFAULT_AUGMENTATION))
    num_images: int = BASE_NUM_IMAGES  # training images (times epochs / batch size = steps)
    epochs: int = DEFAULT_EPOCHS
    backgrounds: tuple[str, ...] = BACKGROUND_KINDS  # the background kinds the training images may have
    draw_size: int = SHAPES_DRAW_SIZE  # the training images are drawn at this size, then resized to image_size

    def objective(self):
        return partial(focal_multibox_loss, **self.loss_options) if self.loss == "focal" else multibox_loss


sigmoid_model = partial(_default_boxes_model, class_scores="sigmoid")
# The narrower network of the 192 px variants (the default_model adopted from them).
narrow_model = partial(_default_boxes_model, widths=(16, 32, 64, 96, 96, 96))

VARIANTS = {
    "default-128": Variant("the default run before issue 13 (128 px input): softmax scores, hard negative mining 3:1"),
    "focal": Variant("focal loss (alpha 0.25, gamma 2), sigmoid scores with the prior bias, no mining",
                     sigmoid_model, loss="focal", loss_options=dict(alpha=0.25, gamma=2.0)),
    "focal-lr1e-3": Variant("focal loss as above, peak lr 1e-3 instead of 3e-3", sigmoid_model, loss="focal",
                            loss_options=dict(alpha=0.25, gamma=2.0), lr=1e-3),
    "focal-alpha0.5": Variant("focal loss with alpha 0.5 (the paper: 0.4 AP below 0.25)", sigmoid_model,
                              loss="focal", loss_options=dict(alpha=0.5, gamma=2.0)),
    # Small objects: the default's finest map (16x16 cells of 8 px) carries boxes of 0.1 and 0.17.
    "small-boxes": Variant("smaller default boxes: scales from 0.07 instead of 0.1 (finest map 0.07 and 0.14)",
                           partial(_default_boxes_model, s_min=0.07)),
    "fine-map": Variant("a fifth, 32x32 map (stride 4) with 2 square boxes per cell only, scales 0.06 to 0.7",
                        partial(_default_boxes_model, s_min=0.06, num_feature_maps=5,
                                aspect_ratios=[()] + [(2, 3)] * 4)),
    # Input size: a multiple of 64 (the model halves it six times); the same 128 px images, upsampled.
    "input-192": Variant("input 192 px (maps 24, 12, 6, 3), the same images upsampled", image_size=192),
    # At 192 px a step costs about twice as much: half the steps (16000 images x 2 epochs) for about the
    # default run's time.
    # Input 192 px with a narrower network (16-32-64-96 channels instead of 24-48-96-128), to pay for the larger
    # maps: forward, backward and AdamW step on a fixed batch measured 57 ms against the default's 51 ms (2
    # threads, batch 16); whole training steps 1.1-1.3x the default's. --steps-scale 0.85 (3400 steps) fits 5 minutes.
    # Adopted: at --steps-scale 0.85 this is the default run (default_model, python -m ssd_lite.train).
    "input-192-narrow": Variant("input 192 px, narrower network (widths 16, 32, 64, 96, 96, 96)",
                                narrow_model, image_size=192),
    # The same, but the training images drawn at 192 px (sharper edges) instead of upsampled from 128; the
    # held-out images stay 128-px drawings, upsampled by predict.
    "input-192-narrow-drawn-192": Variant("input-192-narrow with the training images drawn at 192 px, not upsampled",
                                          narrow_model, image_size=192, draw_size=192),
    "input-192-2k": Variant("input 192 px as above, 16000 images x 2 epochs: 2000 steps, about the default's time",
                            image_size=192, epochs=2),
    # Background robustness: the same number of training images, all on stripes or blotches (a third of the
    # default run's are plain gradients), so twice the practice on busy backgrounds.
    "busy-backgrounds": Variant("training images on stripes or blotches only (no gradients), same count",
                                backgrounds=("stripes", "blotches")),
    # More images seen fewer times (lesson 06: 16000 x 4 beat 8000 x 8 beat 4000 x 16), same 4000 steps.
    "images-32k": Variant("32000 training images x 2 epochs instead of 16000 x 4 (same steps)",
                          num_images=32000, epochs=2),
    "shared-heads": Variant("RetinaNet's shared heads (one loc and one conf conv on every map); maps widened "
                            "to 128 channels, which sharing needs",
                            partial(_default_boxes_model, widths=(24, 48, 128, 128, 128, 128), shared_heads=True)),
    "wide-maps": Variant("the shared-heads network's widths (128 channels on every map) with per-map heads: "
                         "shared-heads' baseline", partial(_default_boxes_model, widths=(24, 48, 128, 128, 128, 128))),
}


class BackgroundFilteredShapes(torch.utils.data.Dataset):
    """The first `num_images` items of ShapesDataset(seed=seed) whose background kind is one of `kinds`."""

    class_names = ShapesDataset.class_names

    def __init__(self, num_images: int, image_size: int, seed: int, kinds: tuple[str, ...]):
        self.source = ShapesDataset(10 * num_images + 100, image_size=image_size, seed=seed)
        self.indices = []
        index = 0
        while len(self.indices) < num_images:
            if background_kind(seed, index, image_size) in kinds:
                self.indices.append(index)
            index += 1

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[self.indices[index]]


# ---------------------------------------------------------------------------------------------------
# Scoring

def background_kind(seed: int, index: int, image_size: int = 128) -> str:
    """The background kind of ShapesDataset(seed=seed)[index]: the generator's own draw, replayed.

    _random_background is the first thing drawn from the item's generator, and its `kind` is its only
    integer draw; a recording generator catches it without copying the generator's logic.
    """
    class Recorder:
        def __init__(self, rng):
            self.rng, self.integers_drawn = rng, []

        def __getattr__(self, name):
            return getattr(self.rng, name)

        def integers(self, *args, **kwargs):
            value = self.rng.integers(*args, **kwargs)
            self.integers_drawn.append(int(value))
            return value

    recorder = Recorder(np.random.default_rng([seed, index]))
    _random_background(recorder, image_size)
    return BACKGROUND_KINDS[recorder.integers_drawn[0]]


def objects_found(detections: list[dict], targets: list[dict], score_threshold: float = SCORE_THRESHOLD,
                  iou_threshold: float = 0.5) -> list[Tensor]:
    """Per image, a (G,) bool: is each object found by a detection of its class above the score, IoU >= 0.5?"""
    found = []
    for target, image_detections in zip(targets, detections):
        keep = image_detections["scores"] > score_threshold
        boxes, labels = image_detections["boxes"][keep], image_detections["labels"][keep]
        same_class = target["labels"][:, None] == labels[None, :]
        found.append(((box_iou(target["boxes"], boxes) >= iou_threshold) & same_class).any(dim=1))
    return found


def recall_table(found: list[Tensor], groups: list[Tensor], names: list[str]) -> dict:
    """{name: {"recall", "objects"}} for objects grouped by `groups` (per image, a (G,) group index)."""
    found, groups = torch.cat(found), torch.cat(groups)
    table = {}
    for k, name in enumerate(names):
        members = groups == k
        count = int(members.sum())
        table[name] = {"recall": round(float(found[members].float().mean()), 4) if count else None,
                       "objects": count}
    return table


def classify_detections(detections: list[dict], targets: list[dict]) -> list[tuple[float, str, tuple]]:
    """(score, kind, object) of every detection. kind: "right" (IoU >= 0.5 with an object of its class not yet
    found by a better detection of the image), "duplicate" (that object was found already), "wrong class"
    (IoU >= 0.5 with an object of another class only), "poor box" (IoU 0.1 to 0.5 with some object),
    "background". object: (image index, object index) of the object meant, or None for background."""
    kinds = []
    for image, (image_detections, target) in enumerate(zip(detections, targets)):
        ious = box_iou(image_detections["boxes"], target["boxes"])  # (K, G)
        found = torch.zeros(len(target["labels"]), dtype=torch.bool)
        for k, (detection_score, label) in enumerate(zip(image_detections["scores"].tolist(),
                                                         image_detections["labels"].tolist())):
            if len(target["labels"]) == 0 or ious[k].max() < 0.1:
                kinds.append((detection_score, "background", None))
                continue
            same_class = torch.where(target["labels"] == label, ious[k], torch.zeros_like(ious[k]))
            if same_class.max() >= 0.5:
                best = int(same_class.argmax())  # detections come best first: greedy, as VOC matches
                kinds.append((detection_score, "duplicate" if found[best] else "right", (image, best)))
                found[best] = True
            else:
                kind = "wrong class" if ious[k].max() >= 0.5 else "poor box"
                kinds.append((detection_score, kind, (image, int(ious[k].argmax()))))
    return kinds


def top_detections(kinds: list[tuple[float, str, tuple]], num_objects: int) -> dict[str, int]:
    """How many of the num_objects best-scored detections of the whole set are of each kind, and how many
    of the wrong-class ones sit on an object that also has a right one among them (one shape, two labels)."""
    best = sorted(kinds, key=lambda item: -item[0])[:num_objects]
    counts = {kind: sum(1 for _, k, _ in best if k == kind)
              for kind in ("right", "duplicate", "wrong class", "poor box", "background")}
    found = {target for _, kind, target in best if kind == "right"}
    counts["wrong class, object also right"] = sum(1 for _, kind, target in best
                                                   if kind == "wrong class" and target in found)
    return counts


def score(model: SSD, held_out: ShapesDataset) -> dict:
    """mAP, recall by size and by background kind, and the watched image's count, on `held_out`."""
    detections, targets = predict_dataset(model, held_out)
    result = mean_average_precision(detections, targets, num_classes=model.num_classes)
    found = objects_found(detections, targets)
    found_at_any_score = objects_found(detections, targets, score_threshold=0.0)
    detection_kinds = classify_detections(detections, targets)
    sizes = [((t["boxes"][:, 2:] - t["boxes"][:, :2]).prod(dim=1)).sqrt() for t in targets]
    edges = torch.tensor([low for low, _ in SIZE_BINS[1:]])
    size_groups = [torch.bucketize(s, edges, right=True) for s in sizes]
    kinds = [BACKGROUND_KINDS.index(background_kind(held_out.seed, i, held_out.image_size))
             for i in range(len(held_out))]
    background_groups = [torch.full((len(t["labels"]),), kind) for t, kind in zip(targets, kinds)]
    watched = {}
    if len(held_out) > WATCHED_IMAGE:
        watched = {"found": int(found[WATCHED_IMAGE].sum()), "objects": len(found[WATCHED_IMAGE]),
                   "background": BACKGROUND_KINDS[kinds[WATCHED_IMAGE]]}
    return {"map": round(result["map"], 4),
            "ap_per_class": {str(label): round(ap, 4) for label, ap in result["ap_per_class"].items()},
            "recall_by_size": recall_table(found, size_groups, [f"{low:.2f}-{high:.2f}" for low, high in SIZE_BINS]),
            "recall_by_size_any_score": recall_table(found_at_any_score, size_groups,
                                                     [f"{low:.2f}-{high:.2f}" for low, high in SIZE_BINS]),
            "recall_any_score": round(float(torch.cat(found_at_any_score).float().mean()), 4),
            "top_detections": top_detections(detection_kinds, sum(len(t["labels"]) for t in targets)),
            "right_score_median": round(float(torch.tensor([s for s, k, _ in detection_kinds if k == "right"]
                                                           or [0.0]).median()), 4),
            "recall_by_background": recall_table(found, background_groups, list(BACKGROUND_KINDS)),
            "images_by_background": {kind: kinds.count(k) for k, kind in enumerate(BACKGROUND_KINDS)},
            f"held_out_{WATCHED_IMAGE}": watched}


# ---------------------------------------------------------------------------------------------------
# Running

def run_variant(name: str, variant: Variant, seed: int, steps_scale: float, datasets: dict,
                held_out: ShapesDataset, save_dir: Path | None) -> dict:
    """Train `variant` as the default run trains, then score it. `datasets` caches training sets by size."""
    num_images = max(round(variant.num_images * steps_scale), DEFAULT_BATCH_SIZE)
    key = (variant.image_size, num_images, seed, json.dumps(variant.augmentation, sort_keys=True),
           variant.backgrounds, variant.draw_size)
    if key not in datasets:
        # The default run's images (drawn at 128 px, as the held-out ones, unless draw_size says otherwise),
        # resized once to the input size.
        if variant.backgrounds == BACKGROUND_KINDS:
            source = ShapesDataset(num_images, image_size=variant.draw_size, seed=seed)
        else:
            source = BackgroundFilteredShapes(num_images, variant.draw_size, seed, variant.backgrounds)
        datasets[key] = CachedDataset(source, variant.image_size,
                                      train_transform(variant.image_size, **variant.augmentation))
    dataset = datasets[key]
    torch.manual_seed(seed)  # the initial weights
    model = variant.build(len(ShapesDataset.class_names), variant.image_size)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    history = train(model, dataset, epochs=variant.epochs, batch_size=DEFAULT_BATCH_SIZE, lr=variant.lr,
                    weight_decay=DEFAULT_WEIGHT_DECAY, warmup=DEFAULT_WARMUP, seed=seed, progress=False,
                    objective=variant.objective())
    seconds = time.perf_counter() - started
    load_after = os.getloadavg()[0]
    steps = len(history["loss"])
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(save_dir / f"{name}-seed{seed}.pt", model, ShapesDataset.class_names,
                        variant=name, seed=seed, history=history)
    return {"variant": name, "description": variant.description, "seed": seed, "steps_scale": steps_scale,
            "class_scores": model.class_scores, "image_size": variant.image_size, "draw_size": variant.draw_size,
            "lr": variant.lr, "num_images": num_images, "epochs": variant.epochs,
            "num_priors": len(model.priors), "parameters": sum(p.numel() for p in model.parameters()),
            "steps": steps, "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / steps, 4),
            "threads": torch.get_num_threads(), "load_before": round(load_before, 2),
            "load_after": round(load_after, 2),
            "final_loss": round(sum(history["loss"][-50:]) / len(history["loss"][-50:]), 4),
            **score(model, held_out)}


def rescore(name: str, seed: int, steps_scale: float, checkpoint_dir: Path, held_out: ShapesDataset,
            previous: list[dict]) -> dict:
    """Score a model kept by --save-dir again (e.g. after a change to post-processing), keeping its
    training figures from the row saved before."""
    model, _ = load_checkpoint(checkpoint_dir / f"{name}-seed{seed}.pt")
    key = (name, seed, steps_scale)
    row = next((row for row in previous if (row["variant"], row["seed"], row["steps_scale"]) == key), None)
    if row is None:
        raise SystemExit(f"no saved row for {name}, seed {seed}, steps-scale {steps_scale:g} to update")
    return {**row, **score(model, held_out)}


def format_table(rows: list[dict]) -> str:
    """One line per row: mAP; recall at score > 0.5 by object size and by background kind; held-out #7;
    recall at any score; steps, training seconds, seconds per step and the load average around training."""
    sizes = [f"{low:.2f}-{high:.2f}" for low, high in SIZE_BINS]
    header = (f"{'variant':<24} {'seed':>4} {'mAP':>6} | {' '.join(f'{s:>9}' for s in sizes)} | "
              f"{' '.join(f'{k:>8}' for k in BACKGROUND_KINDS)} | {'#' + str(WATCHED_IMAGE):>3} | {'any':>5} | "
              f"{'top N: R/W/P/B':>16} | "
              f"{'steps':>5} {'train s':>7} {'s/step':>6} {'load':>9}")
    over = (f"{'':<24} {'':>4} {'':>6} | {'recall, score > 0.5, by object size':<39} | "
            f"{'... by background kind':<26} | {'':>3} | {'':>5} | {'':>16} |")
    lines = [over, header, "-" * len(header)]
    for row in rows:
        watched = row.get(f"held_out_{WATCHED_IMAGE}") or {}
        size_part = " ".join(f"{row['recall_by_size'][s]['recall'] or 0:>9.2f}" for s in sizes)
        background_part = " ".join(f"{row['recall_by_background'][k]['recall'] or 0:>8.2f}"
                                   for k in BACKGROUND_KINDS)
        scale = "" if row["steps_scale"] == 1 else f" (x{row['steps_scale']:g})"
        counts = row.get("top_detections")
        top = "/".join(str(counts[k]) for k in ("right", "wrong class", "poor box", "background")) if counts else "-"
        lines.append(f"{row['variant'] + scale:<24} {row['seed']:>4} {row['map']:>6.3f} | {size_part} | "
                     f"{background_part} | {watched.get('found', '-')}/{watched.get('objects', '-')} | "
                     f"{row.get('recall_any_score', float('nan')):>5.2f} | {top:>16} | {row['steps']:>5} "
                     f"{row['train_seconds']:>7.0f} {row['seconds_per_step']:>6.3f} "
                     f"{row['load_before']:>4.1f}-{row['load_after']:<4.1f}")
    lines.append("any: recall at any score (every detection kept by predict, score > 0.01), all sizes. top N: of the "
                 "N best-scored detections (N = objects), how many are right, the wrong class, a poor box, background.")
    lines.append("load: the 1-minute load average before and after training (2 cores: above ~2, times are inflated).")
    return "\n".join(lines)


def save_rows(path: Path, rows: list[dict]) -> list[dict]:
    """Add `rows` to the JSON list at `path`, replacing rows of the same variant, seed and steps-scale."""
    saved = json.loads(path.read_text()) if path.exists() else []
    keys = {(row["variant"], row["seed"], row["steps_scale"]) for row in rows}
    kept = [row for row in saved if (row["variant"], row["seed"], row["steps_scale"]) not in keys]
    order = list(VARIANTS)
    merged = sorted(kept + rows, key=lambda row: (row["steps_scale"] != 1, order.index(row["variant"])
                                                  if row["variant"] in order else len(order), row["seed"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1) + "\n")
    return merged


def variant_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {unknown or text!r}; choose from {', '.join(VARIANTS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=variant_list, default=["default-128"],
                        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: default-128)")
    parser.add_argument("--seed", type=int, default=0, help="training images, initial weights, shuffling and "
                                                            "augmentation (the held-out images stay seed 1000)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2 cores)")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="fraction of each variant's training images (so of its steps); 1 = the full run")
    parser.add_argument("--held-out", type=int, default=HELD_OUT_NUM_IMAGES,
                        help=f"held-out images to score on (default {HELD_OUT_NUM_IMAGES})")
    parser.add_argument("--json", type=Path, default=None, help="add the rows to this JSON file")
    parser.add_argument("--save-dir", type=Path, default=None, help="keep each trained model there (.pt)")
    parser.add_argument("--show", type=Path, default=None, help="print the table saved in this JSON file and exit")
    parser.add_argument("--rescore", type=Path, default=None,
                        help="score the models saved in this folder by --save-dir again, without training, and "
                             "update their rows in --json")
    args = parser.parse_args(argv)
    if args.show is not None:
        print(format_table(json.loads(args.show.read_text())))
        return 0
    if args.rescore is not None and args.json is None:
        parser.error("--rescore updates rows saved before: give the --json file that holds them")
    if not 0 < args.steps_scale <= 1:
        parser.error(f"--steps-scale must be in (0, 1], got {args.steps_scale}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()}", flush=True)
    held_out = ShapesDataset(args.held_out, image_size=SHAPES_DRAW_SIZE, seed=HELD_OUT_SEED)
    datasets, rows = {}, []
    for name in args.variants:
        print(f"{name}: {VARIANTS[name].description}", flush=True)
        if args.rescore is not None:
            previous = json.loads(args.json.read_text()) if args.json.exists() else []
            rows.append(rescore(name, args.seed, args.steps_scale, args.rescore, held_out, previous))
        else:
            rows.append(run_variant(name, VARIANTS[name], args.seed, args.steps_scale, datasets, held_out,
                                    args.save_dir))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
        if args.json is not None:
            save_rows(args.json, rows[-1:])
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
