"""Tests for ssd_lite.data, ssd_lite.shapes and ssd_lite.voc: reading image files, batching, the shapes
generator, the VOC reader and writer, and the sample photos."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from ssd_lite.augment import eval_transform
from ssd_lite.boxes import check_boxes
from ssd_lite.data import CachedDataset, ImageReadError, collate, load_image
from ssd_lite.shapes import SHAPE_CLASS_NAMES, ShapesDataset
from ssd_lite.voc import PHOTOS_DIR, AnnotationError, VOCDataset, load_photos, read_voc_annotation, write_voc


# ---------------------------------------------------------------------------------------------------
# load_image
# ---------------------------------------------------------------------------------------------------

def _png_16_bit_rgb(path, pixels: np.ndarray):
    """Write (H, W, 3) uint16 pixels as a 16-bit-per-channel RGB PNG (PIL cannot write one itself)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, colour type 2 (RGB)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)  # filter 0 (none) per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))


def _ramp_16_bit(height=6, width=10, channels=None) -> np.ndarray:
    shape = (height, width) if channels is None else (height, width, channels)
    return np.linspace(0, 65535, num=int(np.prod(shape))).round().astype(np.uint16).reshape(shape)


def test_load_image_8_bit_modes_match_pil(tmp_path):
    rgb = (np.random.default_rng(0).random((5, 7, 3)) * 255).astype(np.uint8)
    for mode in ("RGB", "L", "RGBA", "P", "1"):
        path = tmp_path / f"{mode}.png"
        Image.fromarray(rgb).convert(mode).save(path)
        expected = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255
        image = load_image(path)
        assert image.dtype == torch.float32 and image.shape == (3, 5, 7)
        assert torch.equal(image, expected), mode


def test_load_image_16_bit_greyscale(tmp_path):
    grey = _ramp_16_bit()
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    image = load_image(path)  # was all white: PIL's convert("RGB") clips 16-bit values to 255
    expected = torch.from_numpy(grey.astype(np.float32) / 65535)
    assert image.shape == (3, 6, 10)
    for channel in image:
        assert torch.allclose(channel, expected, atol=1e-6)


def test_load_image_32_bit_integer_mode(tmp_path):
    """Mode "I" (how older PILs open 16-bit PNGs; also 32-bit TIFFs): 16-bit values scale by 65535,
    values that do not fit 16 bits are refused rather than clipped to white."""
    grey = _ramp_16_bit().astype(np.int32)
    path = tmp_path / "grey32.tif"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I"
    assert torch.allclose(load_image(path)[0], torch.from_numpy(grey / 65535).float(), atol=1e-6)
    Image.fromarray(grey * 4).save(path)
    with pytest.raises(ImageReadError, match=r"grey32\.tif.*do not fit 16 bits"):
        load_image(path)


def test_load_image_16_bit_rgb(tmp_path):
    rgb = _ramp_16_bit(channels=3)
    path = tmp_path / "rgb16.png"
    _png_16_bit_rgb(path, rgb)
    # PIL keeps the top 8 bits of each 16-bit channel: within 1/255 of the exact value.
    expected = torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)
    assert (load_image(path) - expected).abs().max() <= 1 / 255


def test_load_image_truncated_file_names_it(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ImageReadError, match=r"cut\.jpg: cannot read the image \(.*(?i:truncated)"):
        load_image(path)


def test_load_image_macos_resource_file_names_it(tmp_path):
    """macOS leaves "._name.jpg" files (a few bytes of metadata) next to photos copied to other disks."""
    path = tmp_path / "._photo.jpg"
    path.write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\x00\x00\x00\x09")
    with pytest.raises(ImageReadError, match=r"\._photo\.jpg: cannot read the image") as error:
        load_image(path)
    assert isinstance(error.value, ValueError)


def test_load_image_missing_file():
    with pytest.raises(FileNotFoundError):
        load_image("no/such/image.png")


