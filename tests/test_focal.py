"""The focal loss (Lin et al. 2017) in ssd_lite.loss, against torchvision.ops.sigmoid_focal_loss and by hand."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as torchvision_focal_loss

from ssd_lite.loss import focal_multibox_loss, sigmoid_focal_loss
from ssd_lite.matching import match
from ssd_lite.priors import default_boxes, prior_scales


# ---------------------------------------------------------------- sigmoid_focal_loss

SHAPES = [(7,), (3, 5), (2, 4, 6)]
ALPHAS = [0.25, 0.5, 0.0, 1.0, -1.0]


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_sigmoid_focal_loss_matches_torchvision_values_and_grads(gamma, reduction):
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        for shape in SHAPES:
            for alpha in ALPHAS:
                for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
                    logits = (4 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
                    targets = (torch.rand(shape, generator=g) < 0.3).to(dtype)
                    x_ours = logits.clone().requires_grad_()
                    x_ref = logits.clone().requires_grad_()
                    ours = sigmoid_focal_loss(x_ours, targets, alpha, gamma, reduction)
                    ref = torchvision_focal_loss(x_ref, targets, alpha, gamma, reduction)
                    assert ours.shape == ref.shape
                    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
                    upstream = torch.rand(ours.shape, generator=g).to(dtype)  # a non-uniform gradient
                    (grad_ours,) = torch.autograd.grad((ours * upstream).sum(), x_ours)
                    (grad_ref,) = torch.autograd.grad((ref * upstream).sum(), x_ref)
                    torch.testing.assert_close(grad_ours, grad_ref, rtol=tol, atol=tol)


def test_sigmoid_focal_loss_soft_targets_match_torchvision():
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(4, 9, generator=g, dtype=torch.float64)
    targets = torch.rand(4, 9, generator=g, dtype=torch.float64)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, 0.3, 1.5),
                               torchvision_focal_loss(logits, targets, 0.3, 1.5))


@pytest.mark.parametrize("alpha", [0.25, 0.9, -1.0])
def test_gamma_zero_is_alpha_weighted_cross_entropy(alpha):
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(6, 8, generator=g)
    targets = (torch.rand(6, 8, generator=g) < 0.5).float()
    alpha_t = alpha * targets + (1 - alpha) * (1 - targets) if alpha >= 0 else torch.ones_like(targets)
    expected = F.binary_cross_entropy_with_logits(logits, targets, weight=alpha_t, reduction="none")
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha, gamma=0.0), expected)


def test_any_negative_alpha_turns_the_weighting_off():
    g = torch.Generator().manual_seed(2)
    logits, targets = torch.randn(20, generator=g), (torch.rand(20, generator=g) < 0.5).float()
    unweighted = sigmoid_focal_loss(logits, targets, alpha=-1.0)
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=-0.5), unweighted)
    # ... and alpha = 0.5 is the same up to the factor 0.5.
    torch.testing.assert_close(sigmoid_focal_loss(logits, targets, alpha=0.5), 0.5 * unweighted)


def test_focal_loss_known_values():
    # x = 0: p = 0.5 for both targets, so FL = alpha_t * 0.5^gamma * log 2.
    x, t = torch.zeros(2), torch.tensor([1.0, 0.0])
    expected = torch.tensor([0.25, 0.75]) * 0.25 * math.log(2)
    torch.testing.assert_close(sigmoid_focal_loss(x, t), expected)
    # An easy negative (p = 0.01) costs 10^4 times less than with gamma = 0: (1 - p_t)^2 = 1e-4.
    easy = torch.tensor([-math.log(99)])
    ratio = sigmoid_focal_loss(easy, torch.zeros(1)) / sigmoid_focal_loss(easy, torch.zeros(1), gamma=0.0)
    torch.testing.assert_close(ratio, torch.tensor([1e-4]))


@pytest.mark.parametrize("gamma", [0.0, 0.2, 0.5, 1.0, 2.0])
def test_saturated_logits_give_finite_accurate_gradients(gamma):
    """torchvision's formula computes 1 - p_t as 1 - sigmoid(x), which rounds to 0 for confident boxes;
    with gamma < 1 the gradient then becomes NaN. Ours must stay finite and agree with float64."""
    logits = torch.tensor([-200.0, -30.0, -20.0, 20.0, 30.0, 200.0, 5.0, -5.0])
    targets = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0])
    grads = []
    for dtype in (torch.float32, torch.float64):
        x = logits.to(dtype).requires_grad_()
        loss = sigmoid_focal_loss(x, targets.to(dtype), gamma=gamma)
        assert torch.isfinite(loss).all()
        (grad,) = torch.autograd.grad(loss.sum(), x)
        assert torch.isfinite(grad).all()
        grads.append(grad)
    # atol: float32's binary_cross_entropy_with_logits itself rounds sigmoid(20) - 1 (-2e-9) to 0.
    torch.testing.assert_close(grads[0], grads[1].float(), rtol=1e-4, atol=1e-8)


def test_sigmoid_focal_loss_bad_input():
    x = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_focal_loss(x, torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        sigmoid_focal_loss(x, torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="tensors"):
        sigmoid_focal_loss(x, [[0.0] * 4] * 3)
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(x, x, gamma=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(x, x, alpha=1.5)


# ---------------------------------------------------------------- focal_multibox_loss

def _random_case(seed, batch_size=3, num_priors=40, num_classes=5, positive_fraction=0.2):
    g = torch.Generator().manual_seed(seed)
    loc_pred = torch.randn(batch_size, num_priors, 4, generator=g)
    conf_pred = 3 * torch.randn(batch_size, num_priors, num_classes, generator=g)
    loc_targets = torch.randn(batch_size, num_priors, 4, generator=g)
    labels = torch.randint(1, num_classes, (batch_size, num_priors), generator=g)
    labels[torch.rand(batch_size, num_priors, generator=g) > positive_fraction] = 0
    return loc_pred, conf_pred, loc_targets, labels


def _torchvision_reference(loc_pred, conf_pred, loc_targets, labels, alpha=0.25, gamma=2.0):
    positives = labels > 0
    n = max(int(positives.sum()), 1)
    loc = F.smooth_l1_loss(loc_pred[positives], loc_targets[positives], reduction="sum") / n
    one_hot = F.one_hot(labels, conf_pred.shape[-1]).float()
    conf = torchvision_focal_loss(conf_pred[..., 1:], one_hot[..., 1:], alpha, gamma, reduction="sum") / n
    return loc, conf


def test_focal_multibox_loss_by_hand():
    # One image, two default boxes, C = 3 (background + 2 classes).
    # Box 0 is background; box 1 holds a class-2 object.
    conf_pred = torch.tensor([[[9.0, 0.0, -2.0],      # column 0 is unused: 9.0 must not matter
                               [0.0, 1.0, 3.0]]])
    labels = torch.tensor([[0, 2]])
    loc_pred = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.5, -2.0, 0.0, 0.0]]])
    loc_targets = torch.zeros(1, 2, 4)

    def focal(x, target, alpha=0.25, gamma=2.0):
        p = 1 / (1 + math.exp(-x))
        p_t = p if target == 1 else 1 - p
        alpha_t = alpha if target == 1 else 1 - alpha
        return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)

    # Box 0: both classes off. Box 1: class 1 off, class 2 on. N = 1 positive.
    expected_conf = focal(0.0, 0) + focal(-2.0, 0) + focal(1.0, 0) + focal(3.0, 1)
    # Smooth L1 of box 1 only: 0.5 * 0.5^2 + (2 - 0.5) = 0.125 + 1.5.
    expected_loc = 1.625
    loc_loss, conf_loss = focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    assert loc_loss.item() == pytest.approx(expected_loc, rel=1e-6)
    assert conf_loss.item() == pytest.approx(expected_conf, rel=1e-6)


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (0.5, 0.0), (-1.0, 1.0), (0.75, 5.0)])
@pytest.mark.parametrize("seed", range(4))
def test_focal_multibox_loss_matches_torchvision(seed, alpha, gamma):
    loc_pred, conf_pred, loc_targets, labels = _random_case(seed)
    ours_inputs = [loc_pred.clone().requires_grad_(), conf_pred.clone().requires_grad_()]
    ref_inputs = [loc_pred.clone().requires_grad_(), conf_pred.clone().requires_grad_()]
    ours = focal_multibox_loss(ours_inputs[0], ours_inputs[1], loc_targets, labels, alpha, gamma)
    ref = _torchvision_reference(ref_inputs[0], ref_inputs[1], loc_targets, labels, alpha, gamma)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)
    for a, b in zip(torch.autograd.grad(sum(ours), ours_inputs), torch.autograd.grad(sum(ref), ref_inputs)):
        torch.testing.assert_close(a, b)


def test_background_column_is_ignored():
    loc_pred, conf_pred, loc_targets, labels = _random_case(5)
    conf_pred.requires_grad_()
    _, conf_loss = focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    (grad,) = torch.autograd.grad(conf_loss, conf_pred)
    assert torch.equal(grad[..., 0], torch.zeros_like(grad[..., 0]))
    changed = conf_pred.detach().clone()
    changed[..., 0] = 100.0
    assert torch.equal(focal_multibox_loss(loc_pred, changed, loc_targets, labels)[1], conf_loss)


def test_no_positives_gives_finite_loss_and_gradients():
    loc_pred, conf_pred, loc_targets, _ = _random_case(6)
    labels = torch.zeros(loc_pred.shape[:2], dtype=torch.long)
    loc_pred.requires_grad_()
    conf_pred.requires_grad_()
    loc_loss, conf_loss = focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    assert loc_loss.item() == 0.0
    # Unlike mining, every box still counts: the conf loss is the background boxes' loss, divided by 1.
    assert torch.isfinite(conf_loss) and conf_loss.item() > 0
    torch.testing.assert_close(conf_loss, torchvision_focal_loss(conf_pred[..., 1:], torch.zeros_like(
        conf_pred[..., 1:]), reduction="sum"))
    loc_grad, conf_grad = torch.autograd.grad(loc_loss + conf_loss, [loc_pred, conf_pred])
    assert torch.equal(loc_grad, torch.zeros_like(loc_grad))
    assert torch.isfinite(conf_grad).all()


def test_image_without_objects_in_a_batch():
    """An empty image (every prior matched to background) adds its boxes' loss and no positive to N."""
    torch.manual_seed(0)
    priors = default_boxes((4, 2), prior_scales(2), [(2,), (2,)])
    gt_boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.5, 0.4, 0.9, 0.9]])
    with_objects = match(gt_boxes, torch.tensor([1, 2]), priors)
    without_objects = match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), priors)
    assert int((without_objects[1] > 0).sum()) == 0
    loc_targets = torch.stack([with_objects[0], without_objects[0]])
    labels = torch.stack([with_objects[1], without_objects[1]])
    num_positives = int((labels > 0).sum())
    loc_pred, conf_pred = torch.randn(2, len(priors), 4), torch.randn(2, len(priors), 3)

    loc_loss, conf_loss = focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    loc_a, conf_a = focal_multibox_loss(loc_pred[:1], conf_pred[:1], loc_targets[:1], labels[:1])
    loc_b, conf_b = focal_multibox_loss(loc_pred[1:], conf_pred[1:], loc_targets[1:], labels[1:])
    assert loc_b.item() == 0.0 and conf_b.item() > 0
    # The batch's sums are the images' sums; N counts the positives of the first image only.
    torch.testing.assert_close(loc_loss, loc_a)
    torch.testing.assert_close(conf_loss * num_positives, conf_a * num_positives + conf_b)
    for a, b in zip((loc_loss, conf_loss), _torchvision_reference(loc_pred, conf_pred, loc_targets, labels)):
        torch.testing.assert_close(a, b)


