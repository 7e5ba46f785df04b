import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou

from ssd_lite.boxes import cxcywh_to_xyxy, decode
from ssd_lite.matching import match
from ssd_lite.priors import ssd300_default_boxes

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
