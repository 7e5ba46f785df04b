"""Tests of ssd_lite.augment: boxes stay valid and follow the pixels, including images with no boxes."""
import torch

from ssd_lite.augment import eval_transform, train_transform
from ssd_lite.boxes import check_boxes
from ssd_lite.model import IMAGENET_MEAN


def _sample(seed, num_boxes=3, height=96, width=128):
    generator = torch.Generator().manual_seed(seed)
    corners = torch.rand(num_boxes, 2, 2, generator=generator)
    boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values + 0.02], dim=1).clamp(max=1)
    target = {"boxes": boxes, "labels": torch.randint(1, 4, (num_boxes,), generator=generator),
              "difficult": torch.rand(num_boxes, generator=generator) < 0.3}
    return torch.rand(3, height, width, generator=generator), target


def _assert_valid(image, target, size, num_in):
    assert image.shape == (3, size, size) and image.dtype == torch.float32
    assert 0 <= float(image.min()) and float(image.max()) <= 1
    check_boxes(target["boxes"], "augmented boxes")  # normalised, positive width and height
    # Boxes are at least a pixel wide and high (SanitizeBoundingBoxes' min_size=1).
    sizes = (target["boxes"][:, 2:] - target["boxes"][:, :2]) * size
    assert (sizes >= 1 - 1e-4).all()
    assert len(target["boxes"]) == len(target["labels"]) == len(target["difficult"]) <= num_in
    assert target["labels"].dtype == torch.int64 and target["difficult"].dtype == torch.bool


def test_train_transform_keeps_boxes_valid():
    torch.manual_seed(0)
    transform = train_transform(64, zoom_out=4.0, crop_min_scale=0.3)  # the paper's strength
    for seed in range(60):
        image, target = _sample(seed, num_boxes=seed % 5)
        out_image, out_target = transform(image, target)
        _assert_valid(out_image, out_target, 64, seed % 5)


def test_labels_follow_their_boxes():
    """When boxes are dropped, the remaining labels must still belong to the remaining boxes."""
    torch.manual_seed(0)
    transform = train_transform(64, photometric=False)
    for seed in range(40):
        image, target = _sample(seed, num_boxes=4)
        target["labels"] = torch.tensor([1, 2, 3, 1])
        target["difficult"] = target["labels"] == 3  # difficult only on label 3
        _, out = transform(image, target)
        assert torch.equal(out["difficult"], out["labels"] == 3)


def test_empty_image_stays_valid():
    torch.manual_seed(0)
    transform = train_transform(64)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    for _ in range(20):
        image, target = transform(torch.rand(3, 80, 80), empty)
        assert image.shape == (3, 64, 64)
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def test_boxes_that_leave_the_image_are_clipped_or_dropped():
    torch.manual_seed(0)
    # Flip only: a box's mirror is exact.
    flip = train_transform(32, photometric=False, zoom_out=1.0, iou_crop=False)
    image = torch.zeros(3, 32, 32)
    image[:, 4:12, 2:10] = 1.0
    target = {"boxes": torch.tensor([[2, 4, 10, 12]]) / 32.0, "labels": torch.tensor([1])}
    seen = set()
    for _ in range(20):
        out_image, out = flip(image, target)
        box = out["boxes"][0] * 32
        # The white square is where the box says.
        x0, y0, x1, y1 = [round(float(v)) for v in box]
        assert out_image[:, y0:y1, x0:x1].min() > 0.99
        seen.add((x0, x1))
    assert seen == {(2, 10), (22, 30)}  # both unflipped and mirrored happened
    # Cropping an image whose boxes sit at the border: kept boxes are clipped to [0, 1].
    crop = train_transform(32, photometric=False, zoom_out=1.0, crop_min_scale=0.3)
    border = {"boxes": torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.6, 0.6, 1.0, 1.0]]), "labels": torch.tensor([1, 2])}
    for _ in range(50):
        _, out = crop(torch.rand(3, 32, 32), border)
        check_boxes(out["boxes"])


def test_eval_transform_only_resizes():
    image, target = _sample(0, height=200, width=300)
    out_image, out = eval_transform(96)(image, target)
    assert out_image.shape == (3, 96, 96)
    assert torch.allclose(out["boxes"], target["boxes"])
    assert torch.equal(out["labels"], target["labels"])


def test_reproducible_with_seed():
    image, target = _sample(3)
    transform = train_transform(64)
    torch.manual_seed(5)
    a = transform(image, target)
    torch.manual_seed(5)
    b = transform(image, target)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])


def test_zoom_out_fills_with_the_mean_the_model_subtracts():
    """The canvas around a zoomed-out image is the model's IMAGENET_MEAN, so it standardises to ~0."""
    torch.manual_seed(0)
    zoom = train_transform(64, photometric=False, zoom_out=4.0, iou_crop=False, flip=False)
    black = torch.zeros(3, 64, 64)
    no_boxes = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    mean = torch.tensor(IMAGENET_MEAN)
    corner_colours = [zoom(black, no_boxes)[0][:, corner, corner] for _ in range(20) for corner in (0, -1)]
    # Each corner is either the image (black) or the canvas, and the canvas showed up at least once.
    assert all(torch.allclose(c, mean, atol=1e-3) or c.abs().max() < 1e-3 for c in corner_colours)
    assert any(torch.allclose(c, mean, atol=1e-3) for c in corner_colours)
