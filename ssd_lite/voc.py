"""Pascal VOC folders: read and check them, write any data set as one.

The VOC layout (JPEGImages/, Annotations/, ImageSets/Main/) is used by VOC itself, by many labelling
tools, and by our sample photos in data/photos. VOCDataset checks every annotation as it reads it: a box
with x_max <= x_min is reported with its file at once, instead of turning the loss into NaN hundreds of
iterations later. Items follow the course's convention (see ssd_lite.data), with "difficult": (G,) bool
in the target.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ssd_lite.boxes import check_boxes
from ssd_lite.data import IMAGE_EXTENSIONS, Transform, load_image

# Folder of the real sample photos shipped with the course (a VOC folder with one split, "all").
PHOTOS_DIR = Path(__file__).resolve().parents[1] / "data" / "photos"

# The 20 Pascal VOC classes in their usual order (that of the VOC development kit, and of the labels 1..20
# in every SSD code base): `python -m ssd_lite.train --classes voc`.
VOC_CLASS_NAMES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                   "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
                   "train", "tvmonitor")


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


# The spellings of yes and no that labelling tools write in <difficult>; VOC itself writes 0 and 1.
_TRUE_WORDS, _FALSE_WORDS = ("1", "true", "yes"), ("0", "false", "no")


def _flag(element: ET.Element, tag: str, where: str) -> bool:
    """The yes/no in <tag> under `element` (absent or empty: no), or AnnotationError for anything else."""
    child = element.find(tag)
    text = (child.text or "").strip().lower() if child is not None else ""
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS or not text:
        return False
    raise AnnotationError(f"{where}: <{tag}> must be 0 or 1 (or true/false, yes/no), got {child.text.strip()!r}")


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
    not a number, <xmax> <= <xmin> or <ymax> <= <ymin> (in the file's numbers), a box outside the
    image, or a <difficult> that is not 0/1, true/false or yes/no (any case; absent means 0).
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
        difficult = _flag(element, "difficult", where)
        objects.append({"name": name, "box": box, "difficult": difficult})

    filename_element = root.find("filename")
    filename = (filename_element.text or "").strip() if filename_element is not None else ""
    return {"filename": filename, "width": width, "height": height, "objects": objects}


def _find_image(root: Path, image_id: str) -> Path | None:
    """JPEGImages/<image_id> with one of IMAGE_EXTENSIONS, in lower or upper case, or None."""
    for extension in IMAGE_EXTENSIONS:
        for spelling in (extension, extension.upper()):
            path = root / "JPEGImages" / f"{image_id}{spelling}"
            if path.exists():
                return path
    return None


def read_split(root: str | Path, split: str) -> list[str]:
    """The image ids listed in root/ImageSets/Main/<split>.txt (the first word of each non-empty line).

    Raises FileNotFoundError naming the splits the folder has when there is no such file.
    """
    split_file = Path(root) / "ImageSets" / "Main" / f"{split}.txt"
    if not split_file.exists():
        available = sorted(p.stem for p in (Path(root) / "ImageSets" / "Main").glob("*.txt"))
        raise FileNotFoundError(f"no split file {split_file}; splits found: {available or 'none'}")
    return [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]


class VOCDataset(Dataset):
    """A Pascal VOC folder: root/JPEGImages/<id>.jpg, root/Annotations/<id>.xml and
    root/ImageSets/Main/<split>.txt (one id per line).

    class_names: ("background", name1, ...) fixes the labels (label k = class_names[k]); None infers
    them from the split's annotations: "background", then the names found, sorted.
    keep_difficult: False drops objects marked difficult (<difficult>1</difficult>).
    transform: optional `transform(image, target) -> (image, target)`, applied last.

    ds[i] returns (image (3, H, W) float in [0, 1] at the file's own size,
    {"boxes": (G, 4) normalised xyxy float32, "labels": (G,) int64, "difficult": (G,) bool}).

    All annotations are read and checked when the data set is made, so a dirty file stops you at
    once with its name (AnnotationError), not in the middle of training. An image file that cannot be
    decoded raises ssd_lite.data.ImageReadError naming it when its item is read.
    """

    def __init__(self, root: str | Path, split: str = "train", class_names: tuple[str, ...] | None = None,
                 transform: Transform | None = None, keep_difficult: bool = True):
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.keep_difficult = keep_difficult
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        self.ids = read_split(self.root, split)

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
        image = load_image(self.image_files[index])  # ImageReadError naming the file if it is broken
        height, width = image.shape[-2:]
        if (width, height) != (annotation["width"], annotation["height"]):
            raise AnnotationError(f"{annotation['xml_path']}: <size> says {annotation['width']}x"
                                  f"{annotation['height']}, but {self.image_files[index]} is {width}x{height}")

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
