import numpy as np
import pytest
import torch
from torchvision.models.detection._utils import BoxCoder, SSDMatcher
from torchvision.ops import box_iou as tv_box_iou

from ssd_lite.boxes import VARIANCES, cxcywh_to_xyxy, decode
from ssd_lite.matching import match
from ssd_lite.priors import default_boxes, prior_scales, ssd300_default_boxes

PRIORS = ssd300_default_boxes()


def random_scene(seed, num_objects):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(num_objects, 2, generator=g) * 0.7
    size = 0.02 + torch.rand(num_objects, 2, generator=g) * 0.28
    boxes = torch.cat([corner, corner + size], dim=1)
    labels = torch.randint(1, 21, (num_objects,), generator=g)
    return boxes, labels


@pytest.mark.parametrize("seed", range(10))
def test_match_invariants(seed):
    gt_boxes, gt_labels = random_scene(seed, num_objects=1 + seed % 6)
    loc_targets, labels = match(gt_boxes, gt_labels, PRIORS, iou_threshold=0.5)
    assert loc_targets.shape == (8732, 4) and labels.shape == (8732,)
    ious = tv_box_iou(gt_boxes, cxcywh_to_xyxy(PRIORS))  # the reference IoU

    positives = labels > 0
    # every positive decodes to the object it was matched to, whose label it carries
    decoded = decode(loc_targets[positives], PRIORS[positives])
    object_ids = tv_box_iou(decoded, gt_boxes).argmax(dim=1)
    assert torch.allclose(decoded, gt_boxes[object_ids], atol=1e-5)
    assert torch.equal(labels[positives], gt_labels[object_ids])
    # background priors have zero offsets
    assert torch.all(loc_targets[~positives] == 0)
    # every prior with IoU >= 0.5 to some object is positive
    assert torch.all(positives[ious.max(dim=0).values >= 0.5])
    # every object's best prior is positive and matched to it (no object goes unmatched),
    # unless a later object claimed the same prior
    best = ious.argmax(dim=1)
    for obj, prior in enumerate(best.tolist()):
        assert positives[prior]
        if (best[obj + 1:] != prior).all():
            assert torch.allclose(decode(loc_targets[prior:prior + 1], PRIORS[prior:prior + 1]), gt_boxes[obj:obj + 1],
                                  atol=1e-5)
    # below-threshold positives are exactly the forced best priors
    forced = positives & (ious.max(dim=0).values < 0.5)
    assert set(forced.nonzero().flatten().tolist()) <= set(best.tolist())


def test_tiny_object_still_gets_a_positive():
    gt_boxes = torch.tensor([[0.50, 0.50, 0.51, 0.53]])  # far below any prior's IoU 0.5
    assert tv_box_iou(gt_boxes, cxcywh_to_xyxy(PRIORS)).max() < 0.5
    _, labels = match(gt_boxes, torch.tensor([3]), PRIORS)
    assert (labels == 3).sum() == 1 and (labels > 0).sum() == 1


def test_threshold_changes_the_positive_count():
    gt_boxes, gt_labels = random_scene(0, 4)
    counts = [int((match(gt_boxes, gt_labels, PRIORS, t)[1] > 0).sum()) for t in (0.3, 0.5, 0.7)]
    assert counts[0] > counts[1] > counts[2] >= 4


def test_no_objects_means_all_background():
    loc_targets, labels = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), PRIORS)
    assert torch.all(labels == 0) and torch.all(loc_targets == 0)
    assert labels.dtype == torch.long and loc_targets.shape == (8732, 4)


@pytest.mark.parametrize("boxes, labels, message", [
    ([[0.5, 0.1, 0.2, 0.3]], [1], "x_max"),
    ([[0.1, 0.1, 0.2, 1.5]], [1], "outside"),
    ([[0.1, 0.1, 0.2, 0.3]], [0], "background"),
    ([[0.1, 0.1, 0.2, 0.3]], [1, 2], "one label per box"),
])
def test_bad_input_is_named(boxes, labels, message):
    with pytest.raises(ValueError, match=message):
        match(torch.tensor(boxes), torch.tensor(labels), PRIORS)