def test_focal_multibox_loss_bad_input():
    loc_pred, conf_pred, loc_targets, labels = _random_case(7, batch_size=2, num_priors=10, num_classes=4)
    with pytest.raises(ValueError, match=r"labels must be in 0..3"):
        focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels.clone().fill_(4))
    with pytest.raises(ValueError, match=r"labels must be in 0..3"):
        focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels.clone().fill_(-1))
    with pytest.raises(ValueError, match="integer"):
        focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(B, P\)"):
        focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels[:1])
    with pytest.raises(ValueError, match=r"loc_pred must have shape \(B, P, 4\)"):
        focal_multibox_loss(loc_pred[..., :3], conf_pred, loc_targets, labels)
    with pytest.raises(ValueError, match="loc_targets"):
        focal_multibox_loss(loc_pred, conf_pred, loc_targets[:, :5], labels)
    with pytest.raises(ValueError, match="C >= 2"):
        focal_multibox_loss(loc_pred, conf_pred[..., :1], loc_targets, labels.clone().fill_(0))
    with pytest.raises(ValueError, match="conf_pred"):
        focal_multibox_loss(loc_pred, conf_pred[:, :5], loc_targets, labels)
    with pytest.raises(TypeError, match="labels must be a tensor"):
        focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels.tolist())


