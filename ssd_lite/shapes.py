"""Synthetic shapes: a detection data set that needs no download.

ShapesDataset draws 1 to 5 coloured shapes (ellipse, rectangle, triangle, star, cross) on busy
backgrounds. Every image is reproducible from (seed, index), and its small images keep training fast
enough for a CPU. Items follow the course's convention (see ssd_lite.data): image (3, S, S) float in
[0, 1], target {"boxes": (G, 4) normalised xyxy, "labels": (G,) in 1..5}.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset

from ssd_lite.boxes import check_boxes
from ssd_lite.data import Transform

SHAPE_CLASS_NAMES = ("ellipse", "rectangle", "triangle", "star", "cross")

def _star_outline(points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    """(2 * points, 2) corners of a star centred on (0, 0), tips at radius 1."""
    angles = np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_radius)
    return np.stack([radii * np.cos(angles), -radii * np.sin(angles)], axis=1)


def _cross_outline(arm_width: float = 0.36) -> np.ndarray:
    """(12, 2) corners of a plus sign centred on (0, 0), filling [-1, 1] x [-1, 1]; each arm is
    arm_width times as wide as the whole cross."""
    a = arm_width
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
                     [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]], dtype=float)


# Each shape as a polygon around (0, 0); it is rotated (some shapes only), then stretched to fill the
# box chosen for it, so the box is tight by construction. The ellipse is a many-sided polygon.
_SHAPE_OUTLINES = {
    "ellipse": np.stack([np.cos(np.linspace(0, 2 * np.pi, 48, endpoint=False)),
                         np.sin(np.linspace(0, 2 * np.pi, 48, endpoint=False))], axis=1),
    "rectangle": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float),
    "triangle": np.array([[0, -1], [1, 1], [-1, 1]], dtype=float),
    "star": _star_outline(),
    "cross": _cross_outline(),
}
# Stretching a rotated rectangle or cross would shear it (a parallelogram, a bent plus sign), so those
# stay upright; triangles and stars still look like themselves at any angle.
_MAX_ROTATION_DEGREES = {"ellipse": 0, "rectangle": 0, "triangle": 180, "star": 180, "cross": 0}


def _random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float32 in [0, 1]: a gradient, stripes or blotches, so "background" is not
    simply "one flat colour" and the detector must learn what the shapes look like."""
    ys, xs = np.mgrid[0:size, 0:size] / size
    angle = rng.uniform(0, 2 * np.pi)
    along = xs * np.cos(angle) + ys * np.sin(angle)  # position along a random direction
    colour_a, colour_b = rng.uniform(0, 1, size=(2, 3))
    kind = rng.integers(3)
    if kind == 0:  # linear gradient between two colours
        mix = (along - along.min()) / (along.max() - along.min())
    elif kind == 1:  # soft stripes of a random period
        period = rng.uniform(0.05, 0.3)
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * along / period)
    else:  # blotches: an n x n grid of random values, enlarged by bilinear interpolation
        n = rng.integers(3, 9)
        coarse = rng.uniform(0, 1, size=(n, n))
        grid_position = np.linspace(0, n - 1, size)  # each pixel's row (or column) on the coarse grid
        cell = np.minimum(grid_position.astype(int), n - 2)
        weight = grid_position - cell
        rows = coarse[cell] * (1 - weight[:, None]) + coarse[cell + 1] * weight[:, None]  # (size, n)
        mix = rows[:, cell] * (1 - weight) + rows[:, cell + 1] * weight  # (size, size)
    background = colour_a + mix[..., None] * (colour_b - colour_a)
    return background.astype(np.float32)


def _shape_mask(rng: np.random.Generator, shape: str, box: tuple[float, float, float, float],
                size: int) -> np.ndarray:
    """(size, size) bool mask of `shape` drawn to fill `box` (pixel xyxy)."""
    outline = _SHAPE_OUTLINES[shape]
    max_angle = math.radians(_MAX_ROTATION_DEGREES[shape])
    angle = rng.uniform(-max_angle, max_angle)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    outline = outline @ rotation.T
    # Stretch the rotated outline so its extent is exactly the box.
    low, high = outline.min(axis=0), outline.max(axis=0)
    x_min, y_min, x_max, y_max = box
    unit = (outline - low) / (high - low)
    points = np.stack([x_min + unit[:, 0] * (x_max - x_min), y_min + unit[:, 1] * (y_max - y_min)], axis=1)
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1)
    return np.asarray(canvas, dtype=bool)