# ---------------------------------------------------------------------------------------------------
# ShapesDataset
# ---------------------------------------------------------------------------------------------------

def test_shapes_same_seed_same_item_in_any_order():
    first = ShapesDataset(20, seed=3)
    second = ShapesDataset(20, seed=3)
    backwards = {i: second[i] for i in reversed(range(20))}
    for i in range(20):
        image, target = first[i]
        assert torch.equal(image, backwards[i][0])
        assert torch.equal(target["boxes"], backwards[i][1]["boxes"])
        assert torch.equal(target["labels"], backwards[i][1]["labels"])


def test_shapes_different_seeds_and_indices_differ():
    a, b = ShapesDataset(5, seed=0), ShapesDataset(5, seed=1)
    for i in range(5):
        assert not torch.equal(a[i][0], b[i][0])
    assert not torch.equal(a[0][0], a[1][0])


def test_shapes_item_format():
    ds = ShapesDataset(10, image_size=96, seed=0)
    assert ds.class_names == ("background", *SHAPE_CLASS_NAMES)
    assert len(ds) == 10
    for image, target in ds:  # iteration must stop at the end (IndexError)
        assert image.shape == (3, 96, 96) and image.dtype == torch.float32
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["boxes"].shape == (len(target["labels"]), 4)
    with pytest.raises(IndexError):
        ds[10]


@pytest.fixture(scope="module")
def many_targets():
    """The targets of 300 shapes images (made once: several tests look at them)."""
    return [target for _, target in ShapesDataset(300, seed=7)]


def test_shapes_boxes_valid_and_labels_in_range(many_targets):
    for target in many_targets:
        check_boxes(target["boxes"])  # finite, inside [0, 1], positive width and height
        labels = target["labels"]
        assert 1 <= len(labels) <= ShapesDataset.max_objects
        assert int(labels.min()) >= 1 and int(labels.max()) < len(ShapesDataset.class_names)


class _OneCleanShape(ShapesDataset):
    """One shape per image and no pixel noise: the shape is then the only patch of one exact colour."""
    max_objects = 1
    noise_std = 0.0


def test_shapes_boxes_are_tight():
    """Find each shape from the pixels alone (its exact colour: the backgrounds are smooth, so no
    two background pixels share a colour) and check the box is exactly the bounding box of those pixels."""
    ds = _OneCleanShape(60, image_size=96, seed=11)
    for image, target in ds:
        colours, counts = image.reshape(3, -1).T.unique(dim=0, return_counts=True)
        shape_colour = colours[counts.argmax()]
        rows, cols = (image == shape_colour[:, None, None]).all(dim=0).nonzero(as_tuple=True)
        expected = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]]) / 96
        assert torch.equal(target["boxes"], expected.float())


def test_shapes_variety_over_many_images(many_targets):
    labels = torch.cat([target["labels"] for target in many_targets])
    boxes = torch.cat([target["boxes"] for target in many_targets])
    counts = torch.bincount(labels, minlength=len(ShapesDataset.class_names))[1:]
    assert (counts > 0.1 * len(labels)).all(), f"every class should be common, got {counts.tolist()}"
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    longest_side = torch.maximum(widths, heights)
    assert float(longest_side.min()) < 0.12, "some shapes should be small"
    assert float(longest_side.max()) > 0.6, "some shapes should be large"
    aspect = widths / heights
    assert float(aspect.min()) < 0.5 and float(aspect.max()) > 2, "some shapes should be stretched"
    objects_per_image = torch.tensor([len(target["labels"]) for target in many_targets])
    assert set(objects_per_image.tolist()) == set(range(1, ShapesDataset.max_objects + 1))


