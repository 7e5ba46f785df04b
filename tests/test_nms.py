"""ssd_lite.nms against torchvision.ops and a slow per-class reference built on torchvision."""
import pytest
import torch
import torchvision

from ssd_lite.boxes import decode
from ssd_lite.nms import NMS_TOP_K, batched_nms, detect, nms
from ssd_lite.priors import default_boxes, prior_scales

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_boxes(g, n, max_size=0.4):
    corner = torch.rand(n, 2, generator=g)
    size = torch.rand(n, 2, generator=g) * max_size
    return torch.cat([corner, corner + size], dim=1)


# ---------------------------------------------------------------- nms, batched_nms

@pytest.mark.parametrize("seed", range(40))
def test_nms_matches_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(0, 300, (1,), generator=g))
    boxes = random_boxes(g, n, max_size=float(torch.rand(1, generator=g)) * 0.6 + 0.01)
    scores = torch.rand(n, generator=g)
    for threshold in (0.0, 0.45, 0.8, float(torch.rand(1, generator=g))):
        assert torch.equal(nms(boxes, scores, threshold), torchvision.ops.nms(boxes, scores, threshold))


@pytest.mark.parametrize("seed", range(30))
def test_batched_nms_matches_torchvision(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    n = int(torch.randint(0, 400, (1,), generator=g))
    boxes = random_boxes(g, n)
    scores = torch.rand(n, generator=g)
    labels = torch.randint(0, 5, (n,), generator=g)
    for threshold in (0.3, 0.5, float(torch.rand(1, generator=g))):
        assert torch.equal(batched_nms(boxes, scores, labels, threshold),
                           torchvision.ops.batched_nms(boxes, scores, labels, threshold))


@pytest.mark.parametrize("device", DEVICES)
def test_nms_on_the_inputs_device(device):
    g = torch.Generator().manual_seed(11)
    boxes, scores, labels = random_boxes(g, 300), torch.rand(300, generator=g), torch.randint(0, 3, (300,), generator=g)
    keep = nms(boxes.to(device), scores.to(device), 0.5)
    assert keep.device.type == device
    assert torch.equal(keep.cpu(), torchvision.ops.nms(boxes, scores, 0.5))
    keep = batched_nms(boxes.to(device), scores.to(device), labels.to(device), 0.5)
    assert torch.equal(keep.cpu(), torchvision.ops.batched_nms(boxes, scores, labels, 0.5))


def test_nms_pixel_boxes_and_duplicates():
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(g, 100) * 300  # NMS does not care about units
    boxes = torch.cat([boxes, boxes[:20]])  # exact duplicates: IoU 1
    scores = torch.rand(120, generator=g)
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))


def test_nms_ties_in_scores_follow_torchvision():
    """Equal scores: torchvision's CPU kernel sorts stably, so the lower index comes first."""
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        boxes = random_boxes(g, 150)
        scores = torch.randint(0, 4, (150,), generator=g).float() / 4  # many equal scores
        assert torch.equal(nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))
    same = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert nms(same, torch.ones(3), 0.5).tolist() == [0]


def test_nms_empty_and_degenerate():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).shape == (0,)
    # zero-area boxes (clipped to a line at the image edge) are kept, like torchvision does
    flat = torch.tensor([[1.0, 0.2, 1.0, 0.5], [1.0, 0.2, 1.0, 0.5], [0.1, 0.1, 0.3, 0.3]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torch.equal(nms(flat, scores, 0.5), torchvision.ops.nms(flat, scores, 0.5))


def test_nms_bad_input():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5]] * 3)
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, torch.rand(2), 0.5)
    with pytest.raises(ValueError, match="x_max < x_min"):
        nms(torch.tensor([[0.5, 0.0, 0.1, 1.0]]), torch.rand(1), 0.5)
    with pytest.raises(ValueError, match="iou_threshold"):
        nms(boxes, torch.rand(3), 1.5)
    with pytest.raises(ValueError, match="labels"):
        batched_nms(boxes, torch.rand(3), torch.zeros(2, dtype=torch.long), 0.5)


# ---------------------------------------------------------------- detect

def small_priors():
    maps, ratios = (10, 5, 3, 1), ((2,), (2, 3), (2, 3), (2,))
    return default_boxes(maps, prior_scales(len(maps)), ratios)  # (P, 4) cxcywh


def fake_predictions(g, priors, batch_size=3, num_classes=5, background_boost=3.0):
    """Predictions with background winning most priors, so a realistic share passes 0.01."""
    num_priors = len(priors)
    loc = 0.5 * torch.randn(batch_size, num_priors, 4, generator=g)
    conf = 1.5 * torch.randn(batch_size, num_priors, num_classes, generator=g)
    conf[..., 0] += background_boost
    return loc, conf