class ShapesDataset(Dataset):
    """Synthetic detection data: 1 to 5 coloured shapes on a textured background.

    num_images: the length of the data set; image_size: images are image_size x image_size;
    seed: picks the data set (two data sets with different seeds share no images);
    transform: optional `transform(image, target) -> (image, target)`, applied last.

    ds[i] returns (image (3, S, S) float in [0, 1], {"boxes": (G, 4) normalised xyxy, "labels": (G,)}).
    Item i is drawn from a random generator seeded with (seed, i), so it is the same whatever order
    the items are read in, in any worker process.

    Shapes: ellipse, rectangle, triangle, star, cross; box sides from 8% to 70% of the image, aspect
    ratios from 1:3 to 3:1. Shapes may overlap, but a new shape may not hide more than half of one
    already drawn, so every label is fair. Each box is tight around the shape's visible pixels, as in
    VOC ("the visible extent of the object").
    """

    class_names = ("background", *SHAPE_CLASS_NAMES)

    min_objects, max_objects = 1, 5
    min_side, max_side = 0.08, 0.70  # box side, as a fraction of the image side
    max_aspect_ratio = 3.0
    max_hidden_fraction = 0.5  # of an existing shape that a new one may cover
    noise_std = 0.03  # pixel noise over the whole image, shapes included

    def __init__(self, num_images: int, image_size: int = 128, seed: int = 0,
                 transform: Transform | None = None):
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        if image_size < 32:
            raise ValueError(f"image_size must be at least 32 pixels, got {image_size}")
        self.num_images = num_images
        self.image_size = image_size
        self.seed = seed
        self.transform = transform

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        index = index % self.num_images
        rng = np.random.default_rng([self.seed, index])
        image, boxes, labels = self._draw(rng)
        target = {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels)}
        check_boxes(target["boxes"], where=f"ShapesDataset(seed={self.seed})[{index}]")
        image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))  # (H, W, 3) -> (3, H, W)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target

    def _random_box(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """A pixel xyxy box: log-uniform side (small shapes as common as large ones) and aspect ratio."""
        side = math.exp(rng.uniform(math.log(self.min_side), math.log(self.max_side)))
        aspect = math.exp(rng.uniform(-math.log(self.max_aspect_ratio), math.log(self.max_aspect_ratio)))
        w = min(side * math.sqrt(aspect), 0.9) * self.image_size
        h = min(side / math.sqrt(aspect), 0.9) * self.image_size
        w, h = max(w, 0.06 * self.image_size), max(h, 0.06 * self.image_size)
        x_min = rng.uniform(0, self.image_size - w)
        y_min = rng.uniform(0, self.image_size - h)
        return x_min, y_min, x_min + w, y_min + h

    def _draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        size = self.image_size
        image = _random_background(rng, size)
        # owner[y, x] = index of the shape visible at that pixel, -1 for background.
        owner = np.full((size, size), -1, dtype=np.int64)
        drawn_areas, labels = [], []
        for _ in range(rng.integers(self.min_objects, self.max_objects + 1)):
            for _attempt in range(20):
                label = int(rng.integers(1, len(self.class_names)))
                mask = _shape_mask(rng, self.class_names[label], self._random_box(rng), size)
                if mask.sum() < 12:  # too few pixels to be recognisable
                    continue
                # Would this shape hide too much of one already drawn? Then try another placement.
                still_visible = np.bincount(owner[~mask & (owner >= 0)], minlength=len(labels))
                if np.any(still_visible < (1 - self.max_hidden_fraction) * np.array(drawn_areas, dtype=float)):
                    continue
                colour = self._contrasting_colour(rng, image[mask])
                image[mask] = colour
                owner[mask] = len(labels)
                drawn_areas.append(int(mask.sum()))
                labels.append(label)
                break
        image = np.clip(image + rng.normal(0, self.noise_std, image.shape), 0, 1).astype(np.float32)
        # Boxes around the visible pixels, in pixel-edge coordinates: pixel column c spans [c, c + 1).
        boxes = np.zeros((len(labels), 4), dtype=np.float32)
        for k in range(len(labels)):
            rows, cols = np.nonzero(owner == k)
            boxes[k] = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        return image, boxes / size, np.array(labels, dtype=np.int64)

    @staticmethod
    def _contrasting_colour(rng: np.random.Generator, pixels_below: np.ndarray) -> np.ndarray:
        """A random colour that stands out from the pixels it will cover (mean difference >= 0.3)."""
        below = pixels_below.mean(axis=0)
        best, best_difference = None, -1.0
        for _ in range(10):
            colour = rng.uniform(0, 1, size=3)
            difference = np.abs(colour - below).mean()
            if difference >= 0.3:
                return colour
            if difference > best_difference:
                best, best_difference = colour, difference
        return best
