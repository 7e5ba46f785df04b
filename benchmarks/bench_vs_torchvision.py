"""Our SSD against torchvision's, side by side: same network, same data, same time; mAP and step time.

The claim it checks: trained with the same backbone, input size, data, optimiser and time budget, our
training reaches at least the mAP of torchvision.models.detection.SSD, and our training step is no slower.

What it does, in one run:
1. Builds our default model (ssd_lite.train.default_model) and a torchvision SSD around a copy of the very
   same feature extractor, with default boxes equal to our model.priors (DefaultBoxGenerator with our
   scales and aspect ratios, no clipping), an SSDHead of the same shape whose weights are copied from
   ours, our normalisation (ImageNet mean and std) and no resizing. It checks that the two start equal:
   same default boxes, same raw outputs, same initial loss on one batch.
2. Times one training step of each (forward + loss + backward + AdamW step) on the same batches,
   alternating the two models so both see the same machine load; the median after a warm-up.
3. After a few hundred untimed warm-up steps of each (on throwaway copies: a fresh process's first training
   run is slower), trains each in turn, from those equal initial weights, on the same cached synthetic training set
   with the same augmentation, batch order, AdamW settings and warm-up + cosine schedule as
   `python -m ssd_lite.train`, for the same wall-clock time. By default ours trains exactly the default run
   (ssd_lite.train.DEFAULT_EPOCHS epochs; this loop calls ssd_lite.train.training_step with ssd_lite.train.train's schedule) and
   torchvision's then gets the seconds ours took; --time-budget S gives both S seconds, --steps N both N steps.
4. Evaluates both on the same held-out shapes with ssd_lite.evaluate.mean_average_precision (VOC mAP@0.5),
   with the same detection settings (score > 0.01, NMS IoU 0.45, 400 candidates per class, 200 per image),
   and prints a table.

What differs is only what the comparison is about, each library's own SSD machinery:
- the training step: ours is ssd_lite.train.training_step itself (ssd_lite.matching.match, the network,
  ssd_lite.loss.multibox_loss, the update); torchvision's matches with SSDMatcher inside its forward. Same
  rule (IoU >= 0.5, plus each object's best default box); ties between two objects for one box may be
  broken differently.
- loss: ssd_lite.loss.multibox_loss against SSD.compute_loss. Same sums (smooth L1 with beta 1 on the
  positives, cross-entropy on the positives and the 3:1 hardest negatives per image, both / N over the
  batch); ties in hard negative mining may pick different (equally hard) negatives.
- box decoding: torchvision clamps predicted log size offsets at log(1000 / 16) before exp; ours does not.
- both networks' weights are in the channels_last layout, as ssd_lite.train makes them; ours also gets its
  images in that layout, while torchvision's GeneralizedRCNNTransform re-batches them in the default one.
- torchvision wraps the batch in its GeneralizedRCNNTransform (normalises each image, re-batches them);
  we normalise inside the model. At evaluation it also "resizes" 128 to 128, an exact identity.

Timings are only comparable within one run on one machine; on a busy machine the absolute numbers are
inflated and only the ratio means something. Run `python benchmarks/bench_vs_torchvision.py --help`.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections import OrderedDict

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchvision.models.detection.ssd import SSD as TorchvisionSSD, SSDHead
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from ssd_lite.augment import eval_transform, train_transform
from ssd_lite.boxes import cxcywh_to_xyxy
from ssd_lite.data import CachedDataset, collate
from ssd_lite.detect import predict_dataset
from ssd_lite.evaluate import mean_average_precision
from ssd_lite.model import IMAGENET_MEAN, IMAGENET_STD, SSD
from ssd_lite.nms import NMS_TOP_K
from ssd_lite.shapes import ShapesDataset
from ssd_lite.train import (DEFAULT_AUGMENTATION, DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_IMAGE_SIZE, DEFAULT_LR, DEFAULT_NUM_IMAGES,
                            DEFAULT_SEED, DEFAULT_WARMUP, DEFAULT_WEIGHT_DECAY, HELD_OUT_NUM_IMAGES,
                            HELD_OUT_SEED, SHAPES_DRAW_SIZE, learning_rate_factor, make_optimiser, training_step)
from ssd_lite.device import default_num_workers, pick_device
from ssd_lite.model import default_model

# Detection settings shared by both models at evaluation: those of ssd_lite.detect.predict and of the
# original SSD (keep scores > 0.01, NMS at IoU 0.45, 400 candidates per class, 200 detections per image).
SCORE_THRESHOLD = 0.01
NMS_IOU_THRESHOLD = 0.45
DETECTIONS_PER_IMAGE = 200

# ---------------------------------------------------------------------------------------------------
# torchvision's SSD around our feature extractor.

class FeatureMaps(nn.Module):
    """Our feature extractor as torchvision wants a backbone: an OrderedDict of maps, and out_channels."""

    def __init__(self, features: nn.Module, out_channels: list[int]):
        super().__init__()
        self.features = features
        self.out_channels = out_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict((str(k), fmap) for k, fmap in enumerate(self.features(images)))


def torchvision_twin(model: SSD) -> TorchvisionSSD:
    """torchvision.models.detection.SSD with the same layers, weights and default boxes as our `model`.

    - backbone: a deep copy of model.features (same architecture, same weights, BatchNorm statistics too);
    - default boxes: DefaultBoxGenerator with our scales and aspect ratios; clip=False because our default
      boxes are not clipped (torchvision's clip=True would clamp widths and heights above 1);
    - head: SSDHead (one 3x3 conv per map for offsets, one for scores) with our heads' weights copied in:
      both lay out a map's channels as box-major (box a, value j at channel a * values + j);
    - transform: our ImageNet normalisation, fixed size = our input size, and `_skip_resize` so training
      batches are not resized (evaluation resizes 128 -> 128, an identity);
    - post-processing: the same thresholds and limits as ssd_lite.detect.
    """
    feature_channels = [head.in_channels for head in model.loc_heads]
    anchors = DefaultBoxGenerator([list(r) for r in model.aspect_ratios], scales=list(model.scales), clip=False)
    head = SSDHead(feature_channels, anchors.num_anchors_per_location(), model.num_classes)
    for ours, theirs in zip(model.loc_heads, head.regression_head.module_list):
        theirs.load_state_dict(ours.state_dict())
    for ours, theirs in zip(model.conf_heads, head.classification_head.module_list):
        theirs.load_state_dict(ours.state_dict())
    size = (model.image_size, model.image_size)
    return TorchvisionSSD(FeatureMaps(copy.deepcopy(model.features), feature_channels), anchors, size,
                          model.num_classes, image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
                          head=head, score_thresh=SCORE_THRESHOLD, nms_thresh=NMS_IOU_THRESHOLD,
                          detections_per_img=DETECTIONS_PER_IMAGE, topk_candidates=NMS_TOP_K,
                          iou_thresh=0.5, positive_fraction=0.25,  # 0.25: 3 negatives per positive
                          _skip_resize=True).to(model.priors.device)


def to_pixels(targets: list[dict], image_size: int, device: torch.device) -> list[dict]:
    """Our normalised targets -> torchvision's: boxes in absolute pixel xyxy."""
    return [{"boxes": t["boxes"].to(device) * image_size, "labels": t["labels"].to(device)} for t in targets]


# ---------------------------------------------------------------------------------------------------
# One training step of each library: forward, loss, backward, optimiser step; returns the loss.
# Both take the same batches, (images, targets) from ssd_lite.data.collate.

def our_step(model: SSD, optimiser: torch.optim.Optimizer, batch) -> Tensor:
    """ssd_lite.train.training_step itself: match, network, MultiBox loss, update."""
    images, targets = batch
    device = model.priors.device
    images = images.to(device, memory_format=torch.channels_last)
    targets = [{key: t[key].to(device) for key in ("boxes", "labels")} for t in targets]
    loc_loss, conf_loss = training_step(model, optimiser, images, targets)
    return loc_loss + conf_loss


def torchvision_step(model: TorchvisionSSD, optimiser: torch.optim.Optimizer, batch) -> Tensor:
    """torchvision's step: in training mode SSD(images, targets) matches and returns its two losses."""
    images, targets = batch
    device = next(model.parameters()).device
    losses = model(list(images.to(device)), to_pixels(targets, images.shape[-1], device))
    loss = losses["bbox_regression"] + losses["classification"]
    if not torch.isfinite(loss):
        raise RuntimeError(f"non-finite loss {float(loss)}")
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss.detach()


def make_loader(dataset, batch_size: int, collate_fn, seed: int, num_workers: int) -> DataLoader:
    """ssd_lite.train's DataLoader. The same seed gives the same shuffling and the same augmentation."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                      collate_fn=collate_fn, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=num_workers > 0)


def synchronise(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------
# Training for a budget: the loop of ssd_lite.train.train, for either model.

def train_for(model: nn.Module, step_fn, loader: DataLoader, device: torch.device, steps: int | None,
              time_budget: float | None, lr: float, weight_decay: float, warmup: float) -> dict:
    """Train `model` in place for `steps` steps or `time_budget` seconds, with ssd_lite.train's schedule.

    Returns {"steps", "seconds", "data_seconds" (spent waiting for the DataLoader), "step_seconds" (each
    step's duration, data wait included), "losses", "first_batch_sum"} (the last to check that both
    models saw the same data).
    """
    model.to(device, memory_format=torch.channels_last).train()  # as ssd_lite.train, for both models
    optimiser = make_optimiser(model, lr, weight_decay)
    losses, step, first_batch_sum, data_seconds, step_seconds = [], 0, None, 0.0, []
    synchronise(device)
    start = time.perf_counter()
    done = False
    while not done:
        waiting_since = time.perf_counter()
        for batch in loader:
            data_seconds += time.perf_counter() - waiting_since
            if first_batch_sum is None:
                first_batch_sum = float(batch[0].sum())
            fraction = step / steps if steps is not None else (time.perf_counter() - start) / time_budget
            for group in optimiser.param_groups:
                group["lr"] = lr * learning_rate_factor(fraction, warmup)
            loss = step_fn(model, optimiser, batch)
            losses.append(loss.item())  # waits for the step to finish, as float(loss) in ssd_lite.train
            step += 1
            step_seconds.append(time.perf_counter() - waiting_since)
            done = step >= steps if steps is not None else time.perf_counter() - start >= time_budget
            if done:
                break
            waiting_since = time.perf_counter()
    seconds = time.perf_counter() - start
    model.eval()
    return {"steps": step, "seconds": seconds, "data_seconds": data_seconds, "step_seconds": step_seconds,
            "losses": losses, "first_batch_sum": first_batch_sum}


# ---------------------------------------------------------------------------------------------------
# Step timing on identical batches.

def time_steps(contenders: dict, batches: list, device: torch.device, warmup: int, repeats: int,
               lr: float, weight_decay: float) -> dict[str, list[float]]:
    """Milliseconds of forward + loss + backward + optimiser step, per contender, over the same batches.

    contenders: name -> (model, step_fn). The contenders take turns step by step, and who goes first
    rotates each round, so a change in machine load hits them all alike. The first `warmup` rounds are not
    recorded.
    """
    optimisers = {name: make_optimiser(model, lr, weight_decay) for name, (model, _) in contenders.items()}
    times = {name: [] for name in contenders}
    names = list(contenders)
    for i in range(warmup + repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            model, step_fn = contenders[name]
            model.train()
            synchronise(device)
            start = time.perf_counter()
            step_fn(model, optimisers[name], batches[i % len(batches)])
            synchronise(device)
            if i >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    return times


# ---------------------------------------------------------------------------------------------------
# Evaluation.

@torch.no_grad()
def torchvision_predictions(model: TorchvisionSSD, dataset, batch_size: int) -> list[dict]:
    """torchvision's detections on every image, boxes normalised to [0, 1] like ours."""
    model.eval()
    device = next(model.parameters()).device
    detections = []
    for start in range(0, len(dataset), batch_size):
        images = [dataset[i][0].to(device) for i in range(start, min(start + batch_size, len(dataset)))]
        for image, found in zip(images, model(images)):
            height, width = image.shape[-2:]
            scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
            detections.append({"boxes": (found["boxes"] / scale).cpu(), "scores": found["scores"].cpu(),
                               "labels": found["labels"].cpu()})
    return detections


def same_detections(ours: dict, theirs: dict, tolerance: float = 1e-5) -> bool:
    """Whether two images' detections agree: the same (score, label, box) entries, within `tolerance`.

    Compared as sorted lists, because detections with exactly equal scores may come out of the two
    libraries in either order (an untrained network gives many such ties).
    """
    def entries(found: dict) -> list[tuple]:
        return sorted(zip(found["scores"].tolist(), found["labels"].tolist(),
                          [tuple(round(v, 4) for v in box) for box in found["boxes"].tolist()]))

    mine, yours = entries(ours), entries(theirs)
    return len(mine) == len(yours) and all(
        a_label == b_label and abs(a_score - b_score) <= tolerance
        and max(abs(a - b) for a, b in zip(a_box, b_box)) <= 2e-4  # boxes were rounded to 4 decimals
        for (a_score, a_label, a_box), (b_score, b_label, b_box) in zip(mine, yours))


# ---------------------------------------------------------------------------------------------------
# Equivalence checks at the start: the two must begin as the same network.

def check_twins(model: SSD, twin: TorchvisionSSD, batch, device: torch.device) -> dict[str, float]:
    """Largest differences between the two at their (equal) initial weights, on one batch."""
    model, twin = copy.deepcopy(model).to(device), copy.deepcopy(twin).to(device)  # keep BN stats untouched
    images = batch[0].to(device)
    with torch.no_grad():
        # Default boxes: torchvision makes them in pixels, xyxy, for the batch's image size.
        model.eval()
        twin.eval()
        image_list, _ = twin.transform(list(images))
        feature_maps = list(twin.backbone(image_list.tensors).values())
        their_boxes = twin.anchor_generator(image_list, feature_maps)[0] / model.image_size
        our_boxes = cxcywh_to_xyxy(model.priors)
        # Raw outputs (eval mode: BatchNorm uses the same running statistics in both).
        loc_pred, conf_pred = model(images)
        head_outputs = twin.head(feature_maps)
    # Loss in training mode (BatchNorm on batch statistics, identical in both): each step returns the loss
    # computed before its update (lr 0: nothing changes anyway).
    model.train()
    twin.train()
    ours = float(our_step(model, torch.optim.SGD(model.parameters(), lr=0.0), batch))
    theirs = float(torchvision_step(twin, torch.optim.SGD(twin.parameters(), lr=0.0), batch))
    return {"default boxes": float((their_boxes - our_boxes).abs().max()),
            "offsets": float((head_outputs["bbox_regression"] - loc_pred).abs().max()),
            "class scores": float((head_outputs["cls_logits"] - conf_pred).abs().max()),
            "loss": abs(ours - theirs), "our initial loss": ours, "torchvision initial loss": theirs}


# ---------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Train our default SSD and torchvision's SSD around the same backbone, on the same data "
                    "for the same time, one after the other; print steps done, mean step time, mAP@0.5 and "
                    "the median time of one training step of each.")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--time-budget", type=float, default=None,
                        help="seconds of training for EACH model (default: ours trains the default run, "
                             f"{DEFAULT_EPOCHS} epochs, and torchvision's gets the seconds that took)")
    length.add_argument("--steps", type=int, default=None, help="train each model this many steps instead")
    parser.add_argument("--num-images", type=int, default=DEFAULT_NUM_IMAGES,
                        help=f"training images, generated once and cached (default {DEFAULT_NUM_IMAGES})")
    parser.add_argument("--eval-images", type=int, default=HELD_OUT_NUM_IMAGES,
                        help=f"held-out images for the mAP (default {HELD_OUT_NUM_IMAGES})")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--lr", type=float, default=DEFAULT_LR)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader worker processes (default as ssd_lite.train: 0 on the CPU, 1 with CUDA)")
    parser.add_argument("--warmup-steps", type=int, default=300,
                        help="untimed training steps of each model before the timed runs (default 300)")
    # 20 timed steps proved too few on a 2-core machine: two runs gave median ratios of 0.75 and 1.21.
    parser.add_argument("--timing-steps", type=int, default=200, help="timed steps per model (default 200)")
    parser.add_argument("--timing-warmup", type=int, default=20, help="untimed steps first (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    size = args.image_size
    if args.steps is not None:
        length = f"{args.steps} steps"
    elif args.time_budget is not None:
        length = f"{args.time_budget:.0f} s"
    else:
        length = f"the default run's {DEFAULT_EPOCHS} epochs (ours), then the same seconds (torchvision)"
    print(f"device {device}, {torch.get_num_threads()} threads; each model trains {length} on "
          f"{args.num_images} shapes images (drawn at {SHAPES_DRAW_SIZE} px, input {size} px, batch {args.batch_size}, "
          f"seed {args.seed})")

    torch.manual_seed(args.seed)
    # As the default run: drawn at SHAPES_DRAW_SIZE, resized to the model's input when cached.
    shapes = ShapesDataset(args.num_images, image_size=SHAPES_DRAW_SIZE, seed=args.seed)
    num_classes = len(shapes.class_names)
    model = default_model(num_classes, size)
    twin = torchvision_twin(model)
    print(f"parameters: ours {sum(p.numel() for p in model.parameters()):,}, "
          f"torchvision {sum(p.numel() for p in twin.parameters()):,}; default boxes {len(model.priors)}")

    started = time.perf_counter()
    train_set = CachedDataset(shapes, size, train_transform(size, **DEFAULT_AUGMENTATION))
    held_out = ShapesDataset(args.eval_images, image_size=SHAPES_DRAW_SIZE, seed=HELD_OUT_SEED + args.seed,
                             transform=eval_transform(size))
    print(f"cached the training set in {time.perf_counter() - started:.0f} s")

    # A few augmented batches, the same for both.
    torch.manual_seed(args.seed)
    batches = []
    for batch in make_loader(train_set, args.batch_size, collate, args.seed, 0):
        batches.append(batch)
        if len(batches) == 4:
            break

    differences = check_twins(model, twin, batches[0], device)
    print("start: largest |ours - torchvision| " + ", ".join(
        f"{name} {value:.2g}" for name, value in differences.items() if "initial" not in name)
          + f" (initial loss {differences['our initial loss']:.4f} vs "
            f"{differences['torchvision initial loss']:.4f})")

    # Step timing on copies, so the training below starts from the initial weights.
    layout = dict(device=device, memory_format=torch.channels_last)  # as in training, for all three
    contenders = {"ours": (copy.deepcopy(model).to(**layout), our_step),
                  "torchvision": (copy.deepcopy(twin).to(**layout), torchvision_step)}
    step_times = time_steps(contenders, batches, device, args.timing_warmup, args.timing_steps,
                            args.lr, DEFAULT_WEIGHT_DECAY)
    del contenders

    contestants = [("ours", model, our_step), ("torchvision", twin, torchvision_step)]
    workers = args.workers if args.workers is not None else default_num_workers(device)
    # Warm-up runs on throwaway copies: in a fresh process the first training run was measured ~8% slower
    # per step than the same run repeated (memory allocation settling in), which would handicap whichever
    # model trains first below.
    if args.warmup_steps > 0:
        print(f"warm-up: {args.warmup_steps} untimed training steps of each model", flush=True)
        for name, net, step_fn in contestants:
            loader = make_loader(train_set, args.batch_size, collate, args.seed + 1, workers)
            train_for(copy.deepcopy(net), step_fn, loader, device, args.warmup_steps, None, args.lr,
                      DEFAULT_WEIGHT_DECAY, DEFAULT_WARMUP)
            del loader

    # Training, one after the other, from the same weights on the same batches (same loader seed).
    runs = {}
    for name, net, step_fn in contestants:
        torch.manual_seed(args.seed)
        loader = make_loader(train_set, args.batch_size, collate, args.seed, workers)
        steps, time_budget = args.steps, args.time_budget
        if steps is None and time_budget is None:  # the default: ours as the course trains it, then same time
            if name == "ours":
                steps = DEFAULT_EPOCHS * len(loader)
            else:
                time_budget = runs["ours"]["seconds"]
        print(f"training {name} for " + (f"{steps} steps" if steps is not None else f"{time_budget:.0f} s"),
              flush=True)
        runs[name] = train_for(net, step_fn, loader, device, steps, time_budget, args.lr,
                               DEFAULT_WEIGHT_DECAY, DEFAULT_WARMUP)
        del loader  # stop its worker process before the next run starts
    same_data = runs["ours"]["first_batch_sum"] == runs["torchvision"]["first_batch_sum"]
    # With --steps both follow the same learning-rate schedule: same weights, same batches, same maths, so
    # the two loss curves should agree step by step until float rounding makes them drift apart. (With a
    # time budget each schedule follows its own clock, so their learning rates differ from step 1.)
    common = min(runs["ours"]["steps"], runs["torchvision"]["steps"])
    curve_gap = max(abs(a - b) for a, b in zip(runs["ours"]["losses"][:common], runs["torchvision"]["losses"]))

    print("evaluating ...", flush=True)
    our_detections, targets = predict_dataset(model, held_out, batch_size=args.batch_size,
                                              score_threshold=SCORE_THRESHOLD, iou_threshold=NMS_IOU_THRESHOLD,
                                              top_k=DETECTIONS_PER_IMAGE)
    their_detections = torchvision_predictions(twin, held_out, args.batch_size)
    # The two evaluation paths must agree as well: torchvision's SSD given a copy of OUR trained weights
    # should find the very same boxes as ours (this checks the pixel -> [0, 1] conversion, among others).
    num_checked = min(64, len(held_out))
    copy_detections = torchvision_predictions(torchvision_twin(model), Subset(held_out, range(num_checked)),
                                              args.batch_size)
    num_agreeing = sum(same_detections(ours, theirs) for ours, theirs in zip(our_detections, copy_detections))
    maps = {"ours": mean_average_precision(our_detections, targets, num_classes=num_classes)["map"],
            "torchvision": mean_average_precision(their_detections, targets, num_classes=num_classes)["map"]}

    print(f"\nsame first training batch in both runs: {'yes' if same_data else 'NO'}; "
          f"held-out: {len(held_out)} images (seed {HELD_OUT_SEED + args.seed})")
    print(f"evaluation paths: torchvision's SSD holding our trained weights finds the same detections as "
          f"ours on {num_agreeing} of {num_checked} held-out images")
    if args.steps is not None:
        print(f"loss curves, step by step over {common} steps: largest difference {curve_gap:.2g}")
    print(f"{'':12} {'steps':>6} {'mean step (ms)':>15} {'of which data wait':>19} {'median step':>12} "
          f"{'final loss':>11} {'mAP@0.5':>8}")
    for name, run in runs.items():
        final_loss = statistics.mean(run["losses"][-10:])
        print(f"{name:12} {run['steps']:>6} {1000 * run['seconds'] / run['steps']:>15.1f} "
              f"{1000 * run['data_seconds'] / run['steps']:>19.1f} "
              f"{1000 * statistics.median(run['step_seconds']):>12.1f} {final_loss:>11.3f} {maps[name]:>8.4f}")
    first_steps = {name: round(1000 * run["step_seconds"][0]) for name, run in runs.items()}
    print(f"(first step, DataLoader start included: ours {first_steps['ours']} ms, "
          f"torchvision {first_steps['torchvision']} ms)")
    print(f"\ntraining step alone, same {len(batches)} batches, {args.timing_steps} steps after "
          f"{args.timing_warmup} warm-up (forward + loss + backward + AdamW step):")
    # The minimum is the step with the least interference from other processes; on a busy machine it is
    # the steadier of the two figures.
    for name, times in step_times.items():
        print(f"  {name:28} median {statistics.median(times):8.1f} ms, min {min(times):8.1f} ms")
    medians = {name: statistics.median(times) for name, times in step_times.items()}
    print(f"  ours / torchvision (medians): {medians['ours'] / medians['torchvision']:.2f} (both match in the "
          "step); below 1: ours is faster")
    print("\nmean step = training seconds / steps; it and the median step include waiting for data. Timings "
          "on a busy machine are inflated: compare only the two models of one run.")


if __name__ == "__main__":
    main()
