"""Data augmentation, the SSD recipe (paper, section 2.2 "Data augmentation" and section 3.6).

SSD owes much of its accuracy to augmentation (the paper's table 2: +8.8 mAP on VOC2007). Each training
image goes through:
1. photometric distortion: random brightness, contrast, saturation, hue and channel order;
2. zoom out ("expand", section 3.6): paste the image into a canvas up to `zoom_out` times larger, filled
   with the mean colour, so objects become small -- training data for the fine feature maps;
3. minimum-IoU random crop: cut a patch whose IoU with some object is at least one of 0.1, 0.3, 0.5,
   0.7, 0.9 (or keep the whole image), keeping the objects whose centres fall inside the patch;
4. horizontal flip with probability 0.5;
5. resize to the network's square input.
All five are torchvision.transforms.v2 transforms that move the boxes with the pixels; boxes leaving the
image are clipped (ClampBoundingBoxes), and boxes cut to less than a pixel, or outside the crop, are
dropped with their labels (SanitizeBoundingBoxes). An image can end with no boxes: that is valid.

Our functions take and return the course's convention -- image (3, H, W) float in [0, 1], target
{"boxes": (G, 4) normalised xyxy, "labels": (G,), optional "difficult": (G,)} -- and convert to
torchvision's pixel-coordinate BoundingBoxes and back inside.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from ssd_lite.boxes import check_boxes
from ssd_lite.model import IMAGENET_MEAN


def _per_box_tensors(sample) -> tuple[Tensor, ...]:
    """Everything SanitizeBoundingBoxes must drop along with a box: labels and, if present, difficult."""
    _, target = sample
    return tuple(target[key] for key in ("labels", "difficult") if key in target)


def _to_torchvision(image: Tensor, target: dict) -> tuple[tv_tensors.Image, dict]:
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) tensor, got {shape}")
    if "boxes" not in target or "labels" not in target:
        raise ValueError(f"target must have 'boxes' and 'labels', got keys {sorted(target)}")
    boxes = target["boxes"]
    check_boxes(boxes, "target['boxes']")
    height, width = image.shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    tv_target = dict(target)
    tv_target["boxes"] = tv_tensors.BoundingBoxes(boxes.float() * scale, format="XYXY",
                                                  canvas_size=(height, width))
    return tv_tensors.Image(image.float()), tv_target


def _from_torchvision(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    height, width = image.shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    out = dict(target)
    out["boxes"] = (target["boxes"].as_subclass(Tensor) / scale).clamp(0, 1).float()
    return image.as_subclass(Tensor).clamp(0, 1), out


class SSDTransform:
    """A callable (image, target) -> (image, target) wrapping a torchvision v2 pipeline.

    `with_boxes` runs when the image has at least one box, `without_boxes` when it has none:
    RandomIoUCrop needs boxes to aim at (with none it only gives up after sampling "keep the whole image",
    and with sampler options lacking 1.0 it would loop forever), so the box-free pipeline leaves it out.
    """

    def __init__(self, with_boxes: v2.Transform, without_boxes: v2.Transform):
        self.with_boxes = with_boxes
        self.without_boxes = without_boxes

    def __call__(self, image: Tensor, target: dict) -> tuple[Tensor, dict]:
        image, target = _to_torchvision(image, target)
        pipeline = self.with_boxes if len(target["boxes"]) else self.without_boxes
        image, target = pipeline(image, target)
        return _from_torchvision(image, target)

    def __repr__(self) -> str:
        return f"SSDTransform({self.with_boxes})"


def train_transform(image_size: int, photometric: bool = True, zoom_out: float = 2.0,
                    iou_crop: bool = True, crop_min_scale: float = 0.5, flip: bool = True) -> SSDTransform:
    """The SSD training augmentation, ending in a square image_size x image_size image.

    photometric: RandomPhotometricDistort (p=0.5 per distortion). zoom_out: the largest canvas side as a
    multiple of the image's (the paper uses 4 on VOC; <= 1 turns it off), applied half the time.
    iou_crop: RandomIoUCrop with crops of crop_min_scale..1 of each side (the paper: 0.1..1 of the area, i.e.
    0.3 per side in torchvision's default). flip: RandomHorizontalFlip(0.5).
    Our defaults are milder than the paper's (zoom 2, crops of at least half a side): the course's images
    are small (drawn at 128 px) and its training short; see lesson 06 for the measurement.
    Returns a callable (image (3, H, W) float, target) -> (image (3, S, S), target with normalised boxes).
    """
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size}")
    steps = []
    if photometric:
        steps.append(v2.RandomPhotometricDistort(p=0.5))
    if zoom_out > 1:
        # The canvas is filled with the mean colour the model subtracts, so after standardisation the
        # padding is close to zero, as in the original Caffe code.
        steps.append(v2.RandomZoomOut(fill={tv_tensors.Image: IMAGENET_MEAN, "others": 0},
                                      side_range=(1.0, zoom_out), p=0.5))
    crop = [v2.RandomIoUCrop(min_scale=crop_min_scale), v2.ClampBoundingBoxes()] if iou_crop else []
    finish = []
    if flip:
        finish.append(v2.RandomHorizontalFlip(p=0.5))
    finish += [v2.Resize((image_size, image_size), antialias=True),
               v2.ClampBoundingBoxes(),
               # Drop boxes under one pixel and the boxes RandomIoUCrop marked as outside its patch.
               v2.SanitizeBoundingBoxes(min_size=1, labels_getter=_per_box_tensors)]
    return SSDTransform(v2.Compose(steps + crop + finish), v2.Compose(steps + finish))


def eval_transform(image_size: int) -> SSDTransform:
    """Resize only, to image_size x image_size: normalised boxes are unchanged by a resize."""
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size}")
    resize = v2.Compose([v2.Resize((image_size, image_size), antialias=True)])
    return SSDTransform(resize, resize)
