"""Training SSD: match, compute the MultiBox loss, step the optimiser (paper, section 2.2 "Training").

One training step, `training_step`, is the paper's recipe in four lines:
    loc_targets, labels = match(...) for each image        # which default box predicts what
    loc_pred, conf_pred = model(images)                    # offsets and class scores for every box
    loc_loss, conf_loss = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    (loc_loss + conf_loss).backward(); optimiser.step()
and `train` repeats it over the data, with a learning-rate schedule and a progress bar.

Two recipes (`--recipe course|voc`; any flag given explicitly overrides the recipe's value):
- "course" (the default, COURSE_RECIPE): the small BatchNorm model on the shapes (drawn at 128 px, seen
  by the model at 192 px), trained from random weights in a few CPU minutes. What differs from the paper, and why:
  - AdamW with a short linear warm-up then a cosine decay of the learning rate: a randomly initialised
    BatchNorm network converges in a few thousand steps this way (the paper fine-tunes a pretrained VGG
    with SGD for 120k steps).
  - A fixed training set generated once and kept in memory as uint8 (`ssd_lite.data.CachedDataset`):
    drawing a shapes image costs ~1.5 ms, so a fresh batch of 16 each step would make training about a
    third slower.
  - A light augmentation (photometric distortion and flips, DEFAULT_AUGMENTATION): measured to reach a
    better mAP within a few CPU minutes than the paper's full recipe (see below).
  - On the CPU, augmentation runs in the training process (num_workers=0): a worker process would compete
    with the network for the same few cores, and measured 15% slower per step on 2 cores. With CUDA, one
    worker prepares the next batch while the GPU computes.
- "voc" (VOC_RECIPE): the paper's SSD300 recipe as the SSD code bases run it on Pascal VOC07+12 (the
  original Caffe solver, torchvision's, mmdetection's and lufficc/SSD's): SGD with momentum 0.9, lr 1e-3,
  weight decay 5e-4, batch 32, 120k steps with the lr divided by 10 at 80k and 100k, after a short linear
  warm-up; the full augmentation at 300 px (photometric distortion, zoom out up to 4x, minimum-IoU crops,
  flips); images read from their files at every step (a VOC photo is larger than 300 px, and the crops
  are cut from the full photo). It needs a GPU: hours there, months on a CPU. With a pretrained VGG16
  (--backbone-weights imagenet) it is the recipe behind the README's anchors (77.2 to 77.8 mAP on VOC2007
  test in the SSD code bases).
With --time-budget the schedule follows the clock instead of the steps: warm-up, decays and end fall at
the same fractions of the budget (so `--recipe voc --time-budget 60` is the voc recipe squeezed into a
minute; reproducible only when the length is given in steps or epochs).

Resuming: every `--save-every N` steps, on Ctrl-C and at the end, the checkpoint also holds the run's
state: optimiser, step, and random generators (`ssd_lite.checkpoint.rng_states`). The data order is a
function of (seed, epoch) (`ShuffledBatches`), so step s always trains on the same images; a run resumed
with `--resume CKPT` therefore repeats, step for step, what the unbroken run would have done (exactly with
num_workers=0, the CPU default; with workers the images are the same but their random augmentations are
not).

The loop stops at the first non-finite loss, naming the step, instead of training on NaN for hours; Ctrl-C
stops it with the steps trained so far kept (TrainingInterrupted), and the command line saves them.

Several GPUs (or CPU processes): `torchrun --nproc_per_node=N -m ssd_lite.train ...` starts N copies of this
program; each joins the group (`ssd_lite.distributed`), wraps the model in DistributedDataParallel and trains
on its share of every batch (--batch-size stays the WHOLE batch), with the MultiBox loss divided by the N of
the whole batch (`distributed.with_global_n`); process 0 alone shows progress and writes checkpoints. Step s
trains on the same images whatever the number of processes, so --resume stays exact. With CUDA, --amp
trains in mixed precision (`ssd_lite.amp`). Started with plain `python -m`, all of this does nothing.

Command line: `python -m ssd_lite.train --help`.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from ssd_lite import cli, distributed
from ssd_lite.amp import AmpSettings, autocast, autocast_settings, grad_scaler
from ssd_lite.augment import train_transform
from ssd_lite.checkpoint import CheckpointError, load_checkpoint, restore_rng_states, rng_states, save_checkpoint
from ssd_lite.data import CachedDataset, collate
from ssd_lite.device import default_num_workers, pick_device, use_threads
from ssd_lite.loss import focal_multibox_loss, multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import SSD, build_model, default_model, load_vgg16_backbone, ssd300_vgg16
from ssd_lite.shapes import ShapesDataset
from ssd_lite.voc import VOCDataset

# The default run (lesson 06, `python -m ssd_lite.train` with no options). Every number here is a
# measured choice, see benchmarks/bench_training.py and lesson 06.
# The model's input (why 192 px, and what it measured: see default_model). The shapes images are drawn at
# SHAPES_DRAW_SIZE, as in every lesson, and resized to it as a photo would be; drawing the training images
# at 192 px instead reached a held-out mAP of 0.931 against 0.936 (benchmarks/bench_variants.py).
DEFAULT_IMAGE_SIZE = 192
SHAPES_DRAW_SIZE = 128
# Many images seen few times beat few images seen many times: for the same 4000 steps of the 128 px model,
# 16000 images x 4 epochs reached a held-out mAP of 0.920, 8000 x 8 reached 0.905 and 4000 x 16 reached
# 0.892 (the network starts to learn the training images by heart). The 192 px model keeps the 4 epochs
# on 13600 images, to fit in 5 minutes. Generating them takes ~1.5 ms each, caching them at 192 px 1.5 GB.
DEFAULT_NUM_IMAGES = 13600  # training images, generated once (seed DEFAULT_SEED) and cached
DEFAULT_EPOCHS = 4
# Without --epochs, a data set of another size gets as many steps as the default run (4 x 850 = 3400),
# so the command line takes about the same time on any folder.
DEFAULT_STEPS = 3400
# Batch 16 rather than 32: in the same few CPU minutes, twice the updates of half the size reached a
# higher held-out mAP (0.872 vs 0.848 after 12 epochs of 4000 images; batch 8 gave 0.869).
DEFAULT_BATCH_SIZE = 16
DEFAULT_LR = 3e-3
DEFAULT_WEIGHT_DECAY = 1e-4
DEFAULT_WARMUP = 0.05  # fraction of training spent raising the learning rate from ~0 to lr
# Photometric distortion and flips only: on a shared 2-core CPU the zoom out + minimum-IoU crop recipe made
# each step ~1.8x slower (RandomIoUCrop's trial loop) and reached a lower held-out mAP in the same few
# minutes (see benchmarks/bench_training.py). Pass train_transform's defaults for the paper's recipe,
# which pays off with longer training.
DEFAULT_AUGMENTATION = dict(photometric=True, zoom_out=1.0, iou_crop=False, flip=True)
DEFAULT_SEED = 0
# Held-out shapes for evaluation use a different seed, so they share no image with training.
HELD_OUT_SEED = 1000
HELD_OUT_NUM_IMAGES = 500

# The course's recipe: the numbers above (the length: DEFAULT_EPOCHS, or about DEFAULT_STEPS on other data).
COURSE_RECIPE = dict(image_size=DEFAULT_IMAGE_SIZE, batch_size=DEFAULT_BATCH_SIZE, optimiser="adamw",
                     lr=DEFAULT_LR, momentum=None, weight_decay=DEFAULT_WEIGHT_DECAY, warmup=DEFAULT_WARMUP,
                     milestones=None, augmentation=DEFAULT_AUGMENTATION, steps=None, cache_images=True)
# The paper's recipe for SSD300 on VOC07+12 (section 3.1 and the Caffe solver; torchvision's references,
# mmdetection's ssd300_voc0712 and lufficc/SSD's vgg_ssd300_voc0712 use the same numbers).
VOC_STEPS = 120_000
VOC_RECIPE = dict(
    image_size=300, batch_size=32, optimiser="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4,
    # 500 steps of linear warm-up (mmdetection's and lufficc/SSD's), as a fraction of the run.
    warmup=500 / VOC_STEPS,
    # lr / 10 at 80k and at 100k steps: fractions 2/3 and 5/6 of the run.
    milestones=[80_000 / VOC_STEPS, 100_000 / VOC_STEPS],
    # train_transform with the paper's strengths: zoom out up to 4x ("zoom out" data augmentation, section
    # 3.6) and crops from 0.3 of each side (torchvision's RandomIoUCrop default: the paper's 0.1 to 1 of the
    # area), rather than the course's milder defaults.
    augmentation=dict(photometric=True, zoom_out=4.0, iou_crop=True, crop_min_scale=0.3, flip=True),
    steps=VOC_STEPS, cache_images=False)
RECIPES = {"course": COURSE_RECIPE, "voc": VOC_RECIPE}

Objective = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
# The two training objectives, by the name the command line and checkpoints use: SSD's softmax loss with
# hard negative mining (the default), or RetinaNet's focal loss over every default box (lesson 08). Each
# needs the matching class scores in the model: softmax for "mining", sigmoid for "focal".
OBJECTIVES = {"mining": multibox_loss, "focal": focal_multibox_loss}
CLASS_SCORES = {"mining": "softmax", "focal": "sigmoid"}
MODELS = ("default", "ssd300_vgg16")  # the course's small model (default_model), the paper's SSD300
FLOAT32 = autocast_settings("cpu", amp=False)  # no mixed precision: autocast does nothing


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite: training cannot recover from it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during `train`: the model keeps the `step` steps trained so far; `history` holds their losses
    and `state` what `train(..., resume=state)` needs to continue (see train)."""

    def __init__(self, step: int, history: dict[str, list[float]], state: dict | None = None):
        super().__init__(f"training interrupted after {step} steps")
        self.step, self.history, self.state = step, history, state


