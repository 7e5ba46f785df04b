"""Tests of ssd_lite.model: output shapes, the order of predictions vs default boxes, state dicts, SSD300."""
import math

import pytest
import torch

from ssd_lite.model import SSD, build_model, small_ssd, ssd300_vgg16
from ssd_lite.priors import boxes_per_location, default_boxes, prior_scales, ssd300_default_boxes



def test_small_ssd_shapes_and_priors():
    torch.manual_seed(0)
    model = small_ssd(6, image_size=128)
    assert model.feature_map_sizes == (16, 8, 4, 2)
    expected = default_boxes((16, 8, 4, 2), prior_scales(4, 0.15, 0.75), [(2,)] * 4)
    assert torch.equal(model.priors, expected)
    assert model.priors.shape == (4 * (256 + 64 + 16 + 4), 4)
    loc, conf = model.eval()(torch.rand(2, 3, 128, 128))
    assert loc.shape == (2, len(model.priors), 4)
    assert conf.shape == (2, len(model.priors), 6)
    assert model.num_classes == 6 and model.image_size == 128


def test_priors_are_a_buffer_saved_and_moved():
    model = small_ssd(3, image_size=64)
    assert "priors" in dict(model.named_buffers())
    assert "priors" in model.state_dict()
    assert all(p is not model.priors for p in model.parameters())
    # .to() moves buffers; dtype conversion shows it without needing a GPU.
    assert model.to(torch.float64).priors.dtype == torch.float64


class _ConstantMaps(torch.nn.Module):
    """A fake backbone: one-channel maps whose value at (row i, column j) is a known code."""

    def __init__(self, sizes):
        super().__init__()
        self.sizes = sizes

    def forward(self, x):
        maps = []
        for k, f in enumerate(self.sizes):
            rows = torch.arange(f, dtype=torch.float32)[:, None].expand(f, f)
            cols = torch.arange(f, dtype=torch.float32)[None, :].expand(f, f)
            code = 1000 * k + 10 * rows + cols / 10  # unique per (map, row, column)
            maps.append(code[None, None].expand(x.shape[0], 1, f, f).clone())
        return maps


def test_prediction_order_matches_default_boxes():
    """Prediction i must come from the cell (map, row, column) and the box slot of default box i."""
    sizes, ratios = (4, 2, 1), ((2,), (2, 3), (2,))
    scales = prior_scales(3)
    model = SSD(_ConstantMaps(sizes), (1, 1, 1), num_classes=2, image_size=32, feature_map_sizes=sizes,
                scales=scales, aspect_ratios=ratios)
    # Make each head copy the centre pixel into every output channel, plus the channel index / 1000:
    # output (box a, coordinate c) = code(map, row, col) + (4a + c) / 1000.
    with torch.no_grad():
        for head in model.loc_heads:
            head.weight.zero_()
            head.weight[:, 0, 1, 1] = 1.0
            head.bias.copy_(torch.arange(head.out_channels) / 1000)
    loc, _ = model(torch.zeros(1, 3, 32, 32))
    loc = loc[0]
    i = 0
    for k, f in enumerate(sizes):
        for row in range(f):
            for col in range(f):
                for a in range(boxes_per_location(ratios[k])):
                    code = 1000 * k + 10 * row + col / 10
                    expected = code + (4 * a + torch.arange(4)) / 1000
                    assert torch.allclose(loc[i], expected, atol=1e-3), (k, row, col, a)
                    # ... and default box i is centred on that very cell.
                    centre = torch.tensor([(col + 0.5) / f, (row + 0.5) / f])
                    assert torch.allclose(model.priors[i, :2], centre)
                    i += 1
    assert i == len(model.priors)


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    model = small_ssd(4, image_size=64).eval()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    torch.manual_seed(1)
    other = small_ssd(4, image_size=64).eval()
    images = torch.rand(2, 3, 64, 64)
    assert not torch.allclose(model(images)[1], other(images)[1])
    other.load_state_dict(torch.load(path))
    for a, b in zip(model(images), other(images)):
        assert torch.equal(a, b)