def test_shapes_transform_applied_last():
    def flip(image, target):
        boxes = target["boxes"].clone()
        boxes[:, [0, 2]] = 1 - target["boxes"][:, [2, 0]]
        return image.flip(-1), {**target, "boxes": boxes}

    plain, flipped = ShapesDataset(3, seed=2), ShapesDataset(3, seed=2, transform=flip)
    assert torch.equal(plain[1][0].flip(-1), flipped[1][0])
    assert torch.allclose(1 - plain[1][1]["boxes"][:, 2], flipped[1][1]["boxes"][:, 0])


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        ShapesDataset(-1)
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(10, image_size=8)


# ---------------------------------------------------------------------------------------------------
# collate
# ---------------------------------------------------------------------------------------------------

def test_collate_with_dataloader():
    ds = ShapesDataset(8, image_size=64, seed=0)
    images, targets = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert images.shape == (4, 3, 64, 64)
    assert isinstance(targets, list) and len(targets) == 4
    assert torch.equal(targets[2]["boxes"], ds[2][1]["boxes"])


def test_collate_refuses_mixed_sizes():
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(ValueError, match="one size"):
        collate([(torch.zeros(3, 8, 8), empty), (torch.zeros(3, 8, 9), empty)])


def test_cached_dataset_keeps_resized_items_as_uint8():
    shapes = ShapesDataset(4, image_size=80, seed=5)
    cached = CachedDataset(shapes, 64)
    assert len(cached) == 4 and cached.class_names == shapes.class_names
    assert cached.images.dtype == torch.uint8 and cached.images.shape == (4, 3, 64, 64)
    resize = eval_transform(64)
    for i in range(4):
        expected_image, expected_target = resize(*shapes[i])
        image, target = cached[i]
        assert (image - expected_image).abs().max() <= 0.5 / 255 + 1e-6  # uint8 rounding only
        assert torch.equal(target["labels"], expected_target["labels"])
        assert torch.allclose(target["boxes"], expected_target["boxes"])


def test_cached_dataset_transform_runs_on_every_read():
    reads = []

    def count(image, target):
        reads.append(1)
        return image.flip(-1), target

    cached = CachedDataset(ShapesDataset(2, image_size=64, seed=0), 64, transform=count)
    assert torch.equal(cached[0][0], cached[0][0]) and len(reads) == 2


# ---------------------------------------------------------------------------------------------------
# VOC: write, read back
# ---------------------------------------------------------------------------------------------------

class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items, class_names):
        self.items, self.class_names = items, class_names

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


@pytest.mark.parametrize("image_format", ["jpg", "png"])
def test_voc_round_trip(tmp_path, image_format):
    shapes = ShapesDataset(6, image_size=80, seed=4)
    ids = write_voc(shapes, tmp_path, split="train", image_format=image_format)
    assert ids == [f"{i:06d}" for i in range(6)]
    voc = VOCDataset(tmp_path, split="train", class_names=shapes.class_names)
    assert len(voc) == 6 and voc.class_names == shapes.class_names
    for i in range(6):
        image, target = shapes[i]
        voc_image, voc_target = voc[i]
        assert voc_image.shape == image.shape
        assert torch.equal(voc_target["labels"], target["labels"])
        # Shapes boxes lie on whole pixels, so they come back exactly (well within the 1-pixel promise).
        assert torch.allclose(voc_target["boxes"], target["boxes"], atol=1 / 80)
        assert not voc_target["difficult"].any()
        tolerance = 0.05 if image_format == "jpg" else 1 / 255
        assert (voc_image - image).abs().mean() < tolerance


def test_voc_write_appends_and_infers_classes(tmp_path):
    write_voc(ShapesDataset(2, image_size=64, seed=0), tmp_path, split="train")
    write_voc(ShapesDataset(3, image_size=64, seed=1), tmp_path, split="train", start_index=2)
    voc = VOCDataset(tmp_path, split="train")  # class_names inferred: background, then sorted names
    assert len(voc) == 5 and voc.ids[-1] == "000004"
    assert voc.class_names[0] == "background"
    assert list(voc.class_names[1:]) == sorted(voc.class_names[1:])
    assert set(voc.class_names[1:]) <= set(SHAPE_CLASS_NAMES)
    assert [p.name for p in voc.image_files] == [f"{i:06d}.jpg" for i in range(5)]