# ---------------------------------------------------------------------------------------------------
# One step, as in the paper.

def training_step(model: SSD, optimiser: torch.optim.Optimizer, images: Tensor, targets: Sequence[dict],
                  objective: Objective = multibox_loss, amp: AmpSettings = FLOAT32,
                  scaler: torch.amp.GradScaler | None = None) -> tuple[Tensor, Tensor]:
    """One SSD training step on a batch; returns (loc_loss, conf_loss), detached.

    images: (B, 3, S, S) on the model's device; targets: B dicts {"boxes": (G, 4) xyxy in [0, 1],
    "labels": (G,)} on the same device. model may be wrapped in DistributedDataParallel; amp and scaler:
    mixed precision (ssd_lite.amp), float32 by default. Raises NonFiniteLossError, before touching the
    weights, if the loss is NaN or infinite (under DDP: on any process, and then on every process).
    """
    # 1. Matching: every default box gets an object to regress to and its class, or background.
    priors = distributed.unwrap(model).priors  # (DistributedDataParallel hides the SSD's attributes)
    matched = [match(target["boxes"], target["labels"], priors) for target in targets]
    loc_targets = torch.stack([loc for loc, _ in matched])  # (B, P, 4)
    labels = torch.stack([label for _, label in matched])  # (B, P)
    # 2. The network: offsets (B, P, 4) and class scores (B, P, C) for every default box.
    with autocast(amp):
        loc_pred, conf_pred = model(images)
    # 3. The MultiBox loss, L = (L_conf + L_loc) / N, always in float32 (sums over thousands of boxes).
    loc_loss, conf_loss = objective(loc_pred.float(), conf_pred.float(), loc_targets, labels)
    loss = loc_loss + conf_loss
    _check_finite(loss, loc_loss, conf_loss)
    # 4. Gradient descent: backward, then one step of the optimiser.
    _update(loss, optimiser, scaler)
    return loc_loss.detach(), conf_loss.detach()


