"""Running a trained SSD: images in, detections out (paper, section 3, "Inference").

predict: resize the images to the network's input, run the network, decode the offsets and keep the
best boxes per class with NMS (ssd_lite.nms.postprocess). Boxes come back normalised to [0, 1], so they
apply to the original image whatever its size: multiply by its width and height for pixels.

Command line: `python -m ssd_lite.detect --checkpoint model.pt --images DIR --out detections.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ssd_lite import cli
from ssd_lite.augment import eval_transform
from ssd_lite.checkpoint import load_checkpoint, write_atomically
from ssd_lite.data import IMAGE_EXTENSIONS, ImageReadError, load_image
from ssd_lite.device import use_threads
from ssd_lite.model import SSD
from ssd_lite.nms import postprocess

def _as_input_batch(images, image_size: int) -> Tensor:
    """A (B, 3, S, S) batch from a batch tensor or a list of (3, H, W) images of any sizes."""
    if isinstance(images, Tensor) and images.dim() == 3:
        images = [images]
    if isinstance(images, Tensor) and images.dim() == 4 and images.shape[-2:] == (image_size, image_size):
        return images
    resize = eval_transform(image_size)
    no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    resized = []
    for image in images:
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise ValueError(f"each image must be a (3, H, W) float tensor in [0, 1], got {shape}")
        resized.append(resize(image.cpu(), no_boxes)[0])
    return torch.stack(resized) if resized else torch.zeros(0, 3, image_size, image_size)


@torch.no_grad()
def predict(model: SSD, images, score_threshold: float = 0.01, iou_threshold: float = 0.45,
            top_k: int = 200, batch_size: int = 32) -> list[dict[str, Tensor]]:
    """Detections for each image.

    images: a (B, 3, H, W) tensor, one (3, H, W) image, or a list of (3, H, W) images of any sizes, floats
      in [0, 1]; they are resized to the model's input (model.image_size) first.
    score_threshold, iou_threshold, top_k: see ssd_lite.nms.postprocess (0.01 keeps nearly everything, as
      evaluation needs; use ~0.5 to show only confident detections).
    Returns one dict per image {"boxes": (K, 4) normalised xyxy, "scores": (K,), "labels": (K,)}, on the CPU.
    """
    batch = _as_input_batch(images, model.image_size)
    was_training = model.training
    model.eval()
    device = model.priors.device
    detections = []
    for start in range(0, len(batch), batch_size):
        loc_pred, conf_pred = model(batch[start:start + batch_size].to(device))
        found = postprocess(loc_pred, conf_pred, model.priors, score_threshold=score_threshold,
                            iou_threshold=iou_threshold, top_k=top_k, class_scores=model.class_scores)
        detections += [{key: value.cpu() for key, value in image.items()} for image in found]
    model.train(was_training)
    return detections


def predict_dataset(model: SSD, dataset: Dataset, batch_size: int = 32, score_threshold: float = 0.01,
                    iou_threshold: float = 0.45, top_k: int = 200) -> tuple[list[dict], list[dict]]:
    """Run the model on every item of an (image, target) data set, for evaluation.

    Returns (detections, targets): two lists with one dict per image, in the data set's order, ready for
    ssd_lite.evaluate.mean_average_precision. Images may have any size (they are resized to the model's).
    """
    detections, targets, images = [], [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        images.append(image)
        targets.append(target)
        if len(images) == batch_size or i == len(dataset) - 1:
            detections += predict(model, images, score_threshold, iou_threshold, top_k, batch_size)
            images = []
    return detections, targets


def detections_to_json(detections: Sequence[dict], image_names: Sequence[str], image_sizes: Sequence[tuple[int, int]],
                       class_names: Sequence[str]) -> list[dict]:
    """Flatten detections into JSON records: {"image", "label" (class name), "score", "box" (pixels)}.

    image_sizes: (width, height) of each original image; boxes are scaled to its pixels, xyxy.
    """
    records = []
    for found, name, (width, height) in zip(detections, image_names, image_sizes):
        scale = torch.tensor([width, height, width, height], dtype=torch.float32)
        for box, score, label in zip((found["boxes"] * scale).tolist(), found["scores"].tolist(),
                                     found["labels"].tolist()):
            records.append({"image": name, "label": class_names[label], "score": round(score, 5),
                            "box": [round(v, 2) for v in box]})
    return records


def check_json_output(path: Path) -> bool:
    """Make sure the detections can be written to `path` before the first image is read.

    Returns True when an existing detections file (a JSON list written by this command) will be replaced;
    any other existing file is refused (FileExistsError), never overwritten.
    """
    if path.is_dir():
        raise IsADirectoryError(f"--out {path} is a folder: give a file name, e.g. {path / 'detections.json'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write to the folder {path.parent}")
    if not path.exists():
        return False
    try:
        previous = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        previous = None
    if not (isinstance(previous, list) and all(isinstance(r, dict) and "image" in r for r in previous)):
        raise FileExistsError(f"{path} exists and is not a detections file written by ssd_lite.detect: refusing "
                              "to overwrite it. Choose another --out, or move that file away first")
    return True


def list_images(folder: Path) -> tuple[list[Path], int]:
    """The image files of a folder, sorted, and how many hidden files were passed over (".name", such as
    the "._name.jpg" files macOS leaves on other file systems: they hold metadata, not pixels)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    visible = [p for p in files if not p.name.startswith(".")]
    return visible, len(files) - len(visible)


def detect_folder(model: SSD, files: Sequence[Path], class_names: Sequence[str], score_threshold: float,
                  iou_threshold: float, top_k: int, batch_size: int = 8,
                  progress: bool = False) -> tuple[list[dict], list[str]]:
    """Detections for every readable file, in batches; returns (JSON records, problems with unreadable files).

    One unreadable file is skipped and reported, never fatal: the detections of the others still count.
    """
    records, problems = [], []
    for start in tqdm(range(0, len(files), batch_size), desc="detecting", unit="batch", disable=not progress,
                      mininterval=1.0):
        images, names = [], []
        for file in files[start:start + batch_size]:
            try:
                images.append(load_image(file))
                names.append(file.name)
            except (ImageReadError, OSError) as error:
                problems.append(str(error))
        if images:
            found = predict(model, images, score_threshold, iou_threshold, top_k, batch_size)
            records += detections_to_json(found, names, [(image.shape[2], image.shape[1]) for image in images],
                                          class_names)
    return records, problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ssd_lite.detect",
        description="Detect objects in every image of a folder with a trained checkpoint; write a JSON list "
                    "of {image, label, score, box: [x_min, y_min, x_max, y_max] in pixels of the image}. "
                    "Unreadable images are skipped and listed (exit status 1); the others are still written.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pt file from python -m ssd_lite.train")
    parser.add_argument("--images", type=Path, required=True,
                        help=f"a folder of images ({', '.join(IMAGE_EXTENSIONS)})")
    parser.add_argument("--out", type=Path, required=True,
                        help="the JSON file to write (an existing file is replaced only if it is an earlier "
                             "detections file)")
    parser.add_argument("--score-threshold", type=cli.fraction, default=0.3,
                        help="keep detections scoring above this, in [0, 1] (default 0.3)")
    parser.add_argument("--iou-threshold", type=cli.fraction, default=0.45,
                        help="NMS IoU threshold, in [0, 1] (default 0.45)")
    parser.add_argument("--top-k", type=cli.positive_int, default=200, help="at most this many detections per image")
    parser.add_argument("--batch-size", type=cli.positive_int, default=8,
                        help="images per forward pass (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    cli.add_common_flags(parser)
    args = parser.parse_args(argv)

    if not args.images.is_dir():
        parser.error(f"--images must be a folder, got {args.images}")
    files, hidden = list_images(args.images)
    if not files:
        parser.error(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.images}")
    if check_json_output(args.out):
        print(f"note: replacing the earlier detections in {args.out}")
    use_threads(args.threads)
    model, checkpoint = load_checkpoint(args.checkpoint, device=args.device)
    records, problems = detect_folder(model, files, checkpoint["class_names"], args.score_threshold,
                                      args.iou_threshold, args.top_k, args.batch_size, not args.no_progress)
    write_atomically(args.out, lambda file: file.write(json.dumps(records, indent=1).encode()))
    read = len(files) - len(problems)
    print(f"{len(records)} detections in {read} images written to {args.out}" +
          (f" ({hidden} hidden files such as macOS ._* passed over)" if hidden else ""))
    if problems:
        print(f"skipped {len(problems)} of {len(files)} images that could not be read:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="python -m ssd_lite.detect"))
