"""ssd_lite.loss against torch.nn.functional and a slow, obvious per-image reference."""
import pytest
import torch
import torch.nn.functional as F

from ssd_lite.loss import hard_negative_mining, multibox_loss, smooth_l1
from ssd_lite.matching import match
from ssd_lite.priors import default_boxes, prior_scales


# ---------------------------------------------------------------- smooth L1

@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 1.0, 1 / 9, 2.0])
@pytest.mark.parametrize("seed", range(5))
def test_smooth_l1_matches_torch_values_and_grads(beta, seed):
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(7, 5, generator=g)).requires_grad_()
    y = 3 * torch.randn(7, 5, generator=g)
    ours = smooth_l1(x, y, beta)
    ref = F.smooth_l1_loss(x, y, reduction="none", beta=beta)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-7)
    weights = torch.rand(7, 5, generator=g)  # a non-uniform upstream gradient
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), x)
    (grad_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    torch.testing.assert_close(grad_ours, grad_ref, rtol=1e-6, atol=1e-7)


def test_smooth_l1_known_values():
    d = torch.tensor([0.0, 0.5, 1.0, 3.0, -3.0])
    torch.testing.assert_close(smooth_l1(d, torch.zeros(5)), torch.tensor([0.0, 0.125, 0.5, 2.5, 2.5]))
    torch.testing.assert_close(smooth_l1(d, torch.zeros(5), beta=0), d.abs())


def test_smooth_l1_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        smooth_l1(torch.zeros(3, 4), torch.zeros(4))
    with pytest.raises(ValueError, match="beta"):
        smooth_l1(torch.zeros(3), torch.zeros(3), beta=-1)


# ---------------------------------------------------------------- hard negative mining

def random_labels(g, batch_size, num_priors, num_classes=5, positive_fraction=0.05):
    labels = torch.randint(1, num_classes, (batch_size, num_priors), generator=g)
    return labels * (torch.rand(batch_size, num_priors, generator=g) < positive_fraction)


@pytest.mark.parametrize("ratio", [3, 1, 2.5, 0])
@pytest.mark.parametrize("seed", range(20))
def test_mining_invariants(seed, ratio):
    g = torch.Generator().manual_seed(seed)
    labels = random_labels(g, 4, 200, positive_fraction=float(torch.rand(1, generator=g)) * 0.5)
    labels[1] = 0  # an image with no objects
    conf_loss = torch.rand(4, 200, generator=g)
    mined = hard_negative_mining(conf_loss, labels, ratio)
    assert mined.dtype == torch.bool and mined.shape == labels.shape
    assert not (mined & (labels > 0)).any(), "a positive was mined as a negative"
    for b in range(4):
        num_pos = int((labels[b] > 0).sum())
        negatives = labels[b] == 0
        expected = min(int(ratio * num_pos), int(negatives.sum()))
        assert int(mined[b].sum()) == expected
        if 0 < expected < int(negatives.sum()):
            # every mined negative is at least as hard as every negative left out
            assert conf_loss[b][mined[b]].min() >= conf_loss[b][negatives & ~mined[b]].max()
    assert not mined[1].any(), "an image without positives mines no negatives"


def test_mining_no_negatives_and_all_negatives():
    labels = torch.tensor([[1, 2, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0]])
    conf_loss = torch.tensor([[5.0, 4, 3, 2], [1, 2, 3, 4], [9, 1, 3, 2]])
    mined = hard_negative_mining(conf_loss, labels)
    assert mined.tolist() == [[False] * 4, [False] * 4, [False, True, True, True]]


def test_mining_ties_go_to_the_lower_index():
    labels = torch.tensor([[1, 0, 0, 0, 0, 0]])
    conf_loss = torch.tensor([[0.0, 1.0, 2.0, 1.0, 1.0, 1.0]])
    mined = hard_negative_mining(conf_loss, labels, neg_pos_ratio=3)
    assert mined.tolist() == [[False, True, True, True, False, False]]


def test_mining_carries_no_gradient_and_rejects_bad_input():
    conf_loss = torch.rand(2, 10, requires_grad=True)
    labels = torch.zeros(2, 10, dtype=torch.long)
    labels[:, 0] = 1
    assert not hard_negative_mining(conf_loss, labels).requires_grad
    with pytest.raises(ValueError, match="labels"):
        hard_negative_mining(conf_loss, labels[:, :5])
    with pytest.raises(ValueError, match="integer"):
        hard_negative_mining(conf_loss, labels.float())
    with pytest.raises(ValueError, match="conf_loss"):
        hard_negative_mining(conf_loss[0], labels[0])


# ---------------------------------------------------------------- multibox loss

def reference_multibox_loss(loc_pred, conf_pred, loc_targets, labels, neg_pos_ratio=3):
    """The slow, obvious version: one image at a time, sort the negatives, take the top ones."""
    loc_total, conf_total, num_pos_total = 0.0, 0.0, 0
    for b in range(labels.shape[0]):
        pos = labels[b] > 0
        num_pos = int(pos.sum())
        num_pos_total += num_pos
        loc_total = loc_total + F.smooth_l1_loss(loc_pred[b][pos], loc_targets[b][pos], reduction="sum")
        ce = F.cross_entropy(conf_pred[b], labels[b], reduction="none")
        neg_idx = torch.nonzero(~pos).flatten().tolist()
        ce_list = ce.detach().tolist()
        neg_idx.sort(key=lambda i: -ce_list[i])  # Python's sort is stable: ties keep index order
        hardest = neg_idx[: int(neg_pos_ratio * num_pos)]
        conf_total = conf_total + ce[pos].sum() + ce[hardest].sum()
    n = max(num_pos_total, 1)
    return loc_total / n, conf_total / n


@pytest.mark.parametrize("seed", range(10))
def test_multibox_loss_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    B, P, C = 3, 300, 6
    labels = random_labels(g, B, P, C, positive_fraction=0.08)
    if seed % 2:
        labels[0] = 0  # one image without objects
    loc_pred = torch.randn(B, P, 4, generator=g, dtype=torch.float64).requires_grad_()
    conf_pred = torch.randn(B, P, C, generator=g, dtype=torch.float64).requires_grad_()
    loc_targets = torch.randn(B, P, 4, generator=g, dtype=torch.float64) * (labels > 0)[..., None]
    loc, conf = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    ref_loc, ref_conf = reference_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    torch.testing.assert_close(loc, ref_loc)
    torch.testing.assert_close(conf, ref_conf)
    grads = torch.autograd.grad(loc + conf, (loc_pred, conf_pred))
    ref_grads = torch.autograd.grad(ref_loc + ref_conf, (loc_pred, conf_pred))
    for ours, ref in zip(grads, ref_grads):
        torch.testing.assert_close(ours, ref)


def test_multibox_loss_on_matched_targets():
    """End to end with real matching: a shapes-like image with two objects and one empty image."""
    maps, ratios = (8, 4, 2, 1), ((2,), (2, 3), (2, 3), (2,))
    priors = default_boxes(maps, prior_scales(len(maps)), ratios)
    gt = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.55, 0.3, 0.95, 0.9]])
    targets = [match(gt, torch.tensor([1, 2]), priors), match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), priors)]
    loc_targets = torch.stack([t[0] for t in targets])
    labels = torch.stack([t[1] for t in targets])
    g = torch.Generator().manual_seed(0)
    loc_pred = torch.randn(loc_targets.shape, generator=g)
    conf_pred = torch.randn(2, len(priors), 3, generator=g)
    loc, conf = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    ref_loc, ref_conf = reference_multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    torch.testing.assert_close(loc, ref_loc)
    torch.testing.assert_close(conf, ref_conf)
    # a perfect offset prediction leaves no localisation loss
    assert float(multibox_loss(loc_targets, conf_pred, loc_targets, labels)[0]) == 0.0


