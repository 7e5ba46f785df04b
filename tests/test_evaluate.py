"""Tests for ssd_lite.evaluate: hand-computed cases, then agreement with pycocotools on random data."""
import contextlib
import io
import math

import numpy as np
import pytest
import torch

from ssd_lite.evaluate import (COCO_IOU_THRESHOLDS, average_precision, class_matches, coco_map, match_detections,
                               mean_average_precision, precision_recall, to_coco)


def image(boxes, labels, scores=None, difficult=None):
    """One image's detections (with scores) or target (without), from plain lists."""
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
           "labels": torch.tensor(labels, dtype=torch.int64)}
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    if difficult is not None:
        out["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    return out


A = [0.1, 0.1, 0.4, 0.4]
B = [0.5, 0.5, 0.9, 0.9]
FAR = [0.0, 0.6, 0.2, 0.8]  # overlaps neither A nor B


# ---------------------------------------------------------------- precision_recall and average_precision

def test_precision_recall_sorts_by_score():
    precision, recall = precision_recall(torch.tensor([0.2, 0.9, 0.5]), torch.tensor([True, False, True]), 4)
    # Order by score: 0.9 (FP), 0.5 (TP), 0.2 (TP).
    assert precision.tolist() == [0.0, 0.5, 2 / 3]
    assert recall.tolist() == [0.0, 0.25, 0.5]
    assert precision.dtype == torch.float64


def test_precision_recall_ties_keep_input_order():
    precision, _ = precision_recall(torch.tensor([0.5, 0.5]), torch.tensor([False, True]), 1)
    assert precision.tolist() == [0.0, 0.5]


def test_precision_recall_bad_input():
    with pytest.raises(ValueError, match="num_ground_truth"):
        precision_recall(torch.tensor([0.5]), torch.tensor([True]), 0)
    with pytest.raises(ValueError, match="at most once"):
        precision_recall(torch.tensor([0.5, 0.4]), torch.tensor([True, True]), 1)
    with pytest.raises(ValueError, match="bool"):
        precision_recall(torch.tensor([0.5]), torch.tensor([1]), 1)
    with pytest.raises(ValueError, match=r"\(K,\)"):
        precision_recall(torch.tensor([0.5, 0.4]), torch.tensor([True]), 1)


def test_average_precision_hand_computed():
    # Detections by score: TP, FP, TP, with 4 objects. Recall 0.25, 0.25, 0.5; precision 1, 1/2, 2/3.
    precision = torch.tensor([1.0, 0.5, 2 / 3], dtype=torch.float64)
    recall = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    # all-point: 0.25 * 1 + 0.25 * 2/3.
    assert average_precision(precision, recall, "all") == pytest.approx(0.25 + 0.25 * 2 / 3)
    # 11-point: recall 0, 0.1, 0.2 -> 1; 0.3, 0.4, 0.5 -> 2/3; 0.6 ... 1 -> 0.
    assert average_precision(precision, recall, "11point") == pytest.approx((3 * 1 + 3 * 2 / 3) / 11)
    # 101-point: recall 0 ... 0.25 (26 points) -> 1; 0.26 ... 0.5 (25 points) -> 2/3; the rest 0.
    assert average_precision(precision, recall, "101point") == pytest.approx((26 + 25 * 2 / 3) / 101)


def test_average_precision_envelope_fills_dips():
    # FP then TP: the envelope lifts the first point's precision 0 up to 1/2.
    precision, recall = precision_recall(torch.tensor([0.9, 0.8]), torch.tensor([False, True]), 1)
    assert average_precision(precision, recall, "all") == pytest.approx(0.5)
    assert average_precision(precision, recall, "11point") == pytest.approx(0.5)
    assert average_precision(precision, recall, "101point") == pytest.approx(0.5)


def test_average_precision_perfect_and_empty():
    precision, recall = precision_recall(torch.rand(5), torch.ones(5, dtype=torch.bool), 5)
    for interpolation in ("all", "11point", "101point"):
        assert average_precision(precision, recall, interpolation) == pytest.approx(1.0)
        assert average_precision(torch.zeros(0), torch.zeros(0), interpolation) == 0.0


def test_average_precision_bad_input():
    with pytest.raises(ValueError, match="interpolation"):
        average_precision(torch.ones(1), torch.ones(1), "voc")
    with pytest.raises(ValueError, match="never decrease"):
        average_precision(torch.ones(2), torch.tensor([0.5, 0.2]))
    with pytest.raises(ValueError, match=r"\(K,\)"):
        average_precision(torch.ones(2), torch.ones(3))


def test_average_precision_matches_voc_devkit_formula():
    """'all' equals the VOC2010+ devkit's computation: pad, envelope, sum over recall changes."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        is_true_positive = torch.rand(30, generator=generator) < 0.5
        precision, recall = precision_recall(torch.rand(30, generator=generator), is_true_positive,
                                             int(is_true_positive.sum()) + 3)
        mrec = np.concatenate([[0.0], recall.numpy(), [1.0]])
        mpre = np.concatenate([[0.0], precision.numpy(), [0.0]])
        for i in range(len(mpre) - 1, 0, -1):
            mpre[i - 1] = max(mpre[i - 1], mpre[i])
        changes = np.where(mrec[1:] != mrec[:-1])[0]
        expected = np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1])
        assert average_precision(precision, recall, "all") == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- matching and mean_average_precision

def test_perfect_detections_give_one():
    targets = [image([A, B], [1, 2]), image([B], [1])]
    detections = [image([A, B], [1, 2], scores=[0.9, 0.8]), image([B], [1], scores=[0.7])]
    for interpolation in ("all", "11point", "101point"):
        result = mean_average_precision(detections, targets, interpolation=interpolation)
        assert result["map"] == pytest.approx(1.0)
        assert result["ap_per_class"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    result = coco_map(detections, targets)
    assert result["map"] == pytest.approx(1.0)
    assert list(result["map_per_threshold"]) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


def test_no_detections_give_zero():
    targets = [image([A], [1])]
    detections = [image([], [], scores=[])]
    assert mean_average_precision(detections, targets)["map"] == 0.0
    assert coco_map(detections, targets)["map"] == 0.0


def test_false_positive_ahead_of_true_positive():
    targets = [image([A], [1])]
    detections = [image([FAR, A], [1, 1], scores=[0.9, 0.8])]
    # Precision 0 then 1/2 at recall 1: the envelope gives 1/2 everywhere.
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(0.5)
    # The same detections the other way round cost nothing: the FP comes after full recall.
    detections = [image([FAR, A], [1, 1], scores=[0.7, 0.8])]
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(1.0)


def test_duplicates_are_false_positives():
    targets = [image([A], [1])]
    detections = [image([A, A], [1, 1], scores=[0.8, 0.9])]
    is_true_positive, is_ignored = match_detections(detections[0]["boxes"], detections[0]["scores"],
                                                    targets[0]["boxes"], torch.tensor([False]), 0.5)
    # The better-scored one (index 1) finds the object; the other is a duplicate.
    assert is_true_positive.tolist() == [False, True] and not is_ignored.any()
    # Full recall is reached first, so AP is still 1 ...
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(1.0)
    # ... but a duplicate ahead of a second object's detection costs precision.
    targets = [image([A, B], [1, 1])]
    detections = [image([A, A, B], [1, 1, 1], scores=[0.9, 0.8, 0.7])]
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_wrong_class_is_false_positive():
    targets = [image([A], [1])]
    detections = [image([A, A], [2, 1], scores=[0.9, 0.8])]
    result = mean_average_precision(detections, targets)
    # Class 2 has no object: nan, left out of the mean. Class 1 is perfect.
    assert math.isnan(result["ap_per_class"][2])
    assert result["ap_per_class"][1] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)


def test_iou_threshold_is_inclusive():
    # IoU of [0, 0, 1, 0.5] with [0, 0, 1, 1] is exactly 0.5: a match at 0.5 (pycocotools' >=).
    targets = [image([[0.0, 0.0, 1.0, 1.0]], [1])]
    detections = [image([[0.0, 0.0, 1.0, 0.5]], [1], scores=[0.9])]
    assert mean_average_precision(detections, targets, iou_threshold=0.5)["map"] == 1.0
    assert mean_average_precision(detections, targets, iou_threshold=0.51)["map"] == 0.0


def test_detection_takes_best_free_object():
    # Two overlapping objects of one class. The first detection is object 1 exactly; the second overlaps
    # object 1 most (IoU 0.92, but it is taken) and object 2 enough (IoU 0.72).
    first, second = [0.0, 0.0, 0.5, 0.5], [0.1, 0.0, 0.6, 0.5]
    targets = [image([first, second], [1, 1])]
    detections = [image([first, [0.02, 0.0, 0.52, 0.5]], [1, 1], scores=[0.9, 0.8])]
    is_true_positive, _ = match_detections(detections[0]["boxes"], detections[0]["scores"],
                                           targets[0]["boxes"], torch.tensor([False, False]), 0.5)
    # As in pycocotools, the second detection takes the best *free* object: a true positive. (The VOC
    # devkit would call it a duplicate of object 1.)
    assert is_true_positive.tolist() == [True, True]
    expected_per_threshold, _ = pycocotools_map(detections, targets, num_classes=2)
    assert expected_per_threshold[0] == pytest.approx(1.0)


def test_difficult_objects():
    # Object A is difficult, B is not.
    targets = [image([A, B], [1, 1], difficult=[True, False])]
    # A detection on A (best score) and one on B: the first is ignored, so AP is 1.
    detections = [image([A, B], [1, 1], scores=[0.9, 0.8])]
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(1.0)
    # Two detections on A: both ignored (difficult objects are never "taken").
    detections = [image([A, A, B], [1, 1, 1], scores=[0.9, 0.85, 0.8])]
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(1.0)
    # Missing A costs nothing; missing B costs everything.
    assert mean_average_precision([image([B], [1], scores=[0.5])], targets)["map"] == pytest.approx(1.0)
    assert mean_average_precision([image([A], [1], scores=[0.5])], targets)["map"] == 0.0
    # Without the flags, A counts: a detection of B only has recall 1/2.
    plain = [image([A, B], [1, 1])]
    assert mean_average_precision([image([B], [1], scores=[0.5])], plain)["map"] == pytest.approx(0.5)


def test_only_difficult_objects_give_nan():
    targets = [image([A], [1], difficult=[True])]
    result = mean_average_precision([image([A], [1], scores=[0.5])], targets)
    assert math.isnan(result["ap_per_class"][1]) and math.isnan(result["map"])


def test_empty_images():
    targets = [image([], []), image([A], [1]), image([], [])]
    detections = [image([], [], scores=[]), image([A], [1], scores=[0.9]), image([B], [1], scores=[0.3])]
    # The false positive on an empty image comes after full recall: no cost.
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(1.0)
    detections[2]["scores"][0] = 0.95  # now ahead of the true positive
    assert mean_average_precision(detections, targets)["map"] == pytest.approx(0.5)
    # No objects anywhere: nothing to measure.
    assert math.isnan(mean_average_precision([image([], [], scores=[])], [image([], [])])["map"])


def test_num_classes_lists_every_class():
    targets = [image([A], [1])]
    detections = [image([A], [1], scores=[0.9])]
    result = mean_average_precision(detections, targets, num_classes=4)
    assert list(result["ap_per_class"]) == [1, 2, 3]
    assert math.isnan(result["ap_per_class"][3]) and result["map"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels"):
        mean_average_precision(detections, targets, num_classes=1)


def test_bad_inputs_are_named():
    targets = [image([A], [1])]
    with pytest.raises(ValueError, match="one detections dict per target"):
        mean_average_precision([], targets)
    with pytest.raises(ValueError, match="scores"):
        mean_average_precision([image([A], [1])], targets)
    with pytest.raises(ValueError, match="background"):
        mean_average_precision([image([A], [0], scores=[0.5])], targets)
    with pytest.raises(ValueError, match="interpolation"):
        mean_average_precision([image([A], [1], scores=[0.5])], targets, interpolation="coco")
    with pytest.raises(ValueError, match=r"detections\[0\]\['boxes'\]\[0\]"):
        mean_average_precision([image([[0.5, 0.5, 0.1, 0.9]], [1], scores=[0.5])], targets)


def test_class_matches_feeds_precision_recall():
    targets = [image([A, B], [1, 2]), image([A], [1], difficult=[True])]
    detections = [image([A, FAR, B], [1, 1, 2], scores=[0.9, 0.8, 0.7]), image([A], [1], scores=[0.95])]
    scores, is_true_positive, num_objects = class_matches(detections, targets, label=1)
    # Image 0: A found, FAR is a false positive; image 1: the detection on a difficult object is left out.
    assert scores.tolist() == pytest.approx([0.9, 0.8]) and is_true_positive.tolist() == [True, False]
    assert num_objects == 1


def test_to_coco_pixels():
    # (width, height) = (100, 200), the convention of the whole course (PIL, detect's JSON).
    ground_truth, results = to_coco([image([B], [2], scores=[0.5])], [image([A], [1])], [(100, 200)], num_classes=3)
    assert ground_truth["annotations"][0]["bbox"] == pytest.approx([10.0, 20.0, 30.0, 60.0])
    assert ground_truth["annotations"][0]["area"] == pytest.approx(1800.0)
    assert results[0]["bbox"] == pytest.approx([50.0, 100.0, 40.0, 80.0]) and results[0]["category_id"] == 2
    assert [c["id"] for c in ground_truth["categories"]] == [1, 2]
    assert ground_truth["images"][0]["width"] == 100 and ground_truth["images"][0]["height"] == 200


def test_to_coco_and_detect_json_agree_on_image_sizes():
    """One (width, height) convention: the same detection becomes the same pixel box in both formats."""
    from ssd_lite.detect import detections_to_json
    found = {"boxes": torch.tensor([[0.1, 0.2, 0.5, 0.6]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([1])}
    size = (300, 100)  # a wide image
    x_min, y_min, x_max, y_max = detections_to_json([found], ["a.jpg"], [size], ["background", "a"])[0]["box"]
    _, results = to_coco([found], [image([], [])], [size], num_classes=2)
    assert results[0]["bbox"] == pytest.approx([x_min, y_min, x_max - x_min, y_max - y_min])


# ---------------------------------------------------------------- agreement with pycocotools

IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480


def random_test_set(seed, num_images=6, num_classes=4):
    """Random objects, and detections near them (jittered, duplicated, mislabelled) plus stray ones."""
    generator = torch.Generator().manual_seed(seed)

    def random_boxes(n):
        corner = torch.rand(n, 2, generator=generator) * 0.7
        size = torch.rand(n, 2, generator=generator) * 0.3 + 0.02
        return torch.cat([corner, corner + size], dim=1)

    detections, targets = [], []
    for _ in range(num_images):
        num_objects = int(torch.randint(0, 6, (), generator=generator))
        gt_boxes = random_boxes(num_objects)
        gt_labels = torch.randint(1, num_classes, (num_objects,), generator=generator)
        copies = int(torch.randint(0, 4, (), generator=generator))
        near = gt_boxes.repeat(copies, 1)
        near = near + 0.04 * torch.randn(near.shape, generator=generator) * (near[:, 2:] - near[:, :2]).repeat(1, 2)
        near_labels = gt_labels.repeat(copies)
        relabel = torch.rand(len(near_labels), generator=generator) < 0.15
        near_labels[relabel] = torch.randint(1, num_classes, (int(relabel.sum()),), generator=generator)
        num_stray = int(torch.randint(0, 4, (), generator=generator))
        boxes = torch.cat([near, random_boxes(num_stray)]).clamp(0, 1)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1e-3)
        labels = torch.cat([near_labels, torch.randint(1, num_classes, (num_stray,), generator=generator)])
        detections.append({"boxes": boxes, "labels": labels, "scores": torch.rand(len(boxes), generator=generator)})
        targets.append({"boxes": gt_boxes, "labels": gt_labels})
    return detections, targets


def pycocotools_map(detections, targets, num_classes, image_sizes=None):
    """Run pycocotools' COCOeval (bbox, area "all", unlimited detections) on in-memory dicts.

    Returns (AP per IoU threshold (T,), AP per class (averaged over thresholds) {label: AP}).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    image_sizes = image_sizes or [(IMAGE_WIDTH, IMAGE_HEIGHT)] * len(targets)
    ground_truth_json, results = to_coco(detections, targets, image_sizes, num_classes)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        ground_truth = COCO()
        ground_truth.dataset = ground_truth_json
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
        evaluator.params.maxDets = [10_000]  # effectively unlimited: we apply no per-image cap
        evaluator.params.areaRng = [[0, 1e10]]
        evaluator.params.areaRngLbl = ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # (T, R, K), -1 for classes with no object
    assert np.allclose(evaluator.params.iouThrs, COCO_IOU_THRESHOLDS, atol=0, rtol=0)
    per_threshold = [float(np.mean(p[p > -1])) if (p > -1).any() else math.nan for p in precision]
    per_class = {}
    for k, label in enumerate(evaluator.params.catIds):
        p = precision[:, :, k]
        per_class[label] = float(np.mean(p)) if (p > -1).all() else math.nan
    return np.array(per_threshold), per_class


@pytest.mark.parametrize("seed", range(30))
def test_agrees_with_pycocotools(seed):
    num_classes = 4
    detections, targets = random_test_set(seed, num_images=1 + seed % 8, num_classes=num_classes)
    if seed % 3 == 1:
        for found in detections:  # scores with one decimal: many ties, which must break the same way
            found["scores"] = found["scores"].round(decimals=1)
    image_sizes = None
    if seed % 3 == 2:  # images of different sizes and shapes: pixel boxes differ, IoUs must not
        image_sizes = [(100 + 37 * i, 300 - 11 * i) for i in range(len(targets))]
    if not any(len(found["boxes"]) for found in detections):
        pytest.skip("pycocotools cannot load an empty result list")
    expected_per_threshold, expected_per_class = pycocotools_map(detections, targets, num_classes, image_sizes)
    ours = coco_map(detections, targets, num_classes=num_classes)
    ours_per_threshold = np.array(list(ours["map_per_threshold"].values()))
    np.testing.assert_allclose(ours_per_threshold, expected_per_threshold, atol=1e-6, equal_nan=True)
    assert ours["map"] == pytest.approx(float(np.mean(expected_per_threshold)), abs=1e-6, nan_ok=True)
    assert list(ours["ap_per_class"]) == list(expected_per_class)
    for label, expected in expected_per_class.items():
        assert ours["ap_per_class"][label] == pytest.approx(expected, abs=1e-6, nan_ok=True)
    # AP50 through the public single-threshold function, too.
    at_50 = mean_average_precision(detections, targets, 0.5, "101point", num_classes)
    assert at_50["map"] == pytest.approx(expected_per_threshold[0], abs=1e-6, nan_ok=True)


# ---------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory):
    from ssd_lite.shapes import ShapesDataset
    from ssd_lite.checkpoint import save_checkpoint
    from ssd_lite.model import default_model
    from ssd_lite.train import default_settings

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("evaluate") / "untrained.pt"
    save_checkpoint(path, default_model(len(ShapesDataset.class_names)), ShapesDataset.class_names,
                    **default_settings())
    return path


def test_command_line_on_held_out_shapes(untrained_checkpoint, capsys):
    from ssd_lite.evaluate import main

    assert main(["--checkpoint", str(untrained_checkpoint), "--num-images", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "seed 1000" in out  # the held-out seed recorded in the checkpoint, not the training seed
    for text in ["VOC2010+ mAP@0.5", "VOC2007  mAP@0.5 (11 points)", "COCO     mAP@[0.50:0.95]", "triangle"]:
        assert text in out


def test_command_line_draws_held_out_shapes_as_the_training_images_were(untrained_checkpoint, monkeypatch):
    from ssd_lite.shapes import ShapesDataset
    from ssd_lite.evaluate import main

    drawn_at = []
    draw = ShapesDataset.__init__

    def recording_init(self, *args, **kwargs):
        draw(self, *args, **kwargs)
        drawn_at.append(self.image_size)

    monkeypatch.setattr(ShapesDataset, "__init__", recording_init)
    assert main(["--checkpoint", str(untrained_checkpoint), "--num-images", "2", "--device", "cpu"]) == 0
    # The checkpoint's data["draw_size"] (128), not the model's input (192): predict enlarges them.
    assert drawn_at == [128]


def test_command_line_on_voc_folder(untrained_checkpoint, tmp_path, capsys):
    from ssd_lite.shapes import ShapesDataset
    from ssd_lite.voc import write_voc
    from ssd_lite.evaluate import main

    write_voc(ShapesDataset(2, seed=5), tmp_path / "voc", split="val")
    assert main(["--checkpoint", str(untrained_checkpoint), "--data", str(tmp_path / "voc"), "--device", "cpu"]) == 0
    assert "images: 2" in capsys.readouterr().out


def test_command_line_help(capsys):
    from ssd_lite.evaluate import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--checkpoint" in capsys.readouterr().out
