"""Data: what every data set shares -- the item convention, reading image files, batching.

Every data set of the course returns `(image, target)`:
- image: float tensor (3, H, W) with values in [0, 1];
- target: {"boxes": (G, 4) float32 xyxy normalised to [0, 1], "labels": (G,) int64 in 1..C-1}, and for
  VOC folders also "difficult": (G,) bool. G = 0 (an image with no objects) is valid.
`class_names[label]` names a label; index 0 is always "background". Image sizes are written
(width, height), as PIL and the detect command's JSON write them.

The data sets themselves: ssd_lite.shapes (synthetic, no download) and ssd_lite.voc (Pascal VOC folders,
and the course's sample photos). Augmentation: ssd_lite.augment.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ssd_lite.augment import eval_transform

# The image files the course reads: a VOC folder's JPEGImages/<id>.<extension>, a folder given to detect.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

Transform = Callable[[Tensor, dict], tuple[Tensor, dict]]


class ImageReadError(ValueError):
    """An image file that cannot be decoded (truncated, not an image, ...); the message names the file."""


# PIL's modes of 16-bit greyscale images (PNG, TIFF); "I" is 32-bit, and holds a 16-bit PNG in older PILs.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _rgb_pixels(pil_image: Image.Image) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] from a PIL image of any mode."""
    if pil_image.mode not in _SIXTEEN_BIT_MODES:
        return np.asarray(pil_image.convert("RGB"), dtype=np.float32) / 255
    # convert("RGB") would clip every 16-bit value above 255 to white: scale by 16 bits' own maximum.
    grey = np.asarray(pil_image).astype(np.float32)
    if grey.size and (grey.min() < 0 or grey.max() > 65535):
        raise ValueError(f"{pil_image.mode} pixel values from {grey.min():g} to {grey.max():g} "
                         f"do not fit 16 bits (0 to 65535)")
    return np.repeat(grey[:, :, None] / 65535, 3, axis=2)


def load_image(path: str | Path) -> Tensor:
    """An image file as a (3, H, W) float32 tensor in [0, 1] (greyscale, 16-bit and RGBA files too).

    Raises ImageReadError (a ValueError) naming the file when it cannot be decoded: truncated, not an
    image at all (e.g. a macOS "._name.jpg" resource file), or in an unsupported format.
    A missing file raises FileNotFoundError, as open() does.
    """
    path = Path(path)
    try:
        with Image.open(path) as pil_image:
            pixels = _rgb_pixels(pil_image)
    except FileNotFoundError:
        raise
    # PIL reports a broken file with many exception types (OSError, SyntaxError, ValueError, ...).
    except Exception as error:
        raise ImageReadError(f"{path}: cannot read the image ({type(error).__name__}: {error})") from error
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))  # (H, W, 3) -> (3, H, W)


def collate(batch: list[tuple[Tensor, dict]]) -> tuple[Tensor, list[dict]]:
    """Join (image, target) pairs into a batch for a DataLoader: (images (B, 3, H, W), [target] * B).

    Images are stacked into one tensor, so they must all have the same size (resize them in the
    transform). Targets stay a list: each image has its own number of objects.
    """
    images, targets = zip(*batch)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise ValueError(f"collate needs images of one size to stack them, got sizes {sorted(sizes)}; "
                         f"resize them in the data set's transform")
    return torch.stack(images), list(targets)


class CachedDataset(Dataset):
    """Another data set's images, resized to image_size x image_size once and kept as uint8 in memory.

    ds[i] = transform(image (3, S, S) float in [0, 1], target) -- the augmentation runs on every read,
    so each epoch still sees new random crops and flips of the cached images.
    """

    def __init__(self, dataset: Dataset, image_size: int, transform: Transform | None = None,
                 progress: bool = False):
        resize = eval_transform(image_size)
        # Filled in place, without a second copy: 108 KiB per 192 px image (1.5 GB for the default run's 13600).
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
