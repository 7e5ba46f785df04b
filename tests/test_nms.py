"""ssd_lite.nms against torchvision.ops, torchvision's SSD post-processing, and a slow per-class reference."""
import ast
import inspect
import math
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torchvision.models.detection import _utils as torchvision_det_utils
from torchvision.models.detection.ssd import SSD as TorchvisionSSD

from ssd_lite.boxes import cxcywh_to_xyxy, decode, encode
from ssd_lite.nms import NMS_TOP_K, _batched_nms_for_top_k, _greedy_nms_all_groups, batched_nms, nms, postprocess
from ssd_lite.priors import default_boxes, prior_scales

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_boxes(g, n, max_size=0.4):
    corner = torch.rand(n, 2, generator=g)
    size = torch.rand(n, 2, generator=g) * max_size
    return torch.cat([corner, corner + size], dim=1)


def as_mask(indices, n):
    mask = torch.zeros(n, dtype=torch.bool)
    mask[indices.cpu()] = True
    return mask


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


def test_batched_nms_many_boxes_matches_torchvision():
    """Over 1000 boxes torchvision switches to a per-label loop; the same boxes survive."""
    g = torch.Generator().manual_seed(5)
    boxes, scores = random_boxes(g, 3000, max_size=0.2), torch.rand(3000, generator=g)
    labels = torch.randint(0, 40, (3000,), generator=g)
    ours = batched_nms(boxes, scores, labels, 0.45)
    theirs = torchvision.ops.batched_nms(boxes, scores, labels, 0.45)
    assert torch.equal(as_mask(ours, 3000), as_mask(theirs, 3000))
    assert torch.equal(scores[ours], scores[theirs])  # best first on both sides


@pytest.mark.parametrize("device", DEVICES)
def test_nms_on_the_inputs_device(device):
    g = torch.Generator().manual_seed(11)
    boxes, scores, labels = random_boxes(g, 300), torch.rand(300, generator=g), torch.randint(0, 3, (300,), generator=g)
    keep = nms(boxes.to(device), scores.to(device), 0.5)
    assert keep.device.type == device
    assert torch.equal(keep.cpu(), torchvision.ops.nms(boxes, scores, 0.5))
    keep = batched_nms(boxes.to(device), scores.to(device), labels.to(device), 0.5)
    assert keep.device.type == device
    assert torch.equal(keep.cpu(), torchvision.ops.batched_nms(boxes, scores, labels, 0.5))


def test_nms_pixel_boxes_and_duplicates():
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(g, 100) * 300  # NMS does not care about units
    boxes = torch.cat([boxes, boxes[:20]])  # exact duplicates: IoU 1
    scores = torch.rand(120, generator=g)
    assert torch.equal(nms(boxes, scores, 0.5), torchvision.ops.nms(boxes, scores, 0.5))
    # integer pixel boxes: the same answer as the same boxes in floats
    pixels = boxes.round()
    labels = torch.randint(0, 3, (120,), generator=g)
    assert torch.equal(nms(pixels.long(), scores, 0.5), nms(pixels, scores, 0.5))
    assert torch.equal(batched_nms(pixels.long(), scores, labels, 0.5), batched_nms(pixels, scores, labels, 0.5))


def test_nms_ties_in_scores_follow_torchvision():
    """Equal scores: torchvision's CPU kernel sorts stably, so the lower index comes first."""
    g = torch.Generator().manual_seed(3)
    for trial in range(20):
        boxes = random_boxes(g, 150)
        scores = torch.randint(0, 4, (150,), generator=g).float() / 4  # many equal scores
        labels = torch.randint(0, 3, (150,), generator=g)
        assert torch.equal(nms(boxes, scores, 0.4), torchvision.ops.nms(boxes, scores, 0.4))
        assert torch.equal(batched_nms(boxes, scores, labels, 0.4),
                           torchvision.ops.batched_nms(boxes, scores, labels, 0.4))
    same = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert nms(same, torch.ones(3), 0.5).tolist() == [0]
    assert batched_nms(same, torch.ones(3), torch.tensor([2, 1, 2]), 0.5).tolist() == [0, 1]