def test_focal_objective_accepts_any_integer_labels():
    """Labels as users have them (int32 from numpy, say) give the same loss as int64."""
    generator = torch.Generator().manual_seed(3)
    loc_pred, loc_targets = torch.randn(2, 10, 4, generator=generator), torch.randn(2, 10, 4, generator=generator)
    conf_pred = torch.randn(2, 10, 4, generator=generator)
    labels = torch.randint(0, 4, (2, 10), generator=generator)
    expected = focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        got = focal_multibox_loss(loc_pred, conf_pred, loc_targets, labels.to(dtype))
        assert all(torch.equal(a, b) for a, b in zip(expected, got))


@pytest.mark.parametrize("alpha, gamma", [(float("nan"), 2.0), (0.25, float("nan")), (0.25, float("inf"))])
def test_focal_loss_refuses_non_finite_settings(alpha, gamma):
    with pytest.raises(ValueError, match="alpha|gamma"):
        sigmoid_focal_loss(torch.zeros(3), torch.ones(3), alpha=alpha, gamma=gamma)


# ---------------------------------------------------------------- the command line: --loss focal end to end

def test_train_with_focal_loss_then_detect_and_evaluate_need_nothing_new(tmp_path, capsys):
    """`python -m ssd_lite.train --loss focal` saves a sigmoid model; detect and evaluate read the choice
    from the checkpoint and score with sigmoids, not with a softmax over the columns."""
    from ssd_lite import cli, detect, evaluate, train
    from ssd_lite.checkpoint import read_checkpoint
    from ssd_lite.data import load_image

    def run(program, *args):
        return cli.run(program.main, [str(a) for a in args], prog=program.__name__)

    out = tmp_path / "focal.pt"
    assert run(train, "--loss", "focal", "--num-images", "16", "--image-size", "64", "--batch-size", "4",
               "--steps", "3", "--workers", "0", "--no-progress", "--out", out) == 0
    saved = read_checkpoint(out)
    assert saved["loss"] == "focal" and saved["model_config"]["class_scores"] == "sigmoid"
    model, _ = detect.load_checkpoint(out)
    assert model.class_scores == "sigmoid"

    photos = Path(__file__).resolve().parents[1] / "data" / "photos" / "JPEGImages"
    first = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})[0]
    images = tmp_path / "images"
    images.mkdir()
    (images / first.name).write_bytes(first.read_bytes())
    detections = tmp_path / "detections.json"
    assert run(detect, "--checkpoint", out, "--images", images, "--out", detections, "--score-threshold", "0",
               "--top-k", "5", "--no-progress") == 0
    records = json.loads(detections.read_text())
    assert len(records) == 5 and all(0 <= r["score"] <= 1 for r in records)
    # With a score threshold of 0 the best candidate always survives NMS: its score is the largest sigmoid
    # of a class column (a softmax over the columns would give another number).
    with torch.no_grad():
        _, conf = model.eval()(detect._as_input_batch([load_image(first)], model.image_size))
    assert max(r["score"] for r in records) == pytest.approx(float(conf[0, :, 1:].sigmoid().max()), abs=1e-4)

    capsys.readouterr()
    assert run(evaluate, "--checkpoint", out, "--num-images", "4", "--batch-size", "2") == 0
    assert "images: 4," in capsys.readouterr().out