# ---------------------------------------------------------------- cross-check: torchvision's SSDMatcher

SMALL_PRIORS = default_boxes((16, 8, 4, 2), prior_scales(4, 0.1, 0.7), [(2, 3)] * 4)


def decided_without_ties(ious, threshold=0.5, margin=1e-4):
    """True if no step of the matching rests on a (near) tie, so any two correct matchers must agree.

    ious: (G, P). Rejects: an object whose best prior is not clearly best; a possible positive whose best
    object is not clearly best; an IoU within `margin` of the threshold (the two libraries' IoUs may differ
    in the last bit); two objects with the same best prior (a convention, tested separately below).
    """
    if ious.shape[1] >= 2:
        top_two = ious.topk(2, dim=1).values
        if (top_two[:, 0] - top_two[:, 1] < margin).any():
            return False
    if ious.shape[0] >= 2:
        top_two = ious.topk(2, dim=0).values
        could_be_positive = top_two[0] >= threshold - margin
        if (top_two[0] - top_two[1] < margin)[could_be_positive].any():
            return False
    if ((ious - threshold).abs() < margin).any():
        return False
    best_prior_per_object = ious.argmax(dim=1)
    return len(set(best_prior_per_object.tolist())) == len(best_prior_per_object)


@pytest.mark.parametrize("priors", [PRIORS, SMALL_PRIORS], ids=["ssd300", "small"])
def test_match_agrees_with_torchvision_ssd_matcher(priors):
    """Same positives, same object for each, same offsets, on many random scenes (ties left out)."""
    matcher = SSDMatcher(0.5)
    coder = BoxCoder(weights=(1 / VARIANCES[0], 1 / VARIANCES[0], 1 / VARIANCES[1], 1 / VARIANCES[1]))
    priors_xyxy = cxcywh_to_xyxy(priors)
    compared = 0
    for seed in range(500):
        g = torch.Generator().manual_seed(seed)
        num_objects = 1 + seed % 8
        corner = torch.rand(num_objects, 2, generator=g) * 0.6
        size = 0.02 + torch.rand(num_objects, 2, generator=g) * 0.38  # small (forced matches) to large
        gt_boxes = torch.cat([corner, corner + size], dim=1)
        gt_labels = torch.arange(1, num_objects + 1)  # one label per object: a label names its object
        ious = tv_box_iou(gt_boxes, priors_xyxy)
        if not decided_without_ties(ious):
            continue
        compared += 1
        theirs = matcher(ious)  # (P,) object index, or -1 for background
        loc_targets, labels = match(gt_boxes, gt_labels, priors)
        assert torch.equal(labels, theirs + 1), f"seed {seed}: different matches"
        positives = theirs >= 0
        expected = coder.encode_single(gt_boxes[theirs[positives]], priors_xyxy[positives])
        torch.testing.assert_close(loc_targets[positives], expected, rtol=1e-5, atol=1e-5, msg=f"seed {seed}")
        assert (loc_targets[~positives] == 0).all()
    # About a third of the scenes have a tie: an object that wholly contains several priors of one
    # size overlaps each of them by the same IoU (prior area / object area).
    assert compared >= 100


def test_two_objects_with_one_best_prior_the_later_object_gets_it():
    """A convention, not a tie of IoUs: both objects' best prior is prior 0. It overlaps object 0 more,
    yet goes to the later object (index 1); object 0 keeps only its priors above the threshold. torchvision's
    SSDMatcher assigns with matches[best] = arange(G), which on the CPU also leaves the later object,
    though torch does not promise an order for repeated indices. The difference we do have: torchvision
    raises for an image with no objects; `match` makes every prior background."""
    priors = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1], [0.9, 0.9, 0.1, 0.1]])
    gt_boxes = torch.tensor([[0.25, 0.25, 0.6, 0.6], [0.42, 0.42, 0.75, 0.75]])
    ious = tv_box_iou(gt_boxes, cxcywh_to_xyxy(priors))
    assert ious.argmax(dim=1).tolist() == [0, 0] and ious[0, 0] > ious[1, 0]
    _, labels = match(gt_boxes, torch.tensor([1, 2]), priors, iou_threshold=0.99)
    assert labels.tolist() == [2, 0, 0]


