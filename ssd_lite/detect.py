"""Running a trained SSD: images in, detections out (paper, section 3, "Inference").

predict: resize the images to the network's input, run the network, decode the offsets and keep the
best boxes per class with NMS (ssd_lite.nms.detect). Boxes come back normalised to [0, 1], so they
apply to the original image whatever its size: multiply by its width and height for pixels.

Command line: `python -m ssd_lite.detect --checkpoint model.pt --images DIR --out detections.json`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ssd_lite.augment import eval_transform
from ssd_lite.model import SSD
from ssd_lite.nms import detect

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


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
    score_threshold, iou_threshold, top_k: see ssd_lite.nms.detect (0.01 keeps nearly everything, as
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
        found = detect(loc_pred, conf_pred, model.priors, score_threshold=score_threshold,
                       iou_threshold=iou_threshold, top_k=top_k)
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


def load_image(path: str | Path) -> Tensor:
    """An image file as a (3, H, W) float tensor in [0, 1]."""
    with Image.open(path) as pil_image:
        pixels = np.array(pil_image.convert("RGB"))
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255


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


def main(argv: Sequence[str] | None = None) -> None:
    from ssd_lite.train import load_checkpoint  # detect's command line reads checkpoints made by train

    parser = argparse.ArgumentParser(
        prog="python -m ssd_lite.detect",
        description="Detect objects in every image of a folder with a trained checkpoint; write a JSON list "
                    "of {image, label, score, box: [x_min, y_min, x_max, y_max] in pixels of the image}.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .pt file from python -m ssd_lite.train")
    parser.add_argument("--images", type=Path, required=True, help="a folder of .jpg/.png images")
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--score-threshold", type=float, default=0.3,
                        help="keep detections scoring above this (default 0.3)")
    parser.add_argument("--iou-threshold", type=float, default=0.45, help="NMS IoU threshold (default 0.45)")
    parser.add_argument("--top-k", type=int, default=200, help="at most this many detections per image")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args(argv)

    if not args.images.is_dir():
        parser.error(f"--images must be a folder, got {args.images}")
    files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        parser.error(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {args.images}")
    model, checkpoint = load_checkpoint(args.checkpoint, device=args.device)
    records = []
    for file in files:
        image = load_image(file)
        found = predict(model, image, args.score_threshold, args.iou_threshold, args.top_k)
        records += detections_to_json(found, [file.name], [(image.shape[2], image.shape[1])],
                                      checkpoint["class_names"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1))
    print(f"{len(records)} detections in {len(files)} images written to {args.out}")


if __name__ == "__main__":
    main()
