"""The command line `python -m ssd_lite.train`: flags, their checks, resuming, and starting the run.

Everything here runs before (or around) the training itself, which is ssd_lite.train's: every flag is
checked before any work (a bad flag or a conflicting --resume costs a second, not minutes of data
preparation), under torchrun every process joins the group first, and process 0 speaks for all of them.
`python -m ssd_lite.train --help` lists the flags; ssd_lite.train's docstring explains the recipes.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch

from ssd_lite import cli, distributed
from ssd_lite.amp import autocast_settings
from ssd_lite.checkpoint import CheckpointError, check_output_path, read_checkpoint
from ssd_lite.device import use_threads
from ssd_lite.model import vgg16_backbone_weights
from ssd_lite.train import (DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE, DEFAULT_LR,
                            DEFAULT_NUM_IMAGES, DEFAULT_SEED, DEFAULT_STEPS, HELD_OUT_NUM_IMAGES, HELD_OUT_SEED,
                            MODELS, OBJECTIVES, RECIPES, SHAPES_DRAW_SIZE, VOC_STEPS, TrainingInterrupted,
                            default_settings, run_training)
from ssd_lite.voc import VOC_CLASS_NAMES, read_split



def class_list(text: str) -> tuple[str, ...]:
    """--classes: comma-separated, distinct names, or "voc" for the 20 Pascal VOC classes in their usual
    order; "background" is label 0's and cannot be a class."""
    if text.strip().lower() == "voc":
        return ("background", *VOC_CLASS_NAMES)
    names = [name.strip() for name in text.split(",")]
    if not any(names):
        raise argparse.ArgumentTypeError("needs at least one class name, e.g. --classes cat,dog")
    if "" in names:
        raise argparse.ArgumentTypeError(f"has an empty name in {text!r}: remove the extra comma")
    if "background" in (name.lower() for name in names):
        raise argparse.ArgumentTypeError("must not name 'background': label 0 is background already; "
                                         "list only your object classes")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise argparse.ArgumentTypeError(f"names {', '.join(duplicates)} more than once: each class once")
    return ("background", *names)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ssd_lite.train",
        description="Train SSD (the course's small model, or the paper's SSD300) on the built-in synthetic "
                    "shapes or on Pascal VOC folders, and save a checkpoint; --resume continues a saved run. "
                    "Flags left out take the recipe's value (--recipe).")
    parser.add_argument("--model", choices=MODELS, default=None,
                        help="default: the course's small CPU model (default); ssd300_vgg16: the paper's SSD300 "
                             "(VGG16 base, 300x300 input)")
    parser.add_argument("--recipe", choices=tuple(RECIPES), default=None,
                        help=f"course (default): AdamW, lr {DEFAULT_LR}, batch {DEFAULT_BATCH_SIZE}, cosine "
                             f"decay, light augmentation, {DEFAULT_IMAGE_SIZE} px; voc: the paper's SSD300 recipe, "
                             f"SGD momentum 0.9, lr 1e-3, weight decay 5e-4, batch 32, {VOC_STEPS} steps with lr/10 "
                             "at 80k and 100k, full augmentation, 300 px (see the module's documentation)")
    parser.add_argument("--data", type=Path, action="append", default=None,
                        help="a VOC folder (JPEGImages/, Annotations/, ImageSets/Main/<split>.txt); give it "
                             "several times to train on several (e.g. VOC2007 and VOC2012); default: the "
                             "built-in shapes")
    parser.add_argument("--split", action="append", default=None,
                        help="the split to train on (ImageSets/Main/<split>.txt): once for every --data "
                             "folder, or once per folder in the same order (default: train)")
    parser.add_argument("--classes", type=class_list, default=None,
                        help="comma-separated class names, e.g. cat,dog, or 'voc' for the 20 Pascal VOC classes "
                             "(default: those found in the annotations of all folders, sorted)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=cli.positive_int, default=None,
                        help=f"passes over the data (course recipe default: about {DEFAULT_STEPS} steps, i.e. "
                             f"{DEFAULT_EPOCHS} epochs of the {DEFAULT_NUM_IMAGES} built-in images)")
    length.add_argument("--steps", type=cli.positive_int, default=None,
                        help=f"training steps (voc recipe default: {VOC_STEPS}); with --resume, the run's new total")
    length.add_argument("--time-budget", type=cli.positive_float, default=None,
                        help="train for this many seconds, the schedule following the clock (not "
                             "reproducible); with --resume: this many more seconds")
    parser.add_argument("--out", type=Path, required=True,
                        help="where to save the checkpoint (.pt); an existing file is replaced only if it "
                             "is an ssd_lite checkpoint")
    parser.add_argument("--image-size", type=cli.positive_int, default=None,
                        help=f"network input side in pixels: for the default model a multiple of 64 (default "
                             f"{DEFAULT_IMAGE_SIZE}); ssd300_vgg16 takes 300 only. The built-in shapes are "
                             f"drawn at {SHAPES_DRAW_SIZE} px and resized to it")
    parser.add_argument("--num-images", type=cli.positive_int, default=None,
                        help=f"built-in shapes only: training images to generate (default {DEFAULT_NUM_IMAGES})")
    parser.add_argument("--batch-size", type=cli.positive_int, default=None,
                        help="images per step (default: the recipe's)")
    parser.add_argument("--lr", type=cli.positive_float, default=None,
                        help=f"peak learning rate (default: the recipe's, {DEFAULT_LR} for course)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seeds the weights, the data order and the augmentation (default {DEFAULT_SEED})")
    parser.add_argument("--loss", choices=tuple(OBJECTIVES), default=None,
                        help="mining: SSD's softmax loss with hard negative mining (default); focal: RetinaNet's "
                             "focal loss over every default box, with sigmoid class scores (lesson 08)")
    parser.add_argument("--backbone-weights", default=None, metavar="imagenet|PATH",
                        help="ssd300_vgg16 only: start its VGG16 part from torchvision's ImageNet weights "
                             "(imagenet: VGG16_Weights.IMAGENET1K_FEATURES, downloaded once into torch hub's "
                             "cache) or from a file in torchvision's VGG16 layout (default: random weights)")
    parser.add_argument("--save-every", type=cli.positive_int, default=None, metavar="N",
                        help="also save the checkpoint (resumable) every N steps (default: only at the end "
                             "and on Ctrl-C)")
    parser.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                        help="continue the run saved in CKPT, exactly where it stopped (its settings are kept; "
                             "default length: the steps or seconds it has left)")
    parser.add_argument("--workers", type=cli.non_negative_int, default=None,
                        help="DataLoader worker processes (default: 0 on the CPU, 1 with CUDA)")
    parser.add_argument("--no-save-on-interrupt", action="store_true",
                        help="on Ctrl-C, save nothing (default: save the steps trained so far, marked "
                             "as interrupted, resumable)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision on CUDA GPUs: bfloat16 where the GPU has it (compute capability >= 8), "
                             "else float16 with a grad scaler; refused on the CPU")
    parser.add_argument("--sync-bn", action="store_true",
                        help="under torchrun on GPUs: BatchNorm statistics over the whole batch (SyncBatchNorm) "
                             "instead of each process's share (the default model; SSD300 has no BatchNorm)")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default=None,
                        help="under torchrun: how the processes exchange gradients (default: nccl on CUDA GPUs, "
                             "gloo on the CPU)")
    cli.add_common_flags(parser)
    args = parser.parse_args(argv)
    _check_flags(parser, args)
    return args


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks that need several flags at once; each ends the program with a usage error."""
    for folder in args.data or []:
        if not folder.is_dir():
            parser.error(f"--data must be a VOC folder, got {folder} (not a folder)")
    if args.data is not None and args.split is not None and len(args.split) not in (1, len(args.data)):
        parser.error(f"give --split once (for every folder) or once per --data folder ({len(args.data)}), "
                     f"got {len(args.split)}")
    if args.resume is not None:
        return  # the run's own settings: resumed_settings compares the flags given with them
    if args.data is None and args.classes is not None:
        parser.error("--classes only applies to --data (the shapes' classes are fixed)")
    if args.data is None and args.split is not None:
        parser.error("--split only applies to --data")
    model, recipe = args.model or "default", args.recipe or "course"
    if model == "ssd300_vgg16" and args.image_size not in (None, 300):
        parser.error(f"argument --image-size: --model ssd300_vgg16 takes 300x300 images (SSD300), got "
                     f"{args.image_size}: leave --image-size out")
    if model == "default":
        size = args.image_size or RECIPES[recipe]["image_size"]
        if size % 64 and args.image_size is None:
            parser.error(f"--recipe {recipe} trains at {size} px, which the default model cannot take (it "
                         "halves its input 6 times, so needs a multiple of 64): add --model ssd300_vgg16, or "
                         "give --image-size (e.g. 320)")
        if size % 64:
            parser.error(f"argument --image-size: must be a multiple of 64 (the default model halves it 6 "
                         f"times), got {size}")
        if args.backbone_weights is not None:
            parser.error("--backbone-weights loads VGG16 weights: it only applies to --model ssd300_vgg16")


def voc_folder(root: Path, split: str) -> dict:
    """How a run records one VOC folder: where it is, which split, and a fingerprint of the split's ids
    (a resumed run must see the very same images). Reads only the split file."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"no VOC folder {root}")
    ids = read_split(root, split)
    return dict(root=str(Path(root).resolve()), split=split, num_images=len(ids),
                ids_sha256=hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16])