def test_no_positives_gives_zero_loss_and_finite_zero_grads():
    loc_pred = torch.randn(2, 50, 4, requires_grad=True)
    conf_pred = torch.randn(2, 50, 4, requires_grad=True)
    labels = torch.zeros(2, 50, dtype=torch.long)
    loc, conf = multibox_loss(loc_pred, conf_pred, torch.zeros(2, 50, 4), labels)
    assert float(loc.detach()) == 0.0 and float(conf.detach()) == 0.0
    (loc + conf).backward()
    for grad in (loc_pred.grad, conf_pred.grad):
        assert torch.isfinite(grad).all() and (grad == 0).all()


def test_normalised_by_number_of_positives():
    """Doubling the batch with a copy of itself leaves both losses unchanged (sums / N)."""
    g = torch.Generator().manual_seed(3)
    labels = random_labels(g, 2, 100, 4, 0.1)
    tensors = (torch.randn(2, 100, 4, generator=g), torch.randn(2, 100, 4, generator=g),
               torch.randn(2, 100, 4, generator=g))
    one = multibox_loss(tensors[0], tensors[1], tensors[2], labels)
    two = multibox_loss(*(torch.cat([t, t]) for t in tensors[:2]), torch.cat([tensors[2]] * 2), torch.cat([labels] * 2))
    torch.testing.assert_close(one, two)


