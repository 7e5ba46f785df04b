"""Data: images and their targets, generated (shapes) or read from Pascal VOC folders.

Every data set here returns `(image, target)`:
- image: float tensor (3, H, W) with values in [0, 1];
- target: {"boxes": (G, 4) float32 xyxy normalised to [0, 1], "labels": (G,) int64 in 1..C-1}, and for
  VOC folders also "difficult": (G,) bool. G = 0 (an image with no objects) is valid.
`class_names[label]` names a label; index 0 is always "background".

Two sources:
- ShapesDataset draws coloured shapes on busy backgrounds. It needs no download, every image is
  reproducible from (seed, index), and its small images keep training fast enough for a CPU.
- VOCDataset reads the Pascal VOC folder layout (JPEGImages/, Annotations/, ImageSets/Main/), used by
  VOC itself, by many labelling tools, and by our sample photos in data/photos. It checks every
  annotation as it reads it: a box with x_max <= x_min is reported with its file at once, instead of
  turning the loss into NaN hundreds of iterations later.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset

from ssd_lite.boxes import check_boxes

SHAPE_CLASS_NAMES = ("ellipse", "rectangle", "triangle", "star", "cross")

# Folder of the real sample photos shipped with the course (a VOC folder with one split, "all").
PHOTOS_DIR = Path(__file__).resolve().parents[1] / "data" / "photos"

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

Transform = Callable[[Tensor, dict], tuple[Tensor, dict]]


# ----------------------------------------------------------------------------------------------------
# Synthetic shapes
# ----------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------
# Pascal VOC folders
# ----------------------------------------------------------------------------------------------------

class AnnotationError(ValueError):
    """A VOC annotation or folder that cannot be used; the message names the file and the problem."""


def _number(element: ET.Element, tag: str, where: str) -> float:
    """The number in <tag> under `element`, or AnnotationError naming what is missing or wrong."""
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise AnnotationError(f"{where}: missing <{tag}>")
    try:
        value = float(child.text)
    except ValueError:
        raise AnnotationError(f"{where}: <{tag}> is not a number: {child.text.strip()!r}") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: <{tag}> is not a finite number: {child.text.strip()!r}")
    return value


def read_voc_annotation(xml_path: str | Path) -> dict:
    """Read and check one VOC annotation file.

    Returns {"filename": str ("" if the file has none), "width": int, "height": int,
    "objects": [{"name": str, "box": [x_min, y_min, x_max, y_max], "difficult": bool}, ...]}.

    Boxes are converted to 0-based pixel-edge coordinates (floats): VOC numbers pixels from 1 and
    <xmax> names the last pixel inside the box, so the box spans from the left edge of pixel
    <xmin> to the right edge of pixel <xmax>, that is x_min = xmin - 1 and x_max = xmax (same for
    y). A box that sticks out of the image by up to 1 pixel (a common rounding slip of labelling
    tools) is clipped to it; more than that is an error.

    Raises AnnotationError (a ValueError) naming the file, the object (counted from 1, in file
    order) and the problem: malformed XML, missing <size>, <name> or <bndbox>, a coordinate that is
    not a number, <xmax> <= <xmin> or <ymax> <= <ymin> (in the file's numbers), or a box outside the
    image.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise AnnotationError(f"{xml_path}: malformed XML ({error})") from None
    except OSError as error:
        raise AnnotationError(f"{xml_path}: cannot read the annotation ({error.strerror})") from None

    size = root.find("size")
    if size is None:
        raise AnnotationError(f"{xml_path}: missing <size> (the image's width and height)")
    width = _number(size, "width", f"{xml_path}: <size>")
    height = _number(size, "height", f"{xml_path}: <size>")
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        raise AnnotationError(f"{xml_path}: <size> must give positive whole numbers, "
                              f"got width {width:g} and height {height:g}")
    width, height = int(width), int(height)

    objects = []
    for number, element in enumerate(root.findall("object"), start=1):
        name_element = element.find("name")
        name = (name_element.text or "").strip() if name_element is not None else ""
        where = f"{xml_path}: object {number}" + (f" ({name!r})" if name else "")
        if not name:
            raise AnnotationError(f"{where}: missing <name> (the object's class)")
        bndbox = element.find("bndbox")
        if bndbox is None:
            raise AnnotationError(f"{where}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, tag, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        # The file's own numbers go in the messages, so the user can find them in the file. In VOC's
        # convention xmax == xmin would be a box one pixel wide; in practice it is a slip (a click
        # instead of a drag), and the ports that forget the 1-based shift turn it into a zero-width
        # box and a NaN loss, so it is rejected too.
        if xmax <= xmin:
            raise AnnotationError(f"{where}: x_max ({xmax:g}) <= x_min ({xmin:g})")
        if ymax <= ymin:
            raise AnnotationError(f"{where}: y_max ({ymax:g}) <= y_min ({ymin:g})")
        box = [xmin - 1, ymin - 1, xmax, ymax]  # 1-based pixel numbers -> 0-based pixel edges
        slack = 1.0
        if box[0] < -slack or box[1] < -slack or box[2] > width + slack or box[3] > height + slack:
            raise AnnotationError(f"{where}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside "
                                  f"the {width}x{height} image (VOC coordinates run from 1 to the size)")
        box = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], width), min(box[3], height)]
        difficult_element = element.find("difficult")
        difficult = difficult_element is not None and (difficult_element.text or "0").strip() == "1"
        objects.append({"name": name, "box": box, "difficult": difficult})

    filename_element = root.find("filename")
    filename = (filename_element.text or "").strip() if filename_element is not None else ""
    return {"filename": filename, "width": width, "height": height, "objects": objects}