def test_voc_round_trip_sub_pixel_boxes_within_one_pixel(tmp_path):
    boxes = torch.tensor([[0.013, 0.021, 0.497, 0.333], [0.5, 0.25, 0.999, 1.0], [0.1, 0.1, 0.1149, 0.2]])
    labels = torch.tensor([1, 2, 1])
    difficult = torch.tensor([False, True, False])
    item = (torch.rand(3, 50, 100, generator=torch.Generator().manual_seed(0)),
            {"boxes": boxes, "labels": labels, "difficult": difficult})
    write_voc(_ListDataset([item], ("background", "a", "b")), tmp_path, split="val")
    image, target = VOCDataset(tmp_path, split="val", class_names=("background", "a", "b"))[0]
    assert image.shape == (3, 50, 100)
    pixel_error = (target["boxes"] - boxes) * torch.tensor([100, 50, 100, 50])
    assert pixel_error.abs().max() <= 1.0
    assert torch.equal(target["labels"], labels) and torch.equal(target["difficult"], difficult)
    kept = VOCDataset(tmp_path, split="val", keep_difficult=False)[0][1]
    assert len(kept["labels"]) == 2 and not kept["difficult"].any()


# ---------------------------------------------------------------------------------------------------
# VOC reader: coordinates and dirty annotations
# ---------------------------------------------------------------------------------------------------

def _annotation(objects: str, size: str = "<size><width>100</width><height>80</height><depth>3</depth></size>"):
    return f"<annotation><filename>x.jpg</filename>{size}{objects}</annotation>"


def _object(name="dog", xmin="11", ymin="21", xmax="50", ymax="60", difficult="0"):
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")


