"""Training SSD: match, compute the MultiBox loss, step the optimiser (paper, section 2.2 "Training").

The loop is plain on purpose:
    for images, targets in batches:
        loc_targets, labels = match(...) for each image       # which default box predicts what
        loc_pred, conf_pred = model(images)
        loc_loss, conf_loss = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
        (loc_loss + conf_loss).backward(); optimiser.step()

What is not in the paper, and why:
- AdamW with a short linear warm-up then a cosine decay of the learning rate: a randomly initialised
  BatchNorm network converges in a few thousand steps this way (the paper fine-tunes a pretrained VGG
  with SGD for 120k steps).
- A fixed training set generated once and kept in memory as uint8 (`CachedDataset`): drawing a shapes
  image costs ~1.5 ms, so a fresh batch of 16 each step would make training about a third slower.
- A light augmentation by default (photometric distortion and flips, DEFAULT_AUGMENTATION): measured to
  reach a better mAP within a few CPU minutes than the paper's full recipe (see below).
- On the CPU, augmentation and matching run in the training process (num_workers=0): a worker process
  would compete with the network for the same few cores, and measured 15% slower per step on 2 cores.
  With CUDA, one worker prepares the next batch while the GPU computes.
- The loop stops at the first non-finite loss, naming the step, instead of training on NaN for hours.

Command line: `python -m ssd_lite.train --help`.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ssd_lite.augment import eval_transform, train_transform
from ssd_lite.data import ShapesDataset, VOCDataset
from ssd_lite.loss import multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import SSD, build_model, small_ssd

# The default run (lesson 06, `python -m ssd_lite.train` with no options). Every number here is a
# measured choice, see benchmarks/bench_training.py and lesson 06.
DEFAULT_IMAGE_SIZE = 128
# Many images seen few times beat few images seen many times: for the same 4000 steps, 16000 images x 4
# epochs reached a held-out mAP of 0.920, 8000 x 8 reached 0.905 and 4000 x 16 reached 0.892 (the network
# starts to learn the training images by heart). Generating them takes ~1.5 ms each, caching 0.8 GB.
DEFAULT_NUM_IMAGES = 16000  # training images, generated once (seed DEFAULT_SEED) and cached
DEFAULT_EPOCHS = 4
# Without --epochs, a data set of another size gets as many steps as the default run (4 x 1000 = 4000),
# so the command line takes about the same time on any folder.
DEFAULT_STEPS = 4000
# Batch 16 rather than 32: in the same few CPU minutes, twice the updates of half the size reached a
# higher held-out mAP (0.872 vs 0.848 after 12 epochs of 4000 images; batch 8 gave 0.869).
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 3e-3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_WARMUP = 0.05  # fraction of training spent raising the learning rate from ~0 to lr
# Photometric distortion and flips only: on a shared 2-core CPU the zoom out + minimum-IoU crop recipe made
# each step ~1.8x slower (RandomIoUCrop's trial loop) and reached a lower mAP in the same 5 minutes
# (0.10 vs 0.55 after 300 s, see benchmarks/bench_training.py). Pass train_transform's defaults for the
# paper's recipe, which pays off with longer training.
DEFAULT_AUGMENTATION = dict(photometric=True, zoom_out=1.0, iou_crop=False, flip=True)
DEFAULT_SEED = 0
# Held-out shapes for evaluation use a different seed, so they share no image with training.
HELD_OUT_SEED = 1000
HELD_OUT_NUM_IMAGES = 500


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA if available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers: none on the CPU (a worker would compete with the network for the same cores),
    one with CUDA (it prepares the next batch while the GPU computes)."""
    return 0 if device.type == "cpu" else 1


# ---------------------------------------------------------------------------------------------------
# Data: a cached training set, augmentation and matching in the DataLoader.

class CachedDataset(Dataset):
    """Another data set's images, resized to image_size x image_size once and kept as uint8 in memory.

    ds[i] = transform(image (3, S, S) float in [0, 1], target) -- the augmentation runs on every read,
    so each epoch still sees new random crops and flips of the cached images.
    """

    def __init__(self, dataset: Dataset, image_size: int, transform=None, progress: bool = False):
        resize = eval_transform(image_size)
        # Filled in place, without a second copy: 48 KiB per 128 px image (0.8 GB for the default run's 16000).
        self.images = torch.empty(len(dataset), 3, image_size, image_size, dtype=torch.uint8)
        self.targets = []
        for i in tqdm(range(len(dataset)), desc="caching images", disable=not progress,
                      leave=False, mininterval=1.0):
            image, target = resize(*dataset[i])
            self.images[i] = (image * 255).round().to(torch.uint8)
            self.targets.append(target)
        self.class_names = getattr(dataset, "class_names", None)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, target = self.images[index].float() / 255, self.targets[index]
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