def reference_detect(loc, conf, priors, score_threshold=0.01, iou_threshold=0.45, top_k=200,
                     candidates_per_class=NMS_TOP_K):
    """What torchvision's SSD.postprocess_detections does, one image and one class at a time."""
    boxes = decode(loc, priors).clamp(0, 1)
    scores = conf.softmax(-1)
    results = []
    for b in range(loc.shape[0]):
        all_boxes, all_scores, all_labels = [], [], []
        for c in range(1, conf.shape[-1]):
            keep = scores[b, :, c] > score_threshold
            class_scores, idx = scores[b, keep, c].topk(min(candidates_per_class, int(keep.sum())))
            all_boxes.append(boxes[b][keep][idx])
            all_scores.append(class_scores)
            all_labels.append(torch.full_like(idx, c))
        all_boxes, all_scores, all_labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
        keep = torchvision.ops.batched_nms(all_boxes, all_scores, all_labels, iou_threshold)[:top_k]
        results.append({"boxes": all_boxes[keep], "scores": all_scores[keep], "labels": all_labels[keep]})
    return results


def assert_same_detections(ours, ref):
    """Same detections, same score order. Equal scores may come in either order (torchvision's
    batched_nms sorts them unstably), so rows are compared as sorted (score, label, box) tuples."""
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref):
        for key in ("boxes", "scores", "labels"):
            assert o[key].dtype == r[key].dtype, key
            assert o[key].shape == r[key].shape, key
        assert torch.equal(o["scores"].cpu(), r["scores"].cpu())
        rows = [sorted(zip(d["scores"].tolist(), d["labels"].tolist(), d["boxes"].tolist())) for d in (o, r)]
        assert rows[0] == rows[1]


@pytest.mark.parametrize("seed", range(12))
def test_detect_matches_torchvision_reference(seed):
    g = torch.Generator().manual_seed(seed)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, background_boost=[1.0, 3.0, 5.0][seed % 3])
    settings = [dict(), dict(iou_threshold=0.3, top_k=20), dict(score_threshold=0.2, candidates_per_class=50)]
    for kwargs in settings:
        assert_same_detections(detect(loc, conf, priors, **kwargs), reference_detect(loc, conf, priors, **kwargs))


@pytest.mark.parametrize("device", DEVICES)
def test_detect_shapes_labels_and_top_k(device):
    g = torch.Generator().manual_seed(0)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, batch_size=4, background_boost=0.0)
    detections = detect(loc.to(device), conf.to(device), priors.to(device), top_k=50)
    assert len(detections) == 4
    for d in detections:
        k = len(d["scores"])
        assert 0 < k <= 50
        assert d["boxes"].shape == (k, 4) and d["labels"].shape == (k,)
        assert d["boxes"].device.type == device and d["labels"].dtype == torch.int64
        assert (d["labels"] >= 1).all() and (d["labels"] < 5).all()
        assert (d["boxes"] >= 0).all() and (d["boxes"] <= 1).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all(), "highest score first"
    if device != "cpu":  # the same detections as on the CPU (up to float rounding of the boxes)
        on_cpu = detect(loc, conf, priors, top_k=50)
        for d, c in zip(detections, on_cpu):
            assert torch.equal(d["labels"].cpu(), c["labels"])
            torch.testing.assert_close(d["boxes"].cpu(), c["boxes"])


def test_detect_empty_results():
    priors = small_priors()
    loc = torch.zeros(2, len(priors), 4)
    conf = torch.zeros(2, len(priors), 3)
    conf[..., 0] = 20.0  # background everywhere: nothing reaches 0.01
    conf[1, 5, 2] = 30.0  # except one confident box in the second image
    detections = detect(loc, conf, priors)
    empty = detections[0]
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,) and empty["labels"].shape == (0,)
    assert empty["boxes"].dtype == torch.float32 and empty["labels"].dtype == torch.int64
    assert detections[1]["labels"].tolist() == [2]
    assert all(len(d["scores"]) == 0 for d in detect(loc[:1], conf[:1], priors))


def test_detect_bad_shapes():
    priors = small_priors()
    loc, conf = torch.zeros(1, len(priors), 4), torch.zeros(1, len(priors), 3)
    with pytest.raises(ValueError, match="priors"):
        detect(loc, conf, priors[:-1])
    with pytest.raises(ValueError, match="conf_pred"):
        detect(loc, conf[:, :-1], priors)
    with pytest.raises(ValueError, match="loc_pred"):
        detect(loc[0], conf, priors)
