"""SSD300 on a GPU: training and inference speed of ours against torchvision's, in one run.

    python benchmarks/bench_ssd300.py                       (needs a CUDA GPU; about a minute)
    python benchmarks/bench_ssd300.py --device cpu --tiny   (a smoke run in seconds: the tests run it)

The two networks: ours, ssd_lite.model.ssd300_vgg16, trained with ssd_lite.matching.match and
ssd_lite.loss.multibox_loss and post-processed with ssd_lite.nms.postprocess; and
torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21), which
matches, computes its loss and post-processes inside its forward. Both: random weights, 300x300
inputs, 21 classes (Pascal VOC's 20 and background), weights and our images in channels_last, cuDNN
autotuning on. Each model is built once, seeded, on the CPU (torchvision's builds VGG16's classifier
too, ~3 s, then drops it); each row copies it to the device afresh, so its peak memory is its own.

Rows:
- train: one SGD step (momentum 0.9, the paper's optimiser) per batch of --train-batch images (32, the
  paper's), with and without mixed precision (ssd_lite.amp: bfloat16 where the GPU has it, else float16
  with a grad scaler); the loss is computed in float32 in both libraries' way.
- detect: images in, detections on the CPU out, at batch 1 and 8 (the paper's 59 FPS is SSD300 at
  batch 8 on a Titan X, Maxwell, in Caffe), with the original SSD's settings in both libraries (scores
  > 0.01, 400 candidates per class, NMS IoU 0.45, 200 detections per image). "net only" times the
  network alone (for torchvision: its transform, backbone and head) to show what NMS costs.

What the numbers include and do not: the batch is made once, on the device (data loading and
augmentation are not timed: they depend on the disk and the workers, not on the detector). Random
weights score every class of every box above 0.01, so post-processing runs at its worst case (400
candidates for each of 20 classes per image); a trained model gives far fewer and detects faster.
Timings are the mean over --steps calls after --warmup untimed ones, synchronising the GPU.
Run `python benchmarks/bench_ssd300.py --help` for the options.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torchvision
from torch import Tensor

from ssd_lite.amp import autocast, autocast_settings, grad_scaler
from ssd_lite.loss import multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import ssd300_vgg16
from ssd_lite.nms import postprocess

IMAGE_SIZE = 300
NUM_CLASSES = 21
# The original SSD's inference settings (and torchvision's SSD defaults).
SCORE_THRESHOLD, NMS_IOU_THRESHOLD, DETECTIONS_PER_IMAGE, CANDIDATES_PER_CLASS = 0.01, 0.45, 200, 400
# SGD as in the paper (momentum 0.9, weight decay 5e-4); a small learning rate, as random weights
# would otherwise diverge within the few timed steps.
LR, MOMENTUM, WEIGHT_DECAY = 1e-4, 0.9, 5e-4
PAPER_FPS = "59 FPS: SSD300 in Caffe on a Titan X (Maxwell), batch 8 (paper, table 7)"


# ---------------------------------------------------------------------------------------------------
# The two models and a batch.

def our_model() -> torch.nn.Module:
    return ssd300_vgg16(NUM_CLASSES)


def torchvision_model() -> torch.nn.Module:
    return torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=NUM_CLASSES,
                                                     score_thresh=SCORE_THRESHOLD, nms_thresh=NMS_IOU_THRESHOLD,
                                                     detections_per_img=DETECTIONS_PER_IMAGE,
                                                     topk_candidates=CANDIDATES_PER_CLASS)


def built_once(name: str) -> torch.nn.Module:
    """The model `name`, built and seeded once on the CPU; every row copies it."""
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = MODELS[name][0]()
    return _BUILT[name]


def on_device(name: str, device: torch.device) -> torch.nn.Module:
    return copy.deepcopy(built_once(name)).to(device, memory_format=torch.channels_last)


_BUILT: dict[str, torch.nn.Module] = {}


def make_batch(batch_size: int, device: torch.device, seed: int = 0) -> tuple[Tensor, list[dict]]:
    """batch_size random 300x300 images in [0, 1] and 1 to 4 random objects each (boxes xyxy in [0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    targets = []
    for _ in range(batch_size):
        count = int(torch.randint(1, 5, (1,), generator=generator))
        corner = torch.rand(count, 2, generator=generator) * 0.6
        size = 0.1 + torch.rand(count, 2, generator=generator) * 0.3
        targets.append({"boxes": torch.cat([corner, corner + size], dim=1).to(device),
                        "labels": torch.randint(1, NUM_CLASSES, (count,), generator=generator).to(device)})
    return images.to(device, memory_format=torch.channels_last), targets


# ---------------------------------------------------------------------------------------------------
# One call of each thing timed.

def our_training_step(model, optimiser, scaler, settings, images: Tensor, targets: list[dict]) -> None:
    """ssd_lite.train.training_step's recipe, with mixed precision: match, forward, loss, update."""
    matched = [match(target["boxes"], target["labels"], model.priors) for target in targets]
    loc_targets = torch.stack([loc for loc, _ in matched])
    labels = torch.stack([label for _, label in matched])
    with autocast(settings):
        loc_pred, conf_pred = model(images)
    loc_loss, conf_loss = multibox_loss(loc_pred.float(), conf_pred.float(), loc_targets, labels)
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(loc_loss + conf_loss).backward()
    scaler.step(optimiser)
    scaler.update()


def torchvision_training_step(model, optimiser, scaler, settings, images: Tensor, targets: list[dict]) -> None:
    """torchvision's way: the model matches and computes its losses (boxes in pixels) inside forward."""
    with autocast(settings):
        losses = model(list(images), targets)
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(sum(loss.float() for loss in losses.values())).backward()
    scaler.step(optimiser)
    scaler.update()


def our_detect(model, settings, images: Tensor, network_only: bool = False):
    with torch.no_grad(), autocast(settings):
        loc_pred, conf_pred = model(images)
    if network_only:
        return loc_pred
    detections = postprocess(loc_pred.float(), conf_pred.float(), model.priors, SCORE_THRESHOLD,
                             NMS_IOU_THRESHOLD, DETECTIONS_PER_IMAGE, CANDIDATES_PER_CLASS)
    return [{key: value.cpu() for key, value in found.items()} for found in detections]


def torchvision_detect(model, settings, images: Tensor, network_only: bool = False):
    with torch.no_grad(), autocast(settings):
        if network_only:
            batch = model.transform(list(images))[0].tensors
            return model.head(list(model.backbone(batch).values()))
        detections = model(list(images))
    return [{key: value.cpu() for key, value in found.items()} for found in detections]


def seconds_per_call(function, device: torch.device, warmup: int, steps: int) -> float:
    """Mean wall-clock seconds of function(), after `warmup` untimed calls, the GPU synchronised."""
    for _ in range(warmup):
        function()
    synchronise(device)
    start = time.perf_counter()
    for _ in range(steps):
        function()
    synchronise(device)
    return (time.perf_counter() - start) / steps


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == "cuda" else None


# ---------------------------------------------------------------------------------------------------
# The rows of the table.

MODELS = {"ours": (our_model, our_training_step, our_detect),
          "torchvision": (torchvision_model, torchvision_training_step, torchvision_detect)}


def training_row(name: str, device: torch.device, batch_size: int, amp: bool, warmup: int, steps: int) -> dict:
    _, step, _ = MODELS[name]
    reset_peak_memory(device)
    model = on_device(name, device).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    settings = autocast_settings(device, amp)
    scaler = grad_scaler(settings)
    images, targets = make_batch(batch_size, device)
    if name == "torchvision":  # its targets are in pixels
        targets = [{"boxes": target["boxes"] * IMAGE_SIZE, "labels": target["labels"]} for target in targets]
    seconds = seconds_per_call(lambda: step(model, optimiser, scaler, settings, images, targets), device,
                               warmup, steps)
    return dict(model=name, task="train", batch=batch_size, precision=precision_name(settings),
                images_per_s=batch_size / seconds, ms_per_batch=1000 * seconds, peak_mib=peak_memory_mib(device))


def detection_row(name: str, device: torch.device, batch_size: int, amp: bool, warmup: int, steps: int) -> dict:
    _, _, detect = MODELS[name]
    reset_peak_memory(device)
    model = on_device(name, device).eval()
    settings = autocast_settings(device, amp)
    images, _ = make_batch(batch_size, device)
    seconds = seconds_per_call(lambda: detect(model, settings, images), device, warmup, steps)
    peak = peak_memory_mib(device)
    network_seconds = seconds_per_call(lambda: detect(model, settings, images, network_only=True), device,
                                       warmup, steps)
    return dict(model=name, task="detect", batch=batch_size, precision=precision_name(settings),
                images_per_s=batch_size / seconds, ms_per_batch=1000 * seconds, peak_mib=peak,
                network_only_images_per_s=batch_size / network_seconds)


def precision_name(settings) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[settings.dtype]


def run(device: torch.device, train_batch: int, detect_batches: list[int], warmup: int, steps: int,
        amp: bool) -> list[dict]:
    """Every row, the two models side by side; AMP rows only where amp is True (CUDA)."""
    rows = []
    precisions = [False, True] if amp else [False]
    for use_amp in precisions:
        for name in MODELS:
            rows.append(training_row(name, device, train_batch, use_amp, warmup, steps))
    for use_amp in precisions:
        for batch_size in detect_batches:
            for name in MODELS:
                rows.append(detection_row(name, device, batch_size, use_amp, warmup, steps))
    return rows


# ---------------------------------------------------------------------------------------------------
# Command line.

def describe(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return f"{name}; torch {torch.__version__}, torchvision {torchvision.__version__}"


def format_table(rows: list[dict], device_description: str) -> str:
    lines = [f"SSD300 (300x300, {NUM_CLASSES} classes, random weights) on {device_description}",
             f"{'model':<12} {'task':<7} {'batch':>5} {'prec.':>5} {'images/s':>9} {'ms/batch':>9} "
             f"{'net only img/s':>14} {'peak MiB':>9}"]
    for row in rows:
        network = f"{row['network_only_images_per_s']:14.1f}" if "network_only_images_per_s" in row else f"{'':>14}"
        peak = f"{row['peak_mib']:9.0f}" if row["peak_mib"] is not None else f"{'n/a':>9}"
        lines.append(f"{row['model']:<12} {row['task']:<7} {row['batch']:>5} {row['precision']:>5} "
                     f"{row['images_per_s']:9.1f} {row['ms_per_batch']:9.1f} {network} {peak}")
    ratios = []
    for task, batch, precision in sorted({(r["task"], r["batch"], r["precision"]) for r in rows}):
        pair = {r["model"]: r for r in rows if (r["task"], r["batch"], r["precision"]) == (task, batch, precision)}
        if len(pair) == 2:
            ratio = pair["ours"]["images_per_s"] / pair["torchvision"]["images_per_s"]
            ratios.append(f"{task} b{batch} {precision}: {ratio:.2f}x")
    lines.append("ours / torchvision, images/s (> 1: ours faster): " + ", ".join(ratios))
    lines.append(f"the paper: {PAPER_FPS}; a different GPU and framework, so compare with care")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_ssd300.py", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (only sensible with --tiny)")
    parser.add_argument("--tiny", action="store_true",
                        help="a smoke run in seconds: training batch 1, detection batches 1 and 2, one timed call "
                             "each, no warm-up (numbers meaningless; for the tests)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--detect-batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (default 5)")
    parser.add_argument("--steps", type=int, default=20, help="timed calls per row (default 20)")
    parser.add_argument("--no-amp", action="store_true", help="skip the mixed-precision rows (CUDA only anyway)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the device to this file")
    args = parser.parse_args(argv)
    if args.tiny:
        args.train_batch, args.detect_batches, args.warmup, args.steps = 1, [1, 2], 0, 1
    if min(args.train_batch, *args.detect_batches, args.steps) < 1 or args.warmup < 0:
        parser.error("batch sizes and --steps must be >= 1, --warmup >= 0")
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"unknown device {args.device!r}: expected cuda, cuda:N or cpu")
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("this benchmark needs a CUDA GPU, and torch sees none here; for a smoke run on the CPU use "
                     "--device cpu --tiny")
    if args.device.type not in ("cuda", "cpu"):
        parser.error(f"device {args.device} is not supported: expected cuda or cpu")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = args.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick the fastest kernels once
    amp = device.type == "cuda" and not args.no_amp  # ssd_lite.amp refuses AMP on the CPU
    rows = run(device, args.train_batch, args.detect_batches, args.warmup, args.steps, amp)
    description = describe(device)
    print(format_table(rows, description))
    if device.type != "cuda":
        print("(no mixed-precision rows and no peak memory: both are CUDA measurements)")
    if args.json is not None:
        args.json.write_text(json.dumps(dict(device=description, tiny=args.tiny, rows=rows), indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