def settings_from_args(args: argparse.Namespace) -> dict:
    """A new run's settings: the recipe's, with every flag given explicitly in their place."""
    recipe = RECIPES[args.recipe or "course"]
    model = args.model or "default"
    image_size = args.image_size or (300 if model == "ssd300_vgg16" else recipe["image_size"])
    seed = args.seed if args.seed is not None else DEFAULT_SEED
    if args.data is None:
        data = dict(kind="shapes", seed=seed, num_images=args.num_images or DEFAULT_NUM_IMAGES,
                    image_size=image_size, draw_size=SHAPES_DRAW_SIZE, held_out_seed=HELD_OUT_SEED + seed,
                    held_out_num_images=HELD_OUT_NUM_IMAGES)
    else:
        splits = args.split or ["train"]
        splits = splits * len(args.data) if len(splits) == 1 else splits
        data = dict(kind="voc", folders=[voc_folder(root, split) for root, split in zip(args.data, splits)],
                    class_names=args.classes, image_size=image_size)
    length_given = any(value is not None for value in (args.epochs, args.steps, args.time_budget))
    backbone = args.backbone_weights
    if backbone is not None and backbone != "imagenet":
        backbone = str(Path(backbone).resolve())
    return {**default_settings(), "model": model, "backbone_weights": backbone, "recipe": args.recipe or "course",
            "data": data, "augmentation": dict(recipe["augmentation"]), "epochs": args.epochs,
            "steps": args.steps if length_given else recipe["steps"], "time_budget": args.time_budget,
            "batch_size": args.batch_size or recipe["batch_size"], "optimiser": recipe["optimiser"],
            "lr": args.lr or recipe["lr"], "momentum": recipe["momentum"], "weight_decay": recipe["weight_decay"],
            "warmup": recipe["warmup"], "milestones": recipe["milestones"], "seed": seed,
            "loss": args.loss or "mining", "cache_images": recipe["cache_images"]}