def test_build_model_from_config():
    model = small_ssd(5, image_size=64, s_min=0.2, s_max=0.8, aspect_ratios=[(2, 3)] * 4)
    rebuilt = build_model(**model.config)
    assert torch.equal(rebuilt.priors, model.priors)
    assert rebuilt.num_classes == 5
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet")


def test_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        small_ssd(3, image_size=100)
    with pytest.raises(ValueError, match="background"):
        small_ssd(1)
    model = small_ssd(3, image_size=64)
    with pytest.raises(ValueError, match="64x64"):
        model(torch.rand(1, 3, 65, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 64, 64))


def test_ssd300_vgg16_8732_boxes():
    torch.manual_seed(0)
    model = ssd300_vgg16(num_classes=21).eval()
    assert model.priors.shape == (8732, 4)
    assert torch.equal(model.priors, ssd300_default_boxes())
    assert model.boxes_per_location == [4, 6, 6, 6, 4, 4]
    # L2-normalised conv4_3 with a learnable scale initialised to 20.
    assert torch.equal(model.features.conv4_3_norm.weight, torch.full((512,), 20.0))
    dilated = [m for m in model.features.modules() if isinstance(m, torch.nn.Conv2d) and m.dilation == (6, 6)]
    assert len(dilated) == 1 and dilated[0].out_channels == 1024
    with torch.no_grad():
        loc, conf = model(torch.rand(1, 3, 300, 300))
    assert loc.shape == (1, 8732, 4) and conf.shape == (1, 8732, 21)
    assert torch.isfinite(loc).all() and torch.isfinite(conf).all()


# ---------------------------------------------------------------- RetinaNet options: sigmoid scores, shared heads

EQUAL_WIDTHS = (8, 16, 32, 32, 32, 32)  # the last four (the feature maps) equally wide, as shared heads need


def test_sigmoid_scores_start_at_the_prior():
    torch.manual_seed(0)
    model = small_ssd(4, image_size=64, class_scores="sigmoid")
    assert model.class_scores == "sigmoid" and model.config["class_scores"] == "sigmoid"
    prior_bias = -math.log((1 - 0.01) / 0.01)  # sigmoid(prior_bias) = 0.01
    for head in model.conf_heads:
        torch.testing.assert_close(head.bias, torch.full_like(head.bias, prior_bias))
    torch.testing.assert_close(torch.sigmoid(model.conf_heads[0].bias[0]), torch.tensor(0.01))
    # The scores of a fresh model sit near the prior, far below 0.5.
    _, conf = model.eval()(torch.rand(2, 3, 64, 64))
    assert 0.003 < torch.sigmoid(conf).median() < 0.03
    # softmax models keep PyTorch's default (small, random) biases.
    default = small_ssd(4, image_size=64)
    assert default.class_scores == "softmax" and default.config["class_scores"] == "softmax"
    assert all(head.bias.abs().max() < 0.1 for head in default.conf_heads)


def test_shared_heads_are_one_set_of_weights():
    torch.manual_seed(0)
    shared = small_ssd(4, image_size=64, widths=EQUAL_WIDTHS, shared_heads=True)
    separate = small_ssd(4, image_size=64, widths=EQUAL_WIDTHS)
    assert shared.shared_heads and not separate.shared_heads
    for heads in (shared.loc_heads, shared.conf_heads):
        assert len(heads) == 4 and all(head is heads[0] for head in heads)
    names = [name for name, _ in shared.named_parameters() if "heads" in name]
    assert names == ["loc_heads.0.weight", "loc_heads.0.bias", "conf_heads.0.weight", "conf_heads.0.bias"]
    head_size = sum(p.numel() for p in separate.loc_heads[0].parameters()) + \
        sum(p.numel() for p in separate.conf_heads[0].parameters())
    num_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert num_params(separate) - num_params(shared) == 3 * head_size
    # One gradient, gathered from every map: a loss on the coarsest map's predictions alone reaches it.
    loc, conf = shared(torch.rand(2, 3, 64, 64))
    num_last = 2 * 2 * 4  # the 2x2 map, 4 boxes per cell
    (loc[:, -num_last:].sum() + conf[:, -num_last:].sum()).backward()
    assert shared.loc_heads[0].weight.grad.abs().sum() > 0