def _write(tmp_path, text, name="000012.xml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_read_converts_one_based_pixels_to_zero_based_edges(tmp_path):
    path = _write(tmp_path, _annotation(_object() + _object("cat", "1", "1", "100", "80", difficult="1")))
    annotation = read_voc_annotation(path)
    assert annotation["filename"] == "x.jpg"
    assert (annotation["width"], annotation["height"]) == (100, 80)
    dog, cat = annotation["objects"]
    assert dog == {"name": "dog", "box": [10.0, 20.0, 50.0, 60.0], "difficult": False}
    # The whole image in VOC numbers (1..width) becomes exactly [0, width].
    assert cat["box"] == [0.0, 0.0, 100.0, 80.0] and cat["difficult"]


def test_read_clips_one_pixel_slack(tmp_path):
    # A tool that wrote 0-based numbers gives xmin 0 (one pixel too far left): clipped, not an error.
    path = _write(tmp_path, _annotation(_object(xmin="0", ymin="0", xmax="101", ymax="81")))
    assert read_voc_annotation(path)["objects"][0]["box"] == [0.0, 0.0, 100.0, 80.0]


def test_read_empty_image_is_valid(tmp_path):
    assert read_voc_annotation(_write(tmp_path, _annotation("")))["objects"] == []


@pytest.mark.parametrize("text, problem", [
    ("<annotation><size>", "malformed XML"),
    (_annotation(_object(), size=""), "missing <size>"),
    (_annotation(_object(), size="<size><width>100</width></size>"), "missing <height>"),
    (_annotation(_object(), size="<size><width>0</width><height>80</height></size>"), "positive whole"),
    (_annotation("<object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"),
     "object 1: missing <name>"),
    (_annotation(_object() + "<object><name>dog</name></object>"), "object 2 ('dog'): missing <bndbox>"),
    (_annotation(_object(xmax="forty")), "object 1 ('dog'): <xmax> is not a number: 'forty'"),
    (_annotation(_object(ymin="")), "object 1 ('dog'): missing <ymin>"),
    (_annotation(_object(xmax="nan")), "not a finite number"),
    (_annotation(_object() + _object(xmin="52", xmax="40")), "object 2 ('dog'): x_max (40) <= x_min (52)"),
    (_annotation(_object(ymin="30", ymax="12")), "object 1 ('dog'): y_max (12) <= y_min (30)"),
    (_annotation(_object(xmin="30", xmax="30")), "object 1 ('dog'): x_max (30) <= x_min (30)"),
    (_annotation(_object(ymin="30", ymax="30")), "object 1 ('dog'): y_max (30) <= y_min (30)"),
    (_annotation(_object(xmin="-5")), "lies outside the 100x80 image"),
    (_annotation(_object(ymax="95")), "lies outside the 100x80 image"),
    (_annotation(_object(xmin="10.5", xmax="9.6")), "x_max (9.6) <= x_min (10.5)"),
])
def test_read_dirty_annotations_name_file_and_problem(tmp_path, text, problem):
    path = _write(tmp_path, text)
    with pytest.raises(AnnotationError) as error:
        read_voc_annotation(path)
    message = str(error.value)
    assert str(path) in message and problem in message
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize("text, difficult", [
    ("1", True), ("true", True), (" True ", True), ("YES", True), ("yes", True),
    ("0", False), ("false", False), ("FALSE", False), ("no", False), ("", False), (" 0\n", False),
])
def test_read_difficult_common_spellings(tmp_path, text, difficult):
    path = _write(tmp_path, _annotation(_object(difficult=text)))
    assert read_voc_annotation(path)["objects"][0]["difficult"] is difficult


def test_read_difficult_absent_means_not_difficult(tmp_path):
    path = _write(tmp_path, _annotation(_object().replace("<difficult>0</difficult>", "")))
    assert read_voc_annotation(path)["objects"][0]["difficult"] is False


@pytest.mark.parametrize("text", ["2", "maybe", "1.0", "y"])
def test_read_difficult_other_values_are_refused(tmp_path, text):
    path = _write(tmp_path, _annotation(_object() + _object("cat", difficult=text)))
    with pytest.raises(AnnotationError, match=rf"000012\.xml: object 2 \('cat'\): <difficult> must be 0 or 1.*"
                                              rf"got {text!r}"):
        read_voc_annotation(path)


def _voc_folder(tmp_path, annotations: dict, split_ids=None, images=True):
    """A small VOC folder: annotations maps id -> XML text; each gets a 100x80 image unless images=False."""
    from PIL import Image

    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    for image_id, text in annotations.items():
        (tmp_path / "Annotations" / f"{image_id}.xml").write_text(text)
        if images:
            Image.new("RGB", (100, 80), "gray").save(tmp_path / "JPEGImages" / f"{image_id}.jpg")
    ids = list(annotations) if split_ids is None else split_ids
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{i}\n" for i in ids))
    return tmp_path


def test_dataset_reads_folder_with_empty_image(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object("dog") + _object("cat")), "b": _annotation("")})
    ds = VOCDataset(root)
    assert ds.class_names == ("background", "cat", "dog")
    image, target = ds[0]
    assert image.shape == (3, 80, 100)
    assert target["labels"].tolist() == [2, 1]
    assert torch.allclose(target["boxes"][0], torch.tensor([0.1, 0.25, 0.5, 0.75]))
    image, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["difficult"].shape == (0,)


def test_dataset_unknown_class(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object("dog") + _object("horse"))})
    with pytest.raises(AnnotationError, match=r"a\.xml: object 2: unknown class 'horse'; known classes: cat, dog"):
        VOCDataset(root, class_names=("background", "cat", "dog"))


def test_dataset_background_is_not_an_object_class(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object("dog") + _object("background"))})
    with pytest.raises(AnnotationError, match=r"a\.xml: object 2: the class name 'background' is reserved"):
        VOCDataset(root)