# ---------------------------------------------------------------- arguments that used to give inf, NaN or nonsense

@pytest.mark.parametrize("threshold", [float("nan"), -0.1, 1.5, 2.5])
def test_iou_threshold_must_be_between_0_and_1(threshold):
    gt_boxes, gt_labels = random_scene(0, 2)
    with pytest.raises(ValueError, match="iou_threshold"):
        match(gt_boxes, gt_labels, PRIORS, threshold)


@pytest.mark.parametrize("column, value, message", [
    (2, 0.0, "width"), (3, -0.05, "height"), (0, float("nan"), "non-finite"), (3, float("inf"), "non-finite"),
])
def test_priors_need_a_positive_finite_size(column, value, message):
    priors = PRIORS.clone()
    priors[7, column] = value
    gt_boxes, gt_labels = random_scene(0, 2)
    with pytest.raises(ValueError, match=message) as error:
        match(gt_boxes, gt_labels, priors)
    assert "priors[7]" in str(error.value)


def test_bad_variances_are_named():
    gt_boxes, gt_labels = random_scene(0, 2)
    for variances in [(0.0, 0.2), (0.1, float("nan"))]:
        with pytest.raises(ValueError, match="variances"):
            match(gt_boxes, gt_labels, PRIORS, variances=variances)


# ---------------------------------------------------------------- dtypes users really have

def test_float64_boxes_with_float32_priors():
    """Boxes from numpy are float64; the targets come out in the priors' dtype."""
    gt_boxes, gt_labels = random_scene(3, 4)
    loc_targets, labels = match(gt_boxes.double(), gt_labels, PRIORS)
    expected_loc, expected_labels = match(gt_boxes, gt_labels, PRIORS)
    assert loc_targets.dtype == torch.float32
    torch.testing.assert_close(loc_targets, expected_loc)
    assert torch.equal(labels, expected_labels)
    # float64 priors give float64 targets, with or without objects
    assert match(gt_boxes, gt_labels, PRIORS.double())[0].dtype == torch.float64
    assert match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), PRIORS.double())[0].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int64])
def test_any_integer_labels_come_out_int64(dtype):
    gt_boxes, gt_labels = random_scene(1, 3)
    _, labels = match(gt_boxes, gt_labels.to(dtype), PRIORS)
    assert labels.dtype == torch.long
    assert torch.equal(labels, match(gt_boxes, gt_labels, PRIORS)[1])
    _, labels = match(torch.zeros(0, 4), torch.zeros(0, dtype=dtype), PRIORS)
    assert labels.dtype == torch.long


@pytest.mark.parametrize("labels", [torch.tensor([True, True]), torch.tensor([1.0, 2.0])])
def test_bool_and_float_labels_are_rejected(labels):
    gt_boxes, _ = random_scene(1, 2)
    with pytest.raises(ValueError, match="integer"):
        match(gt_boxes, labels, PRIORS)


@pytest.mark.parametrize("which", ["gt_boxes", "gt_labels", "priors"])
def test_numpy_arrays_get_a_clear_type_error(which):
    arguments = dict(zip(["gt_boxes", "gt_labels"], random_scene(1, 2)), priors=PRIORS)
    arguments[which] = arguments[which].numpy()
    with pytest.raises(TypeError, match=rf"{which} must be a torch.Tensor.*ndarray.*torch.as_tensor"):
        match(**arguments)


def test_integer_priors_are_rejected():
    gt_boxes, gt_labels = random_scene(1, 2)
    with pytest.raises(TypeError, match="floating"):
        match(gt_boxes, gt_labels, PRIORS.long())