def test_nms_empty_and_degenerate():
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    empty = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.int64
    one = torch.tensor([[0.1, 0.1, 0.2, 0.3]])
    assert nms(one, torch.tensor([0.3]), 0.5).tolist() == [0]
    assert batched_nms(one, torch.tensor([0.3]), torch.tensor([7]), 0.5).tolist() == [0]
    # zero-area boxes (clipped to a line at the image edge) are kept, like torchvision does
    flat = torch.tensor([[1.0, 0.2, 1.0, 0.5], [1.0, 0.2, 1.0, 0.5], [0.1, 0.1, 0.3, 0.3]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert torch.equal(nms(flat, scores, 0.5), torchvision.ops.nms(flat, scores, 0.5))
    labels = torch.tensor([1, 1, 1])
    assert torch.equal(batched_nms(flat, scores, labels, 0.5), torchvision.ops.batched_nms(flat, scores, labels, 0.5))


def test_nms_bad_input():
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5]] * 3)
    with pytest.raises(ValueError, match="scores"):
        nms(boxes, torch.rand(2), 0.5)
    with pytest.raises(ValueError, match="x_max < x_min"):
        nms(torch.tensor([[0.5, 0.0, 0.1, 1.0]]), torch.rand(1), 0.5)
    with pytest.raises(ValueError, match="non-finite"):
        batched_nms(torch.tensor([[0.1, 0.1, math.nan, 0.5]]), torch.rand(1), torch.zeros(1, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="labels"):
        batched_nms(boxes, torch.rand(3), torch.zeros(2, dtype=torch.long), 0.5)
    with pytest.raises(TypeError, match="labels"):
        batched_nms(boxes, torch.rand(3), [0, 0, 0], 0.5)
    with pytest.raises(ValueError, match="NaN at index 1"):
        nms(boxes, torch.tensor([0.5, math.nan, 0.2]), 0.5)
    for threshold in (1.5, -0.1, math.nan, "0.5", None):
        with pytest.raises(ValueError, match="iou_threshold must be a number in"):
            nms(boxes, torch.rand(3), threshold)
        with pytest.raises(ValueError, match="iou_threshold must be a number in"):
            batched_nms(boxes, torch.rand(3), torch.zeros(3, dtype=torch.long), threshold)


# ---------------------------------------------------------------- the fast path of batched_nms

def textbook_per_group(boxes, scores, groups, iou_threshold):
    """(N,) bool: the textbook `nms` run on each group's boxes on their own."""
    kept = torch.zeros(len(boxes), dtype=torch.bool)
    for group in groups.unique():
        members = (groups == group).nonzero().flatten()
        kept[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    return kept


def random_nms_case(g):
    """Random boxes, scores and groups, with the cases NMS must get right mixed in: equal scores,
    duplicate boxes, zero-area boxes, boxes all on top of each other."""
    n = int(torch.randint(0, 400, (1,), generator=g))
    boxes = random_boxes(g, n, max_size=float(torch.rand(1, generator=g)) * 0.6 + 0.01)
    scores = torch.rand(n, generator=g)
    groups = torch.randint(0, int(torch.randint(1, 30, (1,), generator=g)), (n,), generator=g) * 7 - 20
    kind = int(torch.randint(0, 4, (1,), generator=g))
    if kind == 1 and n:  # ties: a few distinct scores only
        scores = torch.randint(0, 5, (n,), generator=g).float() / 5
    if kind == 2 and n > 10:  # duplicates and flat boxes
        boxes[: n // 4] = boxes[n // 4: 2 * (n // 4)]
        boxes[-3:, 2] = boxes[-3:, 0]
    if kind == 3 and n:  # everything in one spot: heavy overlap, long chains of suppression
        boxes = 0.4 + 0.05 * boxes
    return boxes, scores, groups


@pytest.mark.parametrize("seed", range(60))
def test_fast_path_equals_textbook_nms_and_torchvision(seed):
    g = torch.Generator().manual_seed(2000 + seed)
    boxes, scores, groups = random_nms_case(g)
    for threshold in (0.0, 0.45, 0.7, 1.0, float(torch.rand(1, generator=g))):
        fast = _greedy_nms_all_groups(boxes, scores, groups, threshold)
        assert torch.equal(fast, textbook_per_group(boxes, scores, groups, threshold))
        assert torch.equal(fast, as_mask(torchvision.ops.batched_nms(boxes, scores, groups, threshold), len(boxes)))
        if groups.unique().numel() <= 1:
            assert torch.equal(fast, as_mask(torchvision.ops.nms(boxes, scores, threshold), len(boxes)))
        # and batched_nms orders the survivors as torchvision does: best first, ties by index
        assert torch.equal(batched_nms(boxes, scores, groups, threshold),
                           torchvision.ops.batched_nms(boxes, scores, groups, threshold))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_fast_path_equals_textbook_nms_in_other_dtypes(dtype):
    g = torch.Generator().manual_seed(17)
    for _ in range(5):
        boxes, scores, groups = random_nms_case(g)
        boxes, scores = boxes.to(dtype), scores.to(dtype)  # float16 and bfloat16 round scores into many ties
        for threshold in (0.3, 0.45, 0.6):
            assert torch.equal(_greedy_nms_all_groups(boxes, scores, groups, threshold),
                               textbook_per_group(boxes, scores, groups, threshold))


def test_fast_path_edge_cases():
    empty = _greedy_nms_all_groups(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5)
    assert empty.shape == (0,) and empty.dtype == torch.bool
    one = _greedy_nms_all_groups(torch.tensor([[0.1, 0.1, 0.2, 0.2]]), torch.tensor([0.4]), torch.tensor([3]), 0.5)
    assert one.tolist() == [True]
    # all boxes identical: one survivor per group, the best (the first one on equal scores)
    same = torch.tensor([[0.2, 0.2, 0.6, 0.6]]).repeat(9, 1)
    scores = torch.tensor([0.1, 0.5, 0.5, 0.2, 0.9, 0.3, 0.3, 0.3, 0.05])
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    assert _greedy_nms_all_groups(same, scores, groups, 0.5).nonzero().flatten().tolist() == [1, 4, 5, 8]
    # a chain: each box overlaps its neighbours only, so every other box survives
    chain = torch.tensor([[0.1 * i, 0.0, 0.1 * i + 0.25, 0.1] for i in range(9)])  # IoU 0.43 with the next
    chain_scores = torch.linspace(0.9, 0.1, 9)
    kept = _greedy_nms_all_groups(chain, chain_scores, torch.zeros(9, dtype=torch.long), 0.3)
    assert kept.nonzero().flatten().tolist() == [0, 2, 4, 6, 8]
    assert torch.equal(kept, as_mask(nms(chain, chain_scores, 0.3), 9))


@pytest.mark.parametrize("seed", range(20))
def test_nms_for_top_k_gives_the_top_k_of_full_batched_nms(seed):
    """postprocess runs NMS on each image's best candidates first, on more only if too few survive."""
    g = torch.Generator().manual_seed(3000 + seed)
    boxes, scores, labels = random_nms_case(g)
    images = torch.randint(0, 4, (len(boxes),), generator=g)
    groups = images * 1000 + labels
    for threshold in (0.0, 0.45, float(torch.rand(1, generator=g))):
        full = batched_nms(boxes, scores, groups, threshold)
        for top_k in (1, 3, 20, 200):
            part = _batched_nms_for_top_k(boxes, scores, groups, images, threshold, top_k)
            for i in range(4):
                assert torch.equal(part[images[part] == i][:top_k], full[images[full] == i][:top_k])


# ---------------------------------------------------------------- postprocess

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


def reference_postprocess(loc, conf, priors, score_threshold=0.01, iou_threshold=0.45, top_k=200,
                          candidates_per_class=NMS_TOP_K, class_scores="softmax"):
    """What torchvision's SSD.postprocess_detections does, one image and one class at a time
    (for class_scores="sigmoid": the same with a sigmoid of each class column)."""
    boxes = decode(loc, priors).clamp(0, 1)
    if class_scores == "softmax":
        scores = conf.softmax(-1)
    else:  # (the sigmoid of conf[..., 1:], not of conf: vectorised on other strides, it rounds differently)
        scores = torch.cat([torch.zeros_like(conf[..., :1]), conf[..., 1:].sigmoid()], dim=-1)
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


SETTINGS = [dict(), dict(iou_threshold=0.3, top_k=20), dict(score_threshold=0.2, candidates_per_class=50)]


@pytest.mark.parametrize("seed", range(12))
def test_postprocess_matches_torchvision_reference(seed):
    g = torch.Generator().manual_seed(seed)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, background_boost=[1.0, 3.0, 5.0][seed % 3])
    for kwargs in SETTINGS:
        assert_same_detections(postprocess(loc, conf, priors, **kwargs),
                               reference_postprocess(loc, conf, priors, **kwargs))


@pytest.mark.parametrize("seed", range(4))
def test_postprocess_matches_torchvision_ssd_postprocess_detections(seed):
    """torchvision's own SSD code (decoding pixel anchors with weights 10, 10, 5, 5: our variances 0.1, 0.2)."""
    g = torch.Generator().manual_seed(100 + seed)
    priors, size = small_priors(), 300
    loc, conf = fake_predictions(g, priors, background_boost=[1.0, 3.0][seed % 2])
    torchvision_ssd = SimpleNamespace(box_coder=torchvision_det_utils.BoxCoder(weights=(10.0, 10.0, 5.0, 5.0)),
                                      score_thresh=0.01, topk_candidates=NMS_TOP_K, nms_thresh=0.45,
                                      detections_per_img=200)
    anchors = [cxcywh_to_xyxy(priors) * size] * len(loc)
    theirs = TorchvisionSSD.postprocess_detections(torchvision_ssd, {"bbox_regression": loc, "cls_logits": conf},
                                                   anchors, [(size, size)] * len(loc))
    ours = postprocess(loc, conf, priors)
    for o, t in zip(ours, theirs):
        assert torch.equal(o["scores"], t["scores"])
        order_o, order_t = (torch.tensor(sorted(range(len(d["scores"])),
                                                key=lambda i: (-float(d["scores"][i]), int(d["labels"][i]))))
                            for d in (o, t))
        assert torch.equal(o["labels"][order_o], t["labels"][order_t])
        torch.testing.assert_close(o["boxes"][order_o] * size, t["boxes"][order_t], atol=1e-3, rtol=0)


def test_postprocess_when_few_candidates_survive_nms():
    """Every default box predicts (nearly) the same box: one survivor per class, out of hundreds."""
    g = torch.Generator().manual_seed(31)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, batch_size=2, background_boost=0.0)
    same_box = torch.tensor([[0.3, 0.2, 0.7, 0.9]]).expand(len(priors), 4)
    loc = encode(same_box, priors) + 0.01 * torch.randn(2, len(priors), 4, generator=g)
    for kwargs in SETTINGS:
        ours = postprocess(loc, conf, priors, **kwargs)
        assert all(len(d["scores"]) <= 4 for d in ours)
        assert_same_detections(ours, reference_postprocess(loc, conf, priors, **kwargs))


def test_postprocess_sigmoid_scores():
    g = torch.Generator().manual_seed(21)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, background_boost=0.0)
    conf[..., 1:] -= 4.0  # sigmoid models start near "probably nothing"
    for kwargs in SETTINGS:
        ours = postprocess(loc, conf, priors, class_scores="sigmoid", **kwargs)
        assert_same_detections(ours, reference_postprocess(loc, conf, priors, class_scores="sigmoid", **kwargs))
    # column 0 is unused: changing it changes nothing
    conf[..., 0] = torch.randn(conf.shape[:2], generator=g) * 10
    assert_same_detections(postprocess(loc, conf, priors, class_scores="sigmoid"),
                           reference_postprocess(loc, conf, priors, class_scores="sigmoid"))
    with pytest.raises(ValueError, match="class_scores must be 'softmax' or 'sigmoid', got 'softmx'"):
        postprocess(loc, conf, priors, class_scores="softmx")