def test_dataset_class_names_must_start_with_background(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object("dog"))})
    with pytest.raises(ValueError, match="background"):
        VOCDataset(root, class_names=("dog",))


def test_dataset_split_lists_missing_id(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object())}, split_ids=["a", "zzz"])
    with pytest.raises(AnnotationError, match=r"train\.txt: lists id 'zzz', but .*zzz\.xml does not exist"):
        VOCDataset(root)


def test_dataset_missing_image_file(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object())}, images=False)
    with pytest.raises(AnnotationError, match=r"a\.xml: no image file for id 'a'"):
        VOCDataset(root)


def test_dataset_missing_split_file(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object())})
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*splits found: \['train'\]"):
        VOCDataset(root, split="val")


def test_dataset_image_size_must_match_annotation(tmp_path):
    wrong_size = "<size><width>120</width><height>80</height><depth>3</depth></size>"
    root = _voc_folder(tmp_path, {"a": _annotation(_object(), size=wrong_size)})
    ds = VOCDataset(root)
    with pytest.raises(AnnotationError, match=r"a\.xml: <size> says 120x80, but .*a\.jpg is 100x80"):
        ds[0]


def test_dataset_reads_16_bit_png(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object())}, images=False)
    grey = _ramp_16_bit(height=80, width=100)
    Image.fromarray(grey).save(root / "JPEGImages" / "a.png")
    image, _ = VOCDataset(root)[0]  # was all white, as in load_image
    assert torch.allclose(image[1], torch.from_numpy(grey.astype(np.float32) / 65535), atol=1e-6)


def test_dataset_finds_every_image_extension(tmp_path):
    files = {"a": ("a.bmp", "BMP"), "b": ("b.PNG", "PNG"), "c": ("c.JPEG", "JPEG")}
    root = _voc_folder(tmp_path, {image_id: _annotation(_object()) for image_id in files}, images=False)
    for name, image_format in files.values():
        Image.new("RGB", (100, 80), "gray").save(root / "JPEGImages" / name, format=image_format)
    ds = VOCDataset(root)
    assert [p.name.lower() for p in ds.image_files] == ["a.bmp", "b.png", "c.jpeg"]  # any file system
    assert all(image.shape == (3, 80, 100) for image, _ in ds)


def test_dataset_broken_image_names_the_file(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object())})
    image_file = root / "JPEGImages" / "a.jpg"
    image_file.write_bytes(image_file.read_bytes()[:200])
    ds = VOCDataset(root)
    with pytest.raises(ImageReadError, match=r"JPEGImages/a\.jpg: cannot read the image"):
        ds[0]


def test_dataset_dirty_file_stops_construction(tmp_path):
    root = _voc_folder(tmp_path, {"a": _annotation(_object()), "b": _annotation(_object(xmin="52", xmax="40"))})
    with pytest.raises(AnnotationError, match=r"b\.xml: object 1 \('dog'\): x_max \(40\) <= x_min \(52\)"):
        VOCDataset(root)


# ---------------------------------------------------------------------------------------------------
# The sample photos
# ---------------------------------------------------------------------------------------------------

def test_photos_load():
    photos = load_photos()
    assert photos.root == PHOTOS_DIR
    assert len(photos) == 5
    assert photos.ids == ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    assert photos.class_names == ("background", "camera", "cat", "cup", "helmet", "person", "rocket",
                                  "spoon", "tower", "tripod")
    total = 0
    for image, target in photos:
        assert image.shape[0] == 3 and max(image.shape[1:]) <= 512
        check_boxes(target["boxes"])
        assert len(target["labels"]) >= 1 and int(target["labels"].min()) >= 1
        total += len(target["labels"])
    assert total == 14
    _, astronaut = photos[0]
    names = [photos.class_names[label] for label in astronaut["labels"]]
    assert names == ["person", "rocket", "helmet"]
