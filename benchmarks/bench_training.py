"""Benchmark: does the default training run reach its targets? (not a test: it takes minutes)

Targets (the course's promise): the default run, `python -m ssd_lite.train --out model.pt`, trains on a
2-core CPU in at most 5 minutes and reaches mAP@0.5 >= 0.90 on held-out shapes (moonshot 0.95); and the same
command given another VOC folder of simple objects learns it comparably (here: shapes of another image size
and seed, exported with write_voc, so that nothing is tuned to the built-in generator's exact output).

Usage:
    python benchmarks/bench_training.py [--threads 2] [--skip-voc] [--epochs N] [--out-dir DIR]
Prints: images cached, steps, steps/s, training seconds, held-out mAP (VOC all-point, IoU 0.5), the load
average (other processes on the machine slow the run down: compare steps/s with the load).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from ssd_lite.detect import predict_dataset
from ssd_lite.evaluate import mean_average_precision
from ssd_lite.shapes import ShapesDataset
from ssd_lite.checkpoint import load_checkpoint
from ssd_lite.train import main as train_main
from ssd_lite.voc import VOCDataset, write_voc


def evaluate(checkpoint_path: Path, held_out) -> float:
    model, _ = load_checkpoint(checkpoint_path)
    detections, targets = predict_dataset(model, held_out)
    return mean_average_precision(detections, targets, num_classes=model.num_classes)["map"]


def report(name: str, checkpoint_path: Path, held_out) -> None:
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    steps, seconds = len(checkpoint["history"]["loss"]), checkpoint["train_seconds"]
    started = time.perf_counter()
    mean_ap = evaluate(checkpoint_path, held_out)
    print(f"{name}: {checkpoint['data']['num_images']} training images, {steps} steps in {seconds:.0f} s "
          f"({steps / seconds:.2f} steps/s), final loss {sum(checkpoint['history']['loss'][-50:]) / 50:.3f}; "
          f"held-out mAP@0.5 = {mean_ap:.4f} on {len(held_out)} images "
          f"(evaluation {time.perf_counter() - started:.0f} s); load average {os.getloadavg()}", flush=True)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the command line's default")
    parser.add_argument("--skip-voc", action="store_true", help="only the built-in shapes")
    parser.add_argument("--skip-shapes", action="store_true", help="only the VOC folder")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to keep checkpoints (default: temporary)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {os.getloadavg()}")

    with tempfile.TemporaryDirectory() as scratch:
        out_dir = args.out_dir or Path(scratch)
        out_dir.mkdir(parents=True, exist_ok=True)

        # --threads passed on: without it the command line picks the cores free at its start, which the
        # benchmark's own image generation can make look busy.
        options = ["--epochs", str(args.epochs)] if args.epochs else []
        options += ["--threads", str(args.threads)]
        if not args.skip_shapes:
            # 1. The default run on the built-in shapes, exactly the command line's code path.
            shapes_checkpoint = out_dir / "shapes.pt"
            started = time.perf_counter()
            train_main([*options, "--out", str(shapes_checkpoint), "--no-progress"])
            print(f"default run: {time.perf_counter() - started:.0f} s in all (generating and caching included)")
            data = torch.load(shapes_checkpoint, weights_only=True)["data"]
            # Drawn as the training images were (128 px), then enlarged to the model's input by predict.
            held_out = ShapesDataset(data["held_out_num_images"], image_size=data["draw_size"],
                                     seed=data["held_out_seed"])
            report("shapes (default)", shapes_checkpoint, held_out)

        if args.skip_voc:
            return
        # 2. The same command line on a VOC folder: shapes of another size (160 px, resized to the model's 192)
        # and other seeds, read back from JPEG files.
        voc = out_dir / "voc_shapes160"
        if not (voc / "ImageSets" / "Main" / "val.txt").exists():
            write_voc(ShapesDataset(4000, image_size=160, seed=5), voc, split="train")
            write_voc(ShapesDataset(500, image_size=160, seed=6), voc, split="val", start_index=4000)
        voc_checkpoint = out_dir / "voc.pt"
        started = time.perf_counter()
        train_main(["--data", str(voc), *options, "--out", str(voc_checkpoint), "--no-progress"])
        print(f"VOC run: {time.perf_counter() - started:.0f} s in all (reading and caching included)")
        class_names = torch.load(voc_checkpoint, weights_only=True)["class_names"]
        report("VOC folder (shapes 160 px, seeds 5/6)", voc_checkpoint,
               VOCDataset(voc, split="val", class_names=class_names))


if __name__ == "__main__":
    run()