@pytest.mark.parametrize("device", DEVICES)
def test_postprocess_shapes_labels_and_top_k(device):
    g = torch.Generator().manual_seed(0)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, batch_size=4, background_boost=0.0)
    detections = postprocess(loc.to(device), conf.to(device), priors.to(device), top_k=50)
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
        on_cpu = postprocess(loc, conf, priors, top_k=50)
        for d, c in zip(detections, on_cpu):
            assert torch.equal(d["labels"].cpu(), c["labels"])
            torch.testing.assert_close(d["boxes"].cpu(), c["boxes"])


def test_postprocess_empty_results():
    priors = small_priors()
    loc = torch.zeros(2, len(priors), 4)
    conf = torch.zeros(2, len(priors), 3)
    conf[..., 0] = 20.0  # background everywhere: nothing reaches 0.01
    conf[1, 5, 2] = 30.0  # except one confident box in the second image
    detections = postprocess(loc, conf, priors)
    empty = detections[0]
    assert empty["boxes"].shape == (0, 4) and empty["scores"].shape == (0,) and empty["labels"].shape == (0,)
    assert empty["boxes"].dtype == torch.float32 and empty["labels"].dtype == torch.int64
    assert detections[1]["labels"].tolist() == [2]
    assert all(len(d["scores"]) == 0 for d in postprocess(loc[:1], conf[:1], priors))