def test_multibox_loss_bad_shapes():
    loc, conf, labels = torch.zeros(2, 10, 4), torch.zeros(2, 10, 3), torch.zeros(2, 10, dtype=torch.long)
    with pytest.raises(ValueError, match="loc_pred"):
        multibox_loss(loc[..., :3], conf, loc[..., :3], labels)
    with pytest.raises(ValueError, match="loc_targets"):
        multibox_loss(loc, conf, loc[:1], labels)
    with pytest.raises(ValueError, match="conf_pred"):
        multibox_loss(loc, conf[:, :5], loc, labels)
    with pytest.raises(ValueError, match="labels"):
        multibox_loss(loc, conf, loc, labels[:, :5])
    with pytest.raises(ValueError, match="number of classes"):
        multibox_loss(loc, conf, loc, labels + 3)


# ---------------------------------------------------------------- arguments that used to give NaN or mine nothing

@pytest.mark.parametrize("beta", [float("nan"), float("inf"), -1.0])
def test_smooth_l1_beta_must_be_finite_and_non_negative(beta):
    with pytest.raises(ValueError, match="beta"):
        smooth_l1(torch.zeros(3), torch.ones(3), beta=beta)


@pytest.mark.parametrize("ratio", [float("nan"), float("inf"), -1.0])
def test_neg_pos_ratio_must_be_finite_and_non_negative(ratio):
    labels = torch.zeros(2, 10, dtype=torch.long)
    labels[:, 0] = 1
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        hard_negative_mining(torch.rand(2, 10), labels, ratio)
    with pytest.raises(ValueError, match="neg_pos_ratio"):
        multibox_loss(torch.zeros(2, 10, 4), torch.zeros(2, 10, 3), torch.zeros(2, 10, 4), labels, ratio)


def test_a_huge_ratio_mines_every_negative():
    """ratio * positives must be capped before it becomes an integer: 1e30 does not fit in int64."""
    labels = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    mined = hard_negative_mining(torch.rand(2, 4), labels, neg_pos_ratio=1e30)
    assert mined.tolist() == [[False, True, True, True], [False] * 4]


# ---------------------------------------------------------------- dtypes users really have

@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.int8])
def test_any_integer_label_dtype_gives_the_same_loss(dtype):
    g = torch.Generator().manual_seed(0)
    labels = random_labels(g, 2, 100, 4, 0.1)
    loc_pred, conf_pred, loc_targets = (torch.randn(2, 100, 4, generator=g), torch.randn(2, 100, 4, generator=g),
                                        torch.randn(2, 100, 4, generator=g))
    expected = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
    torch.testing.assert_close(multibox_loss(loc_pred, conf_pred, loc_targets, labels.to(dtype)), expected)
    conf_loss = torch.rand(2, 100, generator=g)
    assert torch.equal(hard_negative_mining(conf_loss, labels.to(dtype)), hard_negative_mining(conf_loss, labels))


@pytest.mark.parametrize("convert", [lambda t: t.bool(), lambda t: t.float()], ids=["bool", "float"])
def test_bool_and_float_labels_are_rejected(convert):
    labels = torch.zeros(2, 10, dtype=torch.long)
    labels[:, 0] = 1
    with pytest.raises(ValueError, match="integer"):
        hard_negative_mining(torch.rand(2, 10), convert(labels))
    with pytest.raises(ValueError, match="integer"):
        multibox_loss(torch.zeros(2, 10, 4), torch.zeros(2, 10, 3), torch.zeros(2, 10, 4), convert(labels))


@pytest.mark.parametrize("which", range(4))
def test_multibox_loss_names_a_numpy_argument(which):
    arguments = [torch.zeros(2, 10, 4), torch.zeros(2, 10, 3), torch.zeros(2, 10, 4),
                 torch.zeros(2, 10, dtype=torch.long)]
    names = ["loc_pred", "conf_pred", "loc_targets", "labels"]
    arguments[which] = arguments[which].numpy()
    with pytest.raises(TypeError, match=rf"{names[which]} must be a torch.Tensor.*ndarray.*torch.as_tensor"):
        multibox_loss(*arguments)


def test_smooth_l1_and_mining_name_a_numpy_argument():
    with pytest.raises(TypeError, match=r"input must be a torch.Tensor.*ndarray.*torch.as_tensor"):
        smooth_l1(torch.zeros(3).numpy(), torch.zeros(3))
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor.*ndarray"):
        smooth_l1(torch.zeros(3), torch.zeros(3).numpy())
    with pytest.raises(TypeError, match=r"conf_loss must be a torch.Tensor.*ndarray"):
        hard_negative_mining(torch.zeros(2, 3).numpy(), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"labels must be a torch.Tensor.*ndarray"):
        hard_negative_mining(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long).numpy())