def resumed_settings(checkpoint: dict, args: argparse.Namespace) -> tuple[dict, float | None]:
    """The settings to continue the run saved in `checkpoint`, and the seconds to stop after (or None).

    The run keeps its settings: flags that describe it (--model, --classes, --data, --recipe, --lr, ...)
    may be repeated but must agree with it (--data may name the same folders moved elsewhere); anything
    else is refused here, before any work. Its length: by default the steps or seconds it has left;
    --steps / --epochs give a new total; --time-budget T trains T more seconds (a run scheduled by the
    clock is stretched to end then; one scheduled in steps stops then, to be resumed again).
    """
    path, state = args.resume, checkpoint.get("resume")
    if state is None:
        raise CheckpointError(f"{path} holds no training state to resume (saved by an ssd_lite older than "
                              "--resume, or not by ssd_lite.train): start a new run instead")
    settings = {key: checkpoint.get(key, value) for key, value in default_settings().items()}
    _check_same_run(checkpoint, settings, args)
    settings["data"] = _resumed_data(settings["data"], args)
    stop_after, clock = None, settings["time_budget"] is not None
    if args.steps is not None or args.epochs is not None:
        if clock:
            raise ValueError(f"{path} is a run scheduled by the clock (--time-budget): resume it with "
                             "--time-budget, not a number of steps or epochs")
        settings.update(steps=args.steps, epochs=args.epochs)
    elif args.time_budget is not None:
        if clock:
            settings["time_budget"] = state["seconds"] + args.time_budget
        else:
            stop_after = args.time_budget
    steps_per_epoch = max(state["num_items"] // state["batch_size"], 1)
    total = settings["steps"] or (settings["epochs"] or 0) * steps_per_epoch
    if (not clock and state["step"] >= total) or (clock and state["seconds"] >= settings["time_budget"]):
        done = (f"{state['seconds']:.0f} s of {settings['time_budget']:.0f}" if clock else
                f"{state['step']} steps of {total}")
        raise ValueError(f"{path} has finished its run ({done}): nothing to resume. Train longer with "
                         + ("--time-budget SECONDS" if clock else f"--steps (a new total above {state['step']})"))
    return settings, stop_after


def _check_same_run(checkpoint: dict, settings: dict, args: argparse.Namespace) -> None:
    path = args.resume
    backbone = args.backbone_weights
    if backbone is not None and backbone != "imagenet":
        backbone = str(Path(backbone).resolve())
    recorded = {"model": (args.model, settings["model"]), "recipe": (args.recipe, settings["recipe"]),
                "loss": (args.loss, settings["loss"]), "lr": (args.lr, settings["lr"]),
                "batch_size": (args.batch_size, settings["batch_size"]), "seed": (args.seed, settings["seed"]),
                "image_size": (args.image_size, settings["data"]["image_size"]),
                "backbone_weights": (backbone, settings["backbone_weights"])}
    if settings["data"]["kind"] == "shapes":
        recorded["num_images"] = (args.num_images, settings["data"]["num_images"])
    for key, (given, value) in recorded.items():
        flag = "--" + key.replace("_", "-")
        if given is not None and given != value:
            raise ValueError(f"{flag} {given} does not match {path}, a run with {flag} {value}: a resumed run "
                             f"keeps its settings (leave {flag} out, or start a new run)")
    if args.classes is not None and tuple(args.classes) != tuple(checkpoint["class_names"]):
        raise ValueError(f"--classes {','.join(args.classes[1:])} do not match {path}, trained for the classes "
                         f"{','.join(checkpoint['class_names'][1:])}: a resumed run keeps its classes")


def _resumed_data(data: dict, args: argparse.Namespace) -> dict:
    """The resumed run's data: its own, at the places --data gives if they moved, checked to be the same."""
    path = args.resume
    if data["kind"] == "shapes":
        if args.data is not None:
            raise ValueError(f"{path} was trained on the built-in shapes, not on VOC folders: leave --data out")
        return data
    folders = data["folders"]
    roots = args.data or [Path(folder["root"]) for folder in folders]
    splits = args.split or [folder["split"] for folder in folders]
    splits = splits * len(roots) if len(splits) == 1 else splits
    if len(roots) != len(folders):
        raise ValueError(f"{path} was trained on {len(folders)} VOC folder(s) "
                         f"({', '.join(folder['root'] for folder in folders)}), but --data gives {len(roots)}")
    resumed = []
    for folder, root, split in zip(folders, roots, splits):
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{path} was trained on {root}, which is no longer there: if it moved, give "
                                    "its new place with --data")
        current = voc_folder(root, split)
        if current["ids_sha256"] != folder["ids_sha256"]:
            raise ValueError(f"{root} (split {split}) lists other images than the run in {path} was trained on "
                             f"({current['num_images']} now, {folder['num_images']} then): a resumed run must "
                             "see the same images, in the same order")
        resumed.append(current)
    return {**data, "folders": resumed}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Under torchrun: join the other processes first (NCCL on this process's GPU, or gloo on the CPU); a
    # partial launcher environment or NCCL without GPUs is refused here. Without torchrun: the device.
    device = distributed.init(backend=args.backend, device=args.device)
    try:
        return _train_from_command_line(args, device)
    finally:
        distributed.cleanup()


def _train_from_command_line(args: argparse.Namespace, device: torch.device) -> int:
    say = print if distributed.is_main_process() else lambda *_, **__: None  # one process speaks for all
    # Every check that can fail before the work starts, in every process: a refused run writes nothing.
    _check_parallel_flags(args, device)
    if check_output_path(args.out):
        say(f"note: {args.out} is an ssd_lite checkpoint; it will be replaced when training ends")
    threads = use_threads(args.threads)
    backbone, checkpoint, stop_after = None, None, None
    if args.resume is not None:
        checkpoint = read_checkpoint(args.resume)
        settings, stop_after = resumed_settings(checkpoint, args)
    else:
        settings = settings_from_args(args)
    distributed.per_rank_batch_size(settings["batch_size"])  # under torchrun: the processes share each batch
    if checkpoint is not None:
        state = checkpoint["resume"]
        say(f"resuming {args.resume}: {state['step']} steps done ({state['seconds']:.0f} s of training)")
    elif settings["backbone_weights"] is not None:
        # Read now, so that an offline machine or a wrong file is reported before any data is prepared.
        backbone = _process_0_first(lambda: vgg16_backbone_weights(settings["backbone_weights"]))
        say(f"VGG16 base from {settings['backbone_weights']}; inputs standardised with mean "
            f"{tuple(round(m, 5) for m in backbone[1])}, std {tuple(round(s, 5) for s in backbone[2])}")
    elif settings["model"] == "ssd300_vgg16":
        say("note: SSD300 starts from random weights; the paper's results need a pretrained VGG16 "
            "(--backbone-weights imagenet)")
    progress = not args.no_progress and distributed.is_main_process()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size throughout: let cuDNN pick its fastest kernels
    say(f"training on {device}, {threads} CPU thread(s)" + _processes_line(args))
    try:
        model, saved = run_training(settings, args.out, device=device, progress=progress,
                                    num_workers=args.workers, save_on_interrupt=not args.no_save_on_interrupt,
                                    save_every=args.save_every, backbone=backbone, resume=checkpoint,
                                    stop_after=stop_after, amp=args.amp, sync_bn=args.sync_bn)
    except TrainingInterrupted as stop:
        kept = stop.step > 0 and not args.no_save_on_interrupt
        if distributed.is_main_process():
            print(f"interrupted after {stop.step} steps; " +
                  (f"saved them to {args.out} (marked as interrupted; --resume {args.out} continues)" if kept
                   else "nothing saved"), file=sys.stderr)
        return 130
    history = saved["history"]
    steps_before, seconds_before = (state["step"], state["seconds"]) if checkpoint else (0, 0)
    say(f"trained {saved['steps_done'] - steps_before} steps in {saved['train_seconds'] - seconds_before:.0f} s, "
        f"final loss {history['loss'][-1]:.3f}; saved {args.out}" +
        (f" (the run: {saved['steps_done']} steps, {saved['train_seconds']:.0f} s)" if checkpoint else ""))
    if not saved["finished"]:
        say(f"the run is not finished: continue it with --resume {args.out}")
    return 0


def _check_parallel_flags(args: argparse.Namespace, device: torch.device) -> None:
    """--amp, --sync-bn and --backend against the device this process trains on (each a ValueError)."""
    autocast_settings(device, args.amp)  # --amp on the CPU: refused, saying why
    if args.sync_bn:
        distributed.check_sync_bn(device)
    if args.backend is not None:
        distributed.choose_backend(args.backend, device)  # also without torchrun: NCCL needs GPUs


def _process_0_first(load: Callable[[], object]):
    """load() in process 0 first, then in the others: eight processes downloading the same weights into
    torch hub's cache at once would fetch them eight times; after process 0 the others find them there."""
    if not distributed.is_main_process():
        torch.distributed.barrier()
    loaded = load()
    if distributed.is_main_process() and distributed.is_distributed():
        torch.distributed.barrier()
    return loaded


def _processes_line(args: argparse.Namespace) -> str:
    """How the run is spread over processes, for the "training on" line."""
    if not distributed.is_distributed():
        return ""
    return (f", {distributed.world_size()} processes (DistributedDataParallel, "
            f"{torch.distributed.get_backend()}{', SyncBatchNorm' if args.sync_bn else ''})")


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m ssd_lite.train"))