def test_postprocess_empty_batch():
    priors = small_priors()
    assert postprocess(torch.zeros(0, len(priors), 4), torch.zeros(0, len(priors), 3), priors) == []


def test_postprocess_drops_non_finite_predictions():
    """A NaN box used to come out as a NaN detection and to suppress every clean box of its class."""
    g = torch.Generator().manual_seed(8)
    priors = small_priors()
    loc, conf = fake_predictions(g, priors, batch_size=2, background_boost=1.0)
    best_of_class_1 = int(conf[0].softmax(-1)[:, 1].argmax())
    broken_loc, broken_conf = loc.clone(), conf.clone()
    broken_loc[0, best_of_class_1, 0] = math.nan
    broken_loc[1, :3, 2] = math.inf  # boxes of infinite width
    broken_loc[1, 3, 3] = 1e6  # exp overflows: infinite height
    broken_conf[1, 4, 2] = math.nan  # a NaN score (its softmax row is all NaN)
    # Expected: what those default boxes give when they predict background.
    clean_loc, clean_conf = loc.clone(), conf.clone()
    for image, prior in [(0, best_of_class_1), (1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]:
        clean_loc[image, prior] = 0.0
        clean_conf[image, prior] = torch.tensor([50.0, 0.0, 0.0, 0.0, 0.0])
    ours = postprocess(broken_loc, broken_conf, priors)
    for d in ours:
        assert torch.isfinite(d["boxes"]).all() and torch.isfinite(d["scores"]).all()
    assert (ours[0]["labels"] == 1).sum() > 1
    assert_same_detections(ours, reference_postprocess(clean_loc, clean_conf, priors))
    # The same for sigmoid scores, where a NaN score drops only its own (box, class) pair.
    ours = postprocess(broken_loc, broken_conf, priors, class_scores="sigmoid")
    clean_conf = conf.clone()
    for image, prior in [(0, best_of_class_1), (1, 0), (1, 1), (1, 2), (1, 3)]:
        clean_conf[image, prior, 1:] = -50.0
    clean_conf[1, 4, 2] = -50.0
    clean_loc[1, 4] = loc[1, 4]  # its box is fine
    assert_same_detections(ours, reference_postprocess(clean_loc, clean_conf, priors, class_scores="sigmoid"))


def test_postprocess_bad_shapes_and_types():
    priors = small_priors()
    loc, conf = torch.zeros(1, len(priors), 4), torch.zeros(1, len(priors), 3)
    with pytest.raises(ValueError, match="priors"):
        postprocess(loc, conf, priors[:-1])
    with pytest.raises(ValueError, match="conf_pred"):
        postprocess(loc, conf[:, :-1], priors)
    with pytest.raises(ValueError, match="conf_pred"):
        postprocess(loc, conf[..., :1], priors)
    with pytest.raises(ValueError, match="loc_pred"):
        postprocess(loc[0], conf, priors)
    with pytest.raises(TypeError, match="conf_pred must be a floating-point tensor, got torch.int64"):
        postprocess(loc, conf.long(), priors)
    with pytest.raises(TypeError, match="loc_pred must be a floating-point tensor"):
        postprocess(loc.int(), conf, priors)
    with pytest.raises(TypeError, match="loc_pred must be a torch.Tensor"):
        postprocess(loc.tolist(), conf, priors)
    with pytest.raises(ValueError, match="must be on one device"):  # (priors left on the CPU, say)
        postprocess(loc.to("meta"), conf.to("meta"), priors)


def test_postprocess_bad_arguments():
    priors = small_priors()
    loc, conf = torch.zeros(1, len(priors), 4), torch.zeros(1, len(priors), 3)
    for name in ("score_threshold", "iou_threshold"):
        for value in (math.nan, -0.01, 1.5, "0.5", None):
            with pytest.raises(ValueError, match=f"{name} must be a number in \\[0, 1\\], got"):
                postprocess(loc, conf, priors, **{name: value})
    for name in ("top_k", "candidates_per_class"):
        for value in (0, -3, 2.5, True, None):
            with pytest.raises(ValueError, match=f"{name} must be a positive int, got"):
                postprocess(loc, conf, priors, **{name: value})


def test_printed_functions_fit_one_screen():
    """Lesson 05 prints these: each fits a screen and opens, after its docstring, with one _check_ call."""
    for function in (nms, batched_nms, postprocess):
        source = inspect.getsource(function)
        assert len(source.splitlines()) <= 40, function.__name__
        body = ast.parse(source).body[0].body
        first_step = body[1].value  # body[0] is the docstring
        assert isinstance(first_step, ast.Call) and first_step.func.id.startswith("_check_"), function.__name__