class MatchCollate:
    """collate for a DataLoader that also matches each image's objects to the default boxes.

    Returns images (B, 3, S, S), loc_targets (B, P, 4), labels (B, P) and the list of targets.
    A class rather than a closure, so DataLoader worker processes can receive it.
    """

    def __init__(self, priors: Tensor, iou_threshold: float = 0.5):
        self.priors = priors.detach().cpu()
        self.iou_threshold = iou_threshold

    def __call__(self, batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, Tensor, Tensor, list[dict]]:
        images, targets = zip(*batch)
        matched = [match(t["boxes"], t["labels"], self.priors, self.iou_threshold) for t in targets]
        loc_targets = torch.stack([loc for loc, _ in matched])
        labels = torch.stack([lab for _, lab in matched])
        return torch.stack(images), loc_targets, labels, list(targets)


# ---------------------------------------------------------------------------------------------------
# The loop.

def learning_rate_factor(progress: float, warmup: float = DEFAULT_WARMUP) -> float:
    """Warm-up then cosine: the fraction of the peak lr at `progress` in [0, 1] of the training.

    Linear from 0.01 to 1 during the first `warmup` of training (a random network's first gradients are
    large and noisy), then half a cosine from 1 down to 0 at the end.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return 0.01 + 0.99 * progress / warmup
    return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite: training cannot recover from it."""


def train(model: SSD, dataset: Dataset, epochs: int | None = None, time_budget: float | None = None,
          batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
          weight_decay: float = DEFAULT_WEIGHT_DECAY, warmup: float = DEFAULT_WARMUP,
          seed: int = DEFAULT_SEED, num_workers: int | None = None, device: str | torch.device | None = None,
          progress: bool = True) -> dict[str, list[float]]:
    """Train `model` in place on `dataset`; return the history of the loss per step.

    dataset: items (image (3, S, S) float in [0, 1], target) at the model's input size, augmented already
      (e.g. CachedDataset(..., transform=train_transform(S))).
    epochs: passes over the data set; or time_budget: seconds of training (the schedule then follows the
      clock: reproducible only with `epochs`). Give exactly one.
    seed: seeds the shuffling and the augmentation (torch's global generator when num_workers is 0).
    num_workers: DataLoader worker processes; default 0 on the CPU, 1 with CUDA.
    Returns {"loss", "loc_loss", "conf_loss", "lr"}: one float per step.
    Raises NonFiniteLossError at the first NaN or infinite loss, naming the step.
    """
    if (epochs is None) == (time_budget is None):
        raise ValueError("give exactly one of epochs and time_budget")
    if epochs is not None and epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time_budget must be positive (seconds), got {time_budget}")
    if len(dataset) == 0:
        raise ValueError("the training data set is empty")
    device = pick_device(device)
    # channels_last: the convolutions' preferred memory layout, measured ~10% faster per step on the CPU.
    model.to(device, memory_format=torch.channels_last).train()
    if num_workers is None:
        num_workers = default_num_workers(device)

    torch.manual_seed(seed)  # the augmentation's random draws, when they run in this process
    generator = torch.Generator().manual_seed(seed)  # shuffling, and the workers' augmentation seeds
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                        collate_fn=MatchCollate(model.priors), num_workers=num_workers, generator=generator,
                        persistent_workers=num_workers > 0)
    steps_per_epoch = len(loader)
    total_steps = epochs * steps_per_epoch if epochs is not None else None
    # No weight decay on BatchNorm and bias parameters (1-D tensors): decaying them only hurts.
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    optimiser = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)

    history = {"loss": [], "loc_loss": [], "conf_loss": [], "lr": []}
    # Redraw at most once a second: in a notebook every redraw is a message to the browser, and thousands
    # of them overflow Jupyter's message queue.
    bar = tqdm(total=total_steps if total_steps is not None else round(time_budget), disable=not progress,
               desc="training", unit="step" if total_steps is not None else "s", mininterval=1.0)
    start, step, running_loss, done = time.perf_counter(), 0, None, False
    epoch = 0
    while not done:
        epoch += 1
        for images, loc_targets, labels, _ in loader:
            elapsed = time.perf_counter() - start
            fraction = step / total_steps if total_steps is not None else elapsed / time_budget
            step_lr = lr * learning_rate_factor(fraction, warmup)
            for group in optimiser.param_groups:
                group["lr"] = step_lr

            images = images.to(device, memory_format=torch.channels_last)
            loc_targets, labels = loc_targets.to(device), labels.to(device)
            loc_pred, conf_pred = model(images)
            loc_loss, conf_loss = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
            loss = loc_loss + conf_loss
            if not torch.isfinite(loss):
                bar.close()
                raise NonFiniteLossError(
                    f"the loss became {loss.item()} at step {step + 1} (epoch {epoch}): loc_loss={loc_loss.item()}, "
                    f"conf_loss={conf_loss.item()}. Training stopped: weights after a NaN are useless. Usual "
                    "causes: a bad box in the data (x_max <= x_min, a zero-size box), or a learning rate "
                    f"too high (lr={lr}).")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

            step += 1
            loss_value = loss.item()
            history["loss"].append(loss_value)
            history["loc_loss"].append(loc_loss.item())
            history["conf_loss"].append(conf_loss.item())
            history["lr"].append(step_lr)
            running_loss = loss_value if running_loss is None else 0.95 * running_loss + 0.05 * loss_value
            bar.set_postfix(loss=f"{running_loss:.3f}", epoch=epoch, refresh=False)
            if total_steps is not None:
                bar.update(1)
                done = step >= total_steps
            else:
                bar.update(min(round(time.perf_counter() - start), bar.total) - bar.n)
                done = time.perf_counter() - start >= time_budget
            if done:
                break
    bar.close()
    model.eval()
    return history