def _find_image(root: Path, image_id: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        path = root / "JPEGImages" / f"{image_id}{extension}"
        if path.exists():
            return path
    return None


class VOCDataset(Dataset):
    """A Pascal VOC folder: root/JPEGImages/<id>.jpg, root/Annotations/<id>.xml and
    root/ImageSets/Main/<split>.txt (one id per line).

    class_names: ("background", name1, ...) fixes the labels (label k = class_names[k]); None infers
    them from the split's annotations: "background", then the names found, sorted.
    keep_difficult: False drops objects marked <difficult>1</difficult>.
    transform: optional `transform(image, target) -> (image, target)`, applied last.

    ds[i] returns (image (3, H, W) float in [0, 1] at the file's own size,
    {"boxes": (G, 4) normalised xyxy float32, "labels": (G,) int64, "difficult": (G,) bool}).

    All annotations are read and checked when the data set is made, so a dirty file stops you at
    once with its name (AnnotationError), not in the middle of training.
    """

    def __init__(self, root: str | Path, split: str = "train", class_names: tuple[str, ...] | None = None,
                 transform: Transform | None = None, keep_difficult: bool = True):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.keep_difficult = keep_difficult
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.exists():
            available = sorted(p.stem for p in (self.root / "ImageSets" / "Main").glob("*.txt"))
            raise FileNotFoundError(f"no split file {split_file}; splits found: {available or 'none'}")
        self.ids = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]

        self.image_files: list[Path] = []
        self.annotations: list[dict] = []
        for image_id in self.ids:
            xml_path = self.root / "Annotations" / f"{image_id}.xml"
            if not xml_path.exists():
                raise AnnotationError(f"{split_file}: lists id {image_id!r}, but {xml_path} does not exist")
            image_file = _find_image(self.root, image_id)
            if image_file is None:
                raise AnnotationError(f"{xml_path}: no image file for id {image_id!r} "
                                      f"(looked for {self.root / 'JPEGImages' / image_id}"
                                      f"{{{','.join(IMAGE_EXTENSIONS)}}})")
            annotation = read_voc_annotation(xml_path)
            annotation["xml_path"] = xml_path
            self.image_files.append(image_file)
            self.annotations.append(annotation)

        if class_names is None:
            found = {obj["name"] for annotation in self.annotations for obj in annotation["objects"]}
            class_names = ("background", *sorted(found - {"background"}))
        class_names = tuple(class_names)
        if not class_names or class_names[0] != "background":
            raise ValueError(f"class_names must start with 'background' (label 0), got {class_names}")
        self.class_names = class_names
        label_of = {name: label for label, name in enumerate(class_names) if label > 0}
        for annotation in self.annotations:
            for number, obj in enumerate(annotation["objects"], start=1):
                if obj["name"] == "background":
                    raise AnnotationError(f"{annotation['xml_path']}: object {number}: the class name "
                                          f"'background' is reserved for label 0 (no object)")
                if obj["name"] not in label_of:
                    raise AnnotationError(f"{annotation['xml_path']}: object {number}: unknown class "
                                          f"{obj['name']!r}; known classes: {', '.join(class_names[1:])}")
        self._label_of = label_of

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        annotation = self.annotations[index]
        with Image.open(self.image_files[index]) as pil_image:
            pil_image = pil_image.convert("RGB")
        if pil_image.size != (annotation["width"], annotation["height"]):
            raise AnnotationError(f"{annotation['xml_path']}: <size> says {annotation['width']}x"
                                  f"{annotation['height']}, but {self.image_files[index]} is "
                                  f"{pil_image.width}x{pil_image.height}")
        image = torch.from_numpy(np.array(pil_image)).permute(2, 0, 1).float() / 255

        objects = [obj for obj in annotation["objects"] if self.keep_difficult or not obj["difficult"]]
        scale = torch.tensor([annotation["width"], annotation["height"]] * 2, dtype=torch.float32)
        boxes = torch.tensor([obj["box"] for obj in objects], dtype=torch.float32).reshape(-1, 4) / scale
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self._label_of[obj["name"]] for obj in objects], dtype=torch.int64),
            "difficult": torch.tensor([obj["difficult"] for obj in objects], dtype=torch.bool),
        }
        check_boxes(target["boxes"], where=str(annotation["xml_path"]))
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def write_voc(dataset: Dataset, root: str | Path, split: str = "train", start_index: int = 0,
              image_format: str = "jpg") -> list[str]:
    """Save any (image, target) data set (e.g. ShapesDataset) as a VOC folder under `root`.

    Item i becomes id f"{start_index + i:06d}": JPEGImages/<id>.jpg (quality 95; image_format="png"
    for lossless files), Annotations/<id>.xml, and the id is appended to ImageSets/Main/<split>.txt.
    Class names come from dataset.class_names. Boxes are rounded to whole pixels and written in
    VOC's 1-based convention (the inverse of read_voc_annotation), so reading back gives the same
    labels and boxes within half a pixel (boxes under 2 pixels wide or high are widened to 2).
    An existing file with the same id is overwritten. Returns the ids written.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    root = Path(root)
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    class_names = dataset.class_names
    ids = []
    for i in range(len(dataset)):
        image, target = dataset[i]
        image_id = f"{start_index + i:06d}"
        height, width = image.shape[-2:]
        pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        image_file = root / "JPEGImages" / f"{image_id}.{image_format}"
        if image_format == "jpg":
            Image.fromarray(pixels).save(image_file, quality=95)
        else:
            Image.fromarray(pixels).save(image_file)

        annotation = ET.Element("annotation")
        ET.SubElement(annotation, "folder").text = root.name
        ET.SubElement(annotation, "filename").text = image_file.name
        size = ET.SubElement(annotation, "size")
        for tag, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, tag).text = str(value)
        ET.SubElement(annotation, "segmented").text = "0"
        boxes = target["boxes"].detach().cpu() * torch.tensor([width, height, width, height])
        difficult = target.get("difficult", torch.zeros(len(boxes), dtype=torch.bool))
        for box, label, is_difficult in zip(boxes.tolist(), target["labels"].tolist(), difficult.tolist()):
            element = ET.SubElement(annotation, "object")
            ET.SubElement(element, "name").text = class_names[label]
            ET.SubElement(element, "pose").text = "Unspecified"
            ET.SubElement(element, "truncated").text = "0"
            ET.SubElement(element, "difficult").text = str(int(is_difficult))
            # 0-based pixel edges -> 1-based numbers of the first and last pixel inside the box. The
            # reader rejects xmax == xmin, so a box under 2 pixels wide or high is widened to 2.
            x_min, y_min = round(box[0]) + 1, round(box[1]) + 1
            x_max, y_max = max(round(box[2]), x_min + 1), max(round(box[3]), y_min + 1)
            bndbox = ET.SubElement(element, "bndbox")
            for tag, value in (("xmin", x_min), ("ymin", y_min), ("xmax", x_max), ("ymax", y_max)):
                ET.SubElement(bndbox, tag).text = str(value)
        ET.indent(annotation)
        ET.ElementTree(annotation).write(root / "Annotations" / f"{image_id}.xml", encoding="utf-8")
        ids.append(image_id)
    with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as split_file:
        split_file.writelines(f"{image_id}\n" for image_id in ids)
    return ids


def load_photos(transform: Transform | None = None) -> VOCDataset:
    """The course's real sample photos (data/photos, split "all"), class names inferred from them."""
    return VOCDataset(PHOTOS_DIR, split="all", transform=transform)