def test_options_keep_priors_and_output_shapes():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    reference = small_ssd(3, image_size=64, widths=EQUAL_WIDTHS).eval()
    for class_scores in ("softmax", "sigmoid"):
        for shared_heads in (False, True):
            model = small_ssd(3, image_size=64, widths=EQUAL_WIDTHS, class_scores=class_scores,
                              shared_heads=shared_heads).eval()
            assert torch.equal(model.priors, reference.priors)
            loc, conf = model(images)
            assert loc.shape == (2, len(model.priors), 4) and conf.shape == (2, len(model.priors), 3)


def test_options_rebuild_from_config(tmp_path):
    torch.manual_seed(0)
    model = small_ssd(5, image_size=64, widths=EQUAL_WIDTHS, class_scores="sigmoid", shared_heads=True).eval()
    assert model.config["shared_heads"] is True
    rebuilt = build_model(**model.config).eval()
    assert rebuilt.class_scores == "sigmoid" and rebuilt.shared_heads
    assert rebuilt.loc_heads[0] is rebuilt.loc_heads[3]
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    rebuilt.load_state_dict(torch.load(path))
    assert rebuilt.conf_heads[0] is rebuilt.conf_heads[3]  # loading keeps the heads shared
    images = torch.rand(1, 3, 64, 64)
    for a, b in zip(model(images), rebuilt(images)):
        assert torch.equal(a, b)
    # A config saved before these options existed rebuilds the SSD model it was.
    old_config = {k: v for k, v in model.config.items() if k not in ("class_scores", "shared_heads")}
    old = build_model(**old_config)
    assert old.class_scores == "softmax" and not old.shared_heads


def test_ssd300_options():
    model = ssd300_vgg16(num_classes=3, class_scores="sigmoid")
    assert model.config == dict(architecture="ssd300_vgg16", num_classes=3, class_scores="sigmoid",
                                shared_heads=False)
    assert build_model(**model.config).class_scores == "sigmoid"
    torch.testing.assert_close(model.conf_heads[5].bias, torch.full((4 * 3,), -math.log(99)))
    with pytest.raises(ValueError, match=r"same number of channels .* \(512, 1024, 512, 256, 256, 256\)"):
        ssd300_vgg16(shared_heads=True)


def test_option_errors():
    with pytest.raises(ValueError, match="class_scores must be 'softmax' or 'sigmoid'"):
        small_ssd(3, image_size=64, class_scores="softmx")
    with pytest.raises(ValueError, match=r"equally wide .* \(96, 128, 128, 128\): try widths=\(24, 48, 128,"):
        small_ssd(3, image_size=64, shared_heads=True)
    with pytest.raises(TypeError, match="shared_heads must be True or False"):
        small_ssd(3, image_size=64, widths=EQUAL_WIDTHS, shared_heads="yes")
    with pytest.raises(ValueError, match=r"boxes per location \(4, 6\)"):
        small_ssd(3, image_size=64, widths=EQUAL_WIDTHS, num_feature_maps=2, aspect_ratios=[(2,), (2, 3)],
                  shared_heads=True)
    with pytest.raises(ValueError, match="same number of channels"):
        SSD(_ConstantMaps((4, 2)), (1, 2), num_classes=2, image_size=32, feature_map_sizes=(4, 2),
            scales=prior_scales(2), aspect_ratios=((2,), (2,)), shared_heads=True)