# ---------------------------------------------------------------------------------------------------
# Checkpoints.

def save_checkpoint(path: str | Path, model: SSD, class_names: Sequence[str], **settings) -> dict:
    """Save the weights with everything needed to rebuild the model and use it.

    The file holds "model_state", "model_config" (model.config, for ssd_lite.model.build_model),
    "class_names", "image_size" and any `settings` given (training options, data description, history).
    Returns the dict saved.
    """
    class_names = tuple(class_names)
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {model.num_classes} classes")
    checkpoint = {"model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                  "model_config": dict(model.config), "class_names": class_names,
                  "image_size": model.image_size, **settings}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return checkpoint


def load_checkpoint(path: str | Path, class_names: Sequence[str] | None = None,
                    device: str | torch.device | None = None) -> tuple[SSD, dict]:
    """Rebuild the model saved by save_checkpoint: returns (model in eval mode on `device`, checkpoint dict).

    class_names: if given, the checkpoint must have been trained for exactly these classes (in this
    order); a ValueError says what differs otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint or "model_config" not in checkpoint:
        raise ValueError(f"{path} is not an ssd_lite checkpoint (made by ssd_lite.train.save_checkpoint)")
    saved_names = tuple(checkpoint["class_names"])
    if class_names is not None and tuple(class_names) != saved_names:
        raise ValueError(f"{path} was trained for the classes {saved_names}, not {tuple(class_names)}: "
                         "its class scores would be read as the wrong objects. Train a model for your "
                         "classes, or pass the checkpoint's own class names.")
    model = build_model(**checkpoint["model_config"])
    model.load_state_dict(checkpoint["model_state"])
    return model.to(pick_device(device)).eval(), checkpoint


# ---------------------------------------------------------------------------------------------------
# The default model of the course (lessons 06 and 07).

def default_model(num_classes: int, image_size: int = DEFAULT_IMAGE_SIZE) -> SSD:
    """The course's model for simple objects: small_ssd with 4 maps (16, 8, 4, 2 at 128 px) and boxes
    of scales 0.1 to 0.7 with aspect ratios 1, 2, 1/2, 3, 1/3 (6 per cell)."""
    return small_ssd(num_classes, image_size=image_size, s_min=0.1, s_max=0.7, aspect_ratios=[(2, 3)] * 4)


def default_settings() -> dict:
    """The training settings of the default run, as stored in its checkpoint (and compared on reuse)."""
    return dict(data=dict(kind="shapes", seed=DEFAULT_SEED, num_images=DEFAULT_NUM_IMAGES,
                          image_size=DEFAULT_IMAGE_SIZE, held_out_seed=HELD_OUT_SEED,
                          held_out_num_images=HELD_OUT_NUM_IMAGES),
                augmentation=dict(DEFAULT_AUGMENTATION), epochs=DEFAULT_EPOCHS, batch_size=DEFAULT_BATCH_SIZE,
                lr=DEFAULT_LR,
                weight_decay=DEFAULT_WEIGHT_DECAY, warmup=DEFAULT_WARMUP, seed=DEFAULT_SEED)


def train_default_model(path: str | Path | None = None, progress: bool = True,
                        device: str | torch.device | None = None) -> tuple[SSD, dict]:
    """The course's trained shapes model: load `path` if it holds a checkpoint of the default settings,
    else train it (a few minutes on a CPU) and save it there. Returns (model in eval mode, checkpoint)."""
    settings = default_settings()
    if path is not None and Path(path).exists():
        model, checkpoint = load_checkpoint(path, device=device)
        if all(checkpoint.get(key) == value for key, value in settings.items()):
            return model, checkpoint
    torch.manual_seed(settings["seed"])
    data = settings["data"]
    shapes = ShapesDataset(data["num_images"], image_size=data["image_size"], seed=data["seed"])
    model = default_model(len(shapes.class_names), data["image_size"])
    augment = train_transform(data["image_size"], **settings["augmentation"])
    dataset = CachedDataset(shapes, data["image_size"], augment, progress=progress)
    started = time.perf_counter()
    history = train(model, dataset, epochs=settings["epochs"], batch_size=settings["batch_size"],
                    lr=settings["lr"], weight_decay=settings["weight_decay"], warmup=settings["warmup"],
                    seed=settings["seed"], device=device, progress=progress)
    settings["train_seconds"] = round(time.perf_counter() - started, 1)
    checkpoint = {"class_names": shapes.class_names, **settings, "history": history}
    if path is not None:
        checkpoint = save_checkpoint(path, model, shapes.class_names, **settings, history=history)
    return model, checkpoint


# ---------------------------------------------------------------------------------------------------
# Command line.

def default_epochs(num_images: int, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Epochs giving about DEFAULT_STEPS steps on a data set of num_images (4 for the default shapes)."""
    steps_per_epoch = max(num_images // batch_size, 1)
    return max(round(DEFAULT_STEPS / steps_per_epoch), 1)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ssd_lite.train",
        description="Train the course's small SSD on the built-in synthetic shapes, or on a Pascal VOC "
                    "folder (split ImageSets/Main/train.txt), and save a checkpoint.")
    parser.add_argument("--data", type=Path, default=None,
                        help="a VOC folder (JPEGImages/, Annotations/, ImageSets/Main/train.txt); "
                             "default: the built-in shapes")
    parser.add_argument("--classes", default=None,
                        help="comma-separated class names, e.g. cat,dog (default: those found in the "
                             "annotations, sorted)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None,
                        help=f"passes over the data (default: about {DEFAULT_STEPS} steps, i.e. {DEFAULT_EPOCHS} "
                             f"epochs of the {DEFAULT_NUM_IMAGES} built-in images)")
    length.add_argument("--time-budget", type=float, default=None,
                        help="train for this many seconds instead of a number of epochs (not reproducible)")
    parser.add_argument("--out", type=Path, required=True, help="where to save the checkpoint (.pt)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE,
                        help=f"network input side in pixels, a multiple of 64 (default {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                        help=f"built-in shapes only: training images to generate (default {DEFAULT_NUM_IMAGES})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"peak learning rate (default {DEFAULT_LR})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes (default: 0 on the CPU, 1 with CUDA)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    if args.data is None:
        if args.classes is not None:
            parser.error("--classes only applies to --data (the shapes' classes are fixed)")
        source = ShapesDataset(args.num_images, image_size=args.image_size, seed=args.seed)
        data = dict(kind="shapes", seed=args.seed, num_images=args.num_images, image_size=args.image_size,
                    held_out_seed=HELD_OUT_SEED + args.seed, held_out_num_images=HELD_OUT_NUM_IMAGES)
    else:
        class_names = None
        if args.classes is not None:
            class_names = ("background", *[name.strip() for name in args.classes.split(",") if name.strip()])
        source = VOCDataset(args.data, split="train", class_names=class_names)
        data = dict(kind="voc", root=str(args.data.resolve()), split="train", num_images=len(source))
    class_names = tuple(source.class_names)
    model = default_model(len(class_names), args.image_size)
    dataset = CachedDataset(source, args.image_size, train_transform(args.image_size, **DEFAULT_AUGMENTATION),
                            progress=not args.no_progress)
    if args.epochs is None and args.time_budget is None:
        args.epochs = default_epochs(len(dataset), args.batch_size)
    started = time.perf_counter()
    history = train(model, dataset, epochs=args.epochs, time_budget=args.time_budget,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed, num_workers=args.workers,
                    device=args.device, progress=not args.no_progress)
    seconds = time.perf_counter() - started
    save_checkpoint(args.out, model, class_names, data=data, augmentation=dict(DEFAULT_AUGMENTATION),
                    epochs=args.epochs, time_budget=args.time_budget, batch_size=args.batch_size, lr=args.lr, weight_decay=DEFAULT_WEIGHT_DECAY,
                    warmup=DEFAULT_WARMUP, seed=args.seed, train_seconds=round(seconds, 1), history=history)
    print(f"trained {len(history['loss'])} steps in {seconds:.0f} s, final loss {history['loss'][-1]:.3f}; "
          f"saved {args.out}")


if __name__ == "__main__":
    main()