def _check_finite(loss: Tensor, loc_loss: Tensor, conf_loss: Tensor) -> None:
    """Raise NonFiniteLossError if the loss is NaN or infinite, on every process if it is on any: a process
    that stopped alone would leave the others waiting forever in DDP's gradient exchange."""
    if not distributed.any_rank(not torch.isfinite(loss), loss.device):
        return
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"the loss became {loss.item()} (loc_loss={loc_loss.item()}, "
                                 f"conf_loss={conf_loss.item()})")
    raise NonFiniteLossError("the loss became NaN or infinite in another process (its images)")


def _update(loss: Tensor, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward, then one optimiser step. With float16 mixed precision the GradScaler multiplies the loss
    first (tiny gradients would round to 0 in float16), divides the gradients back before the step, and
    skips a step whose gradients overflowed. Under DDP, backward also averages the gradients of all processes."""
    optimiser.zero_grad(set_to_none=True)
    if scaler is None or not scaler.is_enabled():
        loss.backward()
        optimiser.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimiser)
    scaler.update()


def learning_rate_factor(progress: float, warmup: float = DEFAULT_WARMUP,
                         milestones: Sequence[float] | None = None) -> float:
    """The fraction of the peak lr at `progress` in [0, 1] of the training: warm-up, then decay.

    Linear from 0.01 to 1 during the first `warmup` of training (a random network's first gradients are
    large and noisy, and SGD's momentum needs a few steps to settle). Then, without milestones, half a
    cosine from 1 down to 0 at the end (the course); with milestones (fractions of the training), a
    division by 10 at each one (the paper: 1, 0.1, 0.01 with milestones at 2/3 and 5/6 of 120k steps).
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return 0.01 + 0.99 * progress / warmup
    if milestones is not None:
        return 0.1 ** sum(progress >= milestone for milestone in milestones)
    return 0.5 * (1 + math.cos(math.pi * (progress - warmup) / (1 - warmup)))


def make_optimiser(model: SSD, lr: float, weight_decay: float, kind: str = "adamw",
                   momentum: float | None = None) -> torch.optim.Optimizer:
    """AdamW (the course) or SGD with momentum (the paper), with no weight decay on BatchNorm, bias and
    L2Norm parameters (1-D tensors): decaying them only hurts (the Caffe model's biases have no decay either)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum or 0.0)
    return torch.optim.AdamW(groups, lr=lr)


class ShuffledBatches(Sampler[list[int]]):
    """The order a run visits its data in: each epoch, the batches of a fresh random permutation.

    Epoch e's permutation comes from a generator seeded with the pair (seed, e), so it depends on nothing
    else: step s always trains on batch s % len(self) of epoch s // len(self), and `start_at(s)` makes the
    next pass over the sampler begin there (how a resumed run picks up where it stopped). A last incomplete
    batch is dropped, unless the data holds less than one batch: then each epoch is one batch of it all.
    Under torchrun every process draws the same whole batches and keeps its own slice of each
    (`distributed.share_of_batch`), so step s trains on the same images whatever the number of processes.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int):
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch, self.first_batch = 0, 0

    def __len__(self) -> int:
        return max(self.num_items // self.batch_size, 1)

    def permutation(self, epoch: int) -> list[int]:
        """The order of the items in `epoch` (counted from 0)."""
        generator = np.random.default_rng([self.seed % 2 ** 64, epoch])
        return generator.permutation(self.num_items).tolist()

    def start_at(self, step: int) -> None:
        self.epoch, self.first_batch = divmod(step, len(self))

    def __iter__(self):
        order = self.permutation(self.epoch)
        for batch in range(self.first_batch, len(self)):
            yield distributed.share_of_batch(order[batch * self.batch_size:(batch + 1) * self.batch_size])


# ---------------------------------------------------------------------------------------------------
# The loop.

def train(model: SSD, dataset: Dataset, epochs: int | None = None, time_budget: float | None = None,
          batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
          weight_decay: float = DEFAULT_WEIGHT_DECAY, warmup: float = DEFAULT_WARMUP,
          seed: int = DEFAULT_SEED, num_workers: int | None = None, device: str | torch.device | None = None,
          progress: bool = True, objective: Objective = multibox_loss, steps: int | None = None,
          optimiser_name: str = "adamw", momentum: float | None = None, milestones: Sequence[float] | None = None,
          save_every: int | None = None, save: Callable[[dict, bool], None] | None = None, resume: dict | None = None,
          stop_after: float | None = None, amp: bool = False, sync_bn: bool = False) -> dict[str, list[float]]:
    """Train `model` in place on `dataset` with `training_step`; return the history of the loss per step.

    dataset: items (image (3, S, S) float in [0, 1], target) at the model's input size, augmented already
      (e.g. CachedDataset(..., transform=train_transform(S))).
    epochs: passes over the data set; or steps; or time_budget: seconds of training (the schedule then
      follows the clock: reproducible only with epochs or steps). Give exactly one.
    seed: seeds the data order and the augmentation (torch's global generator when num_workers is 0).
    num_workers: DataLoader worker processes; default 0 on the CPU, 1 with CUDA.
    optimiser_name: "adamw" or "sgd" (with `momentum`); milestones: None for the cosine decay, or fractions of
      the training where the lr is divided by 10 (see learning_rate_factor).
    save: save(state, final) is called every `save_every` steps (final False) and once when training ends
      (final True). The state {"step", "epoch", "seconds", "finished", "optimiser", "rng", "history",
      "batch_size", "num_items"} is what `resume` takes to continue exactly there (the caller restores
      the model's weights); TrainingInterrupted.state holds it too.
    stop_after: end this call after that many seconds even if the run has steps left (to resume later).
    amp: mixed precision (CUDA only, ssd_lite.amp; float16 adds "scaler" to the state). sync_bn: under
      torchrun, BatchNorm statistics over the whole batch (SyncBatchNorm, CUDA only).
    Under torchrun (after distributed.init), call it in every process with the same arguments: each trains
    on its share of every batch of `batch_size` as DistributedDataParallel, only process 0 shows progress,
    and the history holds the whole batch's losses. `save` is called in every process (let process 0
    write); the state's "rng" is then this process's generators and "rng_per_process" everyone's.
    Returns {"loss", "loc_loss", "conf_loss", "lr"}: one float per step (with resume, the whole run's).
    Raises NonFiniteLossError at the first NaN or infinite loss, naming the step, and TrainingInterrupted
    (a KeyboardInterrupt carrying the history) on Ctrl-C: the model keeps the steps trained so far.
    """
    _check_train_arguments(dataset, epochs, steps, time_budget, batch_size, lr, weight_decay, warmup, num_workers,
                           optimiser_name, momentum, milestones, save_every, stop_after, resume)
    device = pick_device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # under torchrun: this process's GPU
    amp_settings = autocast_settings(device, amp)  # refuses amp on the CPU, saying why
    scaler = grad_scaler(amp_settings) if amp_settings.grad_scaler else None
    # channels_last: the convolutions' preferred memory layout, measured ~10% faster per step on the CPU.
    model.to(device, memory_format=torch.channels_last).train()
    # Under torchrun: DistributedDataParallel, after the move (it copies process 0's weights to all), and
    # the loss divided by the whole batch's N. Without torchrun: the model and the objective themselves.
    ddp_model = distributed.wrap_model(model, device, sync_bn=sync_bn)
    objective = distributed.with_global_n(objective)
    if num_workers is None:
        num_workers = default_num_workers(device)
    batches = ShuffledBatches(len(dataset), batch_size, seed)
    # Each process its own augmentation draws (the same seed everywhere would flip or crop the k-th image of
    # every process's share alike); seed + 0 in a plain run.
    process_seed = seed + distributed.rank()
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(process_seed),  # the workers' augmentation seeds
                        persistent_workers=num_workers > 0, pin_memory=device.type == "cuda")
    total_steps = epochs * len(batches) if epochs is not None else steps
    optimiser = make_optimiser(model, lr, weight_decay, optimiser_name, momentum)
    if resume is None:
        torch.manual_seed(process_seed)  # the augmentation's random draws, when they run in this process
        step, seconds_before, history = 0, 0.0, {"loss": [], "loc_loss": [], "conf_loss": [], "lr": []}
    else:
        optimiser.load_state_dict(resume["optimiser"])
        if scaler is not None and "scaler" in resume:
            scaler.load_state_dict(resume["scaler"])
        _restore_random_state(resume, process_seed)
        step, seconds_before = resume["step"], resume["seconds"]
        history = {key: list(values) for key, values in resume["history"].items()}
    start = time.perf_counter()
    seconds = lambda: seconds_before + time.perf_counter() - start  # this run's training time, all calls
    agreed_seconds = lambda: _same_in_every_process(seconds(), device)  # for decisions: lr, when to stop
    # The generators' states before the next batch is drawn: where a resumed run must start from.
    rng, finished = rng_states(), False

    def state(all_processes: bool = True) -> dict:
        # all_processes: every process calls this at the same step (not so on Ctrl-C), so all can share
        # their generators' states with process 0, the one that saves.
        saved = {"step": step, "epoch": step // len(batches), "seconds": seconds(), "finished": finished,
                 "optimiser": optimiser.state_dict(), "rng": rng, "history": history, "batch_size": batch_size,
                 "num_items": len(dataset)}
        if all_processes and distributed.world_size() > 1:
            saved["rng_per_process"] = distributed.gather_in_order([rng], [distributed.rank()])
        if scaler is not None:
            saved["scaler"] = scaler.state_dict()
        return saved

    # Redraw at most once a second: in a notebook every redraw is a message to the browser, and thousands
    # of them overflow Jupyter's message queue.
    bar = tqdm(total=total_steps if total_steps is not None else round(time_budget),
               disable=not (progress and distributed.is_main_process()),
               initial=step if total_steps is not None else min(round(seconds_before), round(time_budget)),
               desc="training", unit="step" if total_steps is not None else "s", mininterval=1.0)
    running_loss, done = None, False
    try:
        while not done:
            batches.start_at(step)
            for images, targets in loader:
                fraction = step / total_steps if total_steps is not None else agreed_seconds() / time_budget
                step_lr = lr * learning_rate_factor(fraction, warmup, milestones)
                for group in optimiser.param_groups:
                    group["lr"] = step_lr
                images = images.to(device, memory_format=torch.channels_last, non_blocking=True)
                targets = [{key: target[key].to(device) for key in ("boxes", "labels")} for target in targets]
                try:
                    loc_loss, conf_loss = training_step(ddp_model, optimiser, images, targets, objective,
                                                        amp_settings, scaler)
                except NonFiniteLossError as error:
                    raise NonFiniteLossError(
                        f"step {step + 1} (epoch {step // len(batches) + 1}): {error}. Training stopped: weights "
                        "after a NaN are useless. Usual causes: a bad box in the data (x_max <= x_min, a zero-size "
                        f"box), or a learning rate too high (lr={lr}).") from None
                step += 1
                rng = rng_states()
                # The whole batch's losses: the mean of the processes' shares (see distributed.with_global_n).
                loc_loss, conf_loss = distributed.all_reduce_mean(torch.stack([loc_loss, conf_loss]))
                loss_value = (loc_loss + conf_loss).item()
                history["loss"].append(loss_value)
                history["loc_loss"].append(loc_loss.item())
                history["conf_loss"].append(conf_loss.item())
                history["lr"].append(step_lr)
                running_loss = loss_value if running_loss is None else 0.95 * running_loss + 0.05 * loss_value
                bar.set_postfix(loss=f"{running_loss:.3f}", epoch=(step - 1) // len(batches) + 1, refresh=False)
                if total_steps is not None:
                    bar.update(1)
                    finished = step >= total_steps
                else:
                    now = agreed_seconds()
                    bar.update(min(round(now), bar.total) - bar.n)
                    finished = now >= time_budget
                done = finished or (stop_after is not None and agreed_seconds() - seconds_before >= stop_after)
                if done:
                    break
                if save is not None and save_every is not None and step % save_every == 0:
                    save(state(), False)
    except KeyboardInterrupt:
        raise TrainingInterrupted(step, history, state(all_processes=False)) from None
    finally:
        bar.close()
        model.eval()
    if save is not None:
        save(state(), True)
    return history


def _same_in_every_process(seconds: float, device: torch.device) -> float:
    """`seconds` (a process's clock) made the same in every process, their mean: with a schedule on the
    clock each process must set the same lr, and all must stop after the same step (one that stopped alone
    would leave the others waiting forever in their next gradient exchange). Without torchrun: `seconds`."""
    if distributed.world_size() == 1:
        return seconds
    clock = torch.tensor(seconds, dtype=torch.float64, device=device)
    return distributed.all_reduce_mean(clock).item()


def _restore_random_state(resume: dict, seed: int) -> None:
    """Set the random generators back to where the saved run left them, each process its own (so the
    augmentation's draws repeat, with num_workers=0). A run saved by another number of processes (or by
    torchrun on Ctrl-C) holds no states for this one: `seed` then, and a note (the images of every step stay
    the same: ShuffledBatches; only their random crops and flips differ from the unbroken run)."""
    per_process = resume.get("rng_per_process") or [resume["rng"]]
    if len(per_process) == distributed.world_size():
        restore_rng_states(per_process[distributed.rank()])
        return
    torch.manual_seed(seed)
    if distributed.is_main_process():
        print(f"note: the run was saved by {len(per_process)} process(es), it continues in "
              f"{distributed.world_size()}: same images at every step, other random augmentations")


def _check_train_arguments(dataset, epochs, steps, time_budget, batch_size, lr, weight_decay, warmup, num_workers,
                           optimiser_name, momentum, milestones, save_every, stop_after, resume) -> None:
    if sum(length is not None for length in (epochs, steps, time_budget)) != 1:
        raise ValueError("give exactly one of epochs, steps and time_budget")
    for name, value in (("epochs", epochs), ("steps", steps), ("save_every", save_every)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")
    for name, value in (("time_budget", time_budget), ("stop_after", stop_after)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0 (0 would train nothing), got {lr}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    if not 0 <= warmup < 1:
        raise ValueError(f"warmup must be a fraction of the training in [0, 1), got {warmup}")
    if optimiser_name not in ("adamw", "sgd"):
        raise ValueError(f"optimiser_name must be 'adamw' or 'sgd', got {optimiser_name!r}")
    if momentum is not None and not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if milestones is not None and (list(milestones) != sorted(milestones) or not all(0 < m < 1 for m in milestones)):
        raise ValueError(f"milestones must be increasing fractions of the training in (0, 1), got {milestones}")
    if num_workers is not None and (not isinstance(num_workers, int) or num_workers < 0):
        raise ValueError(f"num_workers must be a whole number >= 0, got {num_workers!r}")
    if len(dataset) == 0:
        raise ValueError("the training data set is empty")
    distributed.per_rank_batch_size(min(batch_size, len(dataset)))  # under torchrun: each process an equal share
    if resume is None:
        return
    if (resume["num_items"], resume["batch_size"]) != (len(dataset), batch_size):
        raise ValueError(f"cannot resume: the run was saved with {resume['num_items']} images in batches of "
                         f"{resume['batch_size']}, not {len(dataset)} in batches of {batch_size}: its data order "
                         "would point at other images")
    if steps is not None or epochs is not None:
        total = steps if steps is not None else epochs * max(len(dataset) // batch_size, 1)
        if resume["step"] >= total:
            raise ValueError(f"nothing to resume: the run has trained {resume['step']} steps already, and "
                             f"{total} were asked for")
    elif resume["seconds"] >= time_budget:
        raise ValueError(f"nothing to resume: the run has trained {resume['seconds']:.0f} s already, and the "
                         f"time budget is {time_budget:.0f} s")


# ---------------------------------------------------------------------------------------------------
# A whole run from its settings: the default run of the course, and the command line.

def default_settings() -> dict:
    """The training settings of the default run, as stored in its checkpoint (and compared on reuse)."""
    return dict(model="default", backbone_weights=None, recipe="course",
                data=dict(kind="shapes", seed=DEFAULT_SEED, num_images=DEFAULT_NUM_IMAGES,
                          image_size=DEFAULT_IMAGE_SIZE, draw_size=SHAPES_DRAW_SIZE, held_out_seed=HELD_OUT_SEED,
                          held_out_num_images=HELD_OUT_NUM_IMAGES),
                augmentation=dict(DEFAULT_AUGMENTATION), epochs=DEFAULT_EPOCHS, steps=None, time_budget=None,
                batch_size=DEFAULT_BATCH_SIZE, optimiser="adamw", lr=DEFAULT_LR, momentum=None,
                weight_decay=DEFAULT_WEIGHT_DECAY, warmup=DEFAULT_WARMUP, milestones=None, seed=DEFAULT_SEED,
                loss="mining", cache_images=True)


def default_epochs(num_images: int, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Epochs giving about DEFAULT_STEPS steps on a data set of num_images (4 for the default shapes)."""
    steps_per_epoch = max(num_images // batch_size, 1)
    return max(round(DEFAULT_STEPS / steps_per_epoch), 1)


def make_model(name: str, num_classes: int, image_size: int, class_scores: str = "softmax",
               backbone: tuple | None = None) -> SSD:
    """The network a run trains: "default" (the course's small model, default_model) or "ssd300_vgg16"
    (the paper's SSD300, 300 px), whose VGG16 part starts from `backbone` = (state dict, mean, std) from
    vgg16_backbone_weights if given, with the input standardisation those weights expect."""
    if name == "default":
        return default_model(num_classes, image_size, class_scores=class_scores)
    if backbone is None:
        return ssd300_vgg16(num_classes, class_scores=class_scores)
    state_dict, mean, std = backbone
    model = ssd300_vgg16(num_classes, class_scores=class_scores, mean=mean, std=std)
    load_vgg16_backbone(model, state_dict)
    return model


def training_images(data: dict, transform: Callable | None = None) -> Dataset:
    """The training images `data` describes, with their `.class_names`: the built-in shapes, drawn at
    data["draw_size"] (runs saved before it existed: at data["image_size"]), or one or more VOC folders
    joined (labels from data["class_names"], or from the union of the folders' classes, sorted, so that a
    class keeps one label in every folder). The images are resized to data["image_size"] later."""
    if data["kind"] == "shapes":
        return ShapesDataset(data["num_images"], image_size=data.get("draw_size", data["image_size"]),
                             seed=data["seed"], transform=transform)
    given = data.get("class_names")
    folders = [VOCDataset(f["root"], f["split"], class_names=given, transform=transform) for f in data["folders"]]
    if given is None:
        union = ("background", *sorted({name for folder in folders for name in folder.class_names[1:]}))
        folders = [folder if folder.class_names == union else
                   VOCDataset(folder.root, folder.split, class_names=union, transform=transform) for folder in folders]
    joined = ConcatDataset(folders)
    joined.class_names = folders[0].class_names
    return joined


def prepare_run(settings: dict, progress: bool = True, backbone: tuple | None = None,
                model_config: dict | None = None) -> tuple[SSD, Dataset, tuple[str, ...]]:
    """The model and the augmented training set that `settings` describe: (model, dataset, class_names).

    settings["data"]: {"kind": "shapes", "seed", "num_images", "image_size", "draw_size", ...} or {"kind": "voc",
    "folders": [{"root", "split"}, ...], "class_names" (optional), "image_size"}; data["num_images"] is
    filled in. settings["cache_images"]: keep the images in memory at the input size (CachedDataset, the
    course), or read and augment them from their source at every step (the voc recipe).
    backbone: see make_model. model_config: rebuild this model (a resumed run's) instead.
    """
    data, image_size = settings["data"], settings["data"]["image_size"]
    augment = train_transform(image_size, **settings["augmentation"])
    cache = settings.get("cache_images", True)
    source = training_images(data, transform=None if cache else augment)
    data["num_images"] = len(source)
    class_names = tuple(source.class_names)
    torch.manual_seed(settings["seed"])  # the model's initial weights
    if model_config is not None:
        model = build_model(**model_config)
    else:
        model = make_model(settings.get("model", "default"), len(class_names), image_size,
                           CLASS_SCORES[settings["loss"]], backbone)
    dataset = CachedDataset(source, image_size, augment, progress=progress) if cache else source
    return model, dataset, class_names


def run_training(settings: dict, path: str | Path | None = None, device: str | torch.device | None = None,
                 progress: bool = True, num_workers: int | None = None, save_on_interrupt: bool = True,
                 save_every: int | None = None, backbone: tuple | None = None, resume: dict | None = None,
                 stop_after: float | None = None, amp: bool = False, sync_bn: bool = False) -> tuple[SSD, dict]:
    """Prepare, train and (if `path`) save the run that `settings` describe; returns (model, checkpoint).

    settings: as `default_settings()`, with one of "epochs", "steps" and "time_budget" (none: about
    DEFAULT_STEPS steps). The checkpoint at `path` is written atomically every `save_every` steps, when
    training ends, and on Ctrl-C (marked "interrupted": True) unless save_on_interrupt is False, with
    TrainingInterrupted raised then. Each holds the steps done ("steps_done"), whether the run reached its
    end ("finished") and its state ("resume"), from which `resume` continues it.
    backbone: see make_model. resume: the checkpoint dict (read_checkpoint) of the run to continue.
    stop_after: end this call after that many seconds, even with steps left. amp, sync_bn: see train.
    Under torchrun, call it in every process: all train, process 0 alone writes (the others return the
    checkpoint dict unsaved). The checkpoint records the session's "world_size", "amp" and "sync_bn".
    """
    settings = {**settings, "data": dict(settings["data"])}
    model, dataset, class_names = prepare_run(settings, progress, backbone,
                                              model_config=resume["model_config"] if resume else None)
    if resume is not None:
        try:
            model.load_state_dict(resume["model_state"])
        except RuntimeError as error:
            raise CheckpointError(f"the checkpoint's weights do not fit the model it describes "
                                  f"({str(error).splitlines()[0]})") from None
    if all(settings.get(key) is None for key in ("epochs", "steps", "time_budget")):
        settings["epochs"] = default_epochs(len(dataset), settings["batch_size"])
    end = {}

    def write(state: dict, **marks) -> dict:
        record = {**settings, "history": state["history"], "steps_done": state["step"],
                  "train_seconds": round(state["seconds"], 1), "finished": state["finished"],
                  "world_size": distributed.world_size(), "amp": amp, "sync_bn": sync_bn, **marks}
        if path is None or not distributed.is_main_process():
            return {"class_names": class_names, **record}
        run_state = {key: value for key, value in state.items() if key != "history"}
        return save_checkpoint(path, model, class_names, **record,
                               **({"resume": run_state} if "optimiser" in state else {}))

    def save(state: dict, final: bool) -> None:
        if final:
            end.update(state)  # written below, once train has returned
        elif path is not None:
            write(state)

    try:
        train(model, dataset, **_train_arguments(settings), num_workers=num_workers, device=device,
              progress=progress, save_every=save_every, save=save, stop_after=stop_after, amp=amp, sync_bn=sync_bn,
              resume={**resume["resume"], "history": resume["history"]} if resume else None)
    except TrainingInterrupted as stop:
        if path is not None and save_on_interrupt and stop.step > 0:
            write(stop.state or {"step": stop.step, "history": stop.history, "seconds": 0.0, "finished": False},
                  interrupted=True)
        raise
    return model, write(end)


def _train_arguments(settings: dict) -> dict:
    """The keyword arguments of `train` that `settings` fix."""
    return dict(epochs=settings.get("epochs"), steps=settings.get("steps"), time_budget=settings.get("time_budget"),
                batch_size=settings["batch_size"], lr=settings["lr"], weight_decay=settings["weight_decay"],
                warmup=settings["warmup"], seed=settings["seed"], objective=OBJECTIVES[settings["loss"]],
                optimiser_name=settings.get("optimiser", "adamw"), momentum=settings.get("momentum"),
                milestones=settings.get("milestones"))


def train_default_model(path: str | Path | None = None, progress: bool = True,
                        device: str | torch.device | None = None) -> tuple[SSD, dict]:
    """The course's trained shapes model: load `path` if it holds a checkpoint of the default settings,
    else train it (a few minutes on a CPU) and save it there. Returns (model in eval mode, checkpoint).

    Sets torch's CPU threads to the free cores first (ssd_lite.device.use_threads): on a busy machine,
    one thread per core would make training many times slower.
    """
    settings = default_settings()
    if path is not None and Path(path).exists():
        model, checkpoint = load_checkpoint(path, device=device)
        if all(checkpoint.get(key) == value for key, value in settings.items()):
            return model, checkpoint
    use_threads()
    return run_training(settings, path, device=device, progress=progress)


# ---------------------------------------------------------------------------------------------------
# Command line: in ssd_lite.train_cli (flags, their checks, --resume), so that this module holds training.

def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ssd_lite.train`: see ssd_lite.train_cli.main."""
    # Imported here, not at the top: ssd_lite.train_cli imports this module.
    from ssd_lite.train_cli import main as command_line
    return command_line(argv)


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m ssd_lite.train"))
