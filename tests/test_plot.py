"""The drawing helpers run headless, draw one patch per box, accept empty inputs and reject bad shapes."""
import matplotlib

matplotlib.use("Agg")  # no display needed; must come before pyplot is imported

import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

from ssd_lite import plot
from ssd_lite.boxes import cxcywh_to_xyxy
from ssd_lite.matching import match
from ssd_lite.priors import default_boxes, prior_scales


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def make_image(height=60, width=80):
    torch.manual_seed(0)
    return torch.rand(3, height, width)


def _as_seen_with_deuteranopia(colour):
    """The colour as a reader without green cones sees it (Machado et al. 2009, severity 1.0), linear RGB."""
    import matplotlib.colors as mcolors
    srgb = torch.tensor(mcolors.to_rgb(colour), dtype=torch.float64)
    linear = torch.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    machado = torch.tensor([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                            [-0.011820, 0.042940, 0.968881]], dtype=torch.float64)
    return (machado @ linear).clamp(0, 1)


# The colours that share a figure somewhere in the course, and must be told apart there.
SEEN_TOGETHER = [("GT_COLOR", "POSITIVE_COLOR"), ("GT_COLOR", "NEGATIVE_COLOR"), ("POSITIVE_COLOR", "NEGATIVE_COLOR"),
                 ("GT_COLOR", "DETECTION_COLOR"), ("GT_COLOR", "PRIOR_COLOR")]


@pytest.mark.parametrize("first, second", SEEN_TOGETHER)
def test_colours_stay_apart_for_colour_blind_readers(first, second):
    """No red-green pair: colours seen together stay apart when simulated for deuteranopia."""
    a, b = (_as_seen_with_deuteranopia(getattr(plot, name)) for name in (first, second))
    # limegreen and red, the old pair, come out 0.22 apart; orange and limegreen 0.20.
    assert float((a - b).norm()) > 0.4, f"{first} and {second} look alike to a deuteranope"


def test_boxes_have_a_dark_outline_and_negatives_are_dashed():
    ax = plot.draw_boxes(make_image(), [[0.1, 0.1, 0.5, 0.5]])
    assert ax.patches[0].get_path_effects()  # the outline that keeps a box visible on any photo
    priors = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    ax = plot.draw_matches(make_image(), torch.tensor([[0.2, 0.2, 0.4, 0.4]]), priors,
                           labels=torch.tensor([1, 0]), negatives=torch.tensor([False, True]))
    negative = [p for p in ax.patches if p.get_edgecolor()[:3] == pytest.approx(
        __import__("matplotlib.colors").colors.to_rgb(plot.NEGATIVE_COLOR))]
    assert negative and negative[0].get_linestyle() == "--"


def test_show_image_tensor_and_pil():
    ax = plot.show_image(make_image(), title="tensor")
    assert ax.images[-1].get_array().shape == (60, 80, 3)
    assert ax.get_title() == "tensor"
    pil = Image.new("RGB", (50, 40), color=(10, 20, 30))
    ax = plot.show_image(pil)
    assert ax.images[-1].get_array().shape == (40, 50, 3)


def test_show_image_rejects_batches_and_other_types():
    with pytest.raises(ValueError, match="3, H, W"):
        plot.show_image(torch.rand(2, 3, 10, 10))
    with pytest.raises(ValueError, match="PIL"):
        plot.show_image([1, 2, 3])


def test_draw_boxes_in_pixels_with_captions():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 1.0, 1.0]])
    ax = plot.draw_boxes(make_image(), boxes, labels=torch.tensor([1, 2]),
                         class_names=("background", "circle", "square"), scores=torch.tensor([0.9, 0.5]),
                         title="two boxes")
    assert len(ax.patches) == 2
    second = ax.patches[1]
    assert second.get_xy() == pytest.approx((20.0, 30.0))  # 0.25 * 80 wide, 0.5 * 60 high
    assert second.get_width() == pytest.approx(60.0)
    assert second.get_height() == pytest.approx(30.0)
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["circle 0.90", "square 0.50"]


def test_draw_boxes_on_existing_axes_and_cxcywh():
    ax = plot.show_image(make_image())
    plot.draw_boxes(ax, torch.tensor([[0.5, 0.5, 0.2, 0.4]]), box_format="cxcywh")
    assert len(ax.patches) == 1
    assert ax.patches[0].get_xy() == pytest.approx((0.4 * 80, 0.3 * 60))


def test_draw_boxes_accepts_empty():
    ax = plot.draw_boxes(make_image(), torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    assert len(ax.patches) == 0


@pytest.mark.parametrize("boxes", [torch.zeros(3), torch.zeros(2, 5), torch.zeros(2, 2, 4)])
def test_draw_boxes_rejects_bad_shapes(boxes):
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        plot.draw_boxes(make_image(), boxes)


def test_draw_boxes_rejects_mismatched_labels_and_axes_without_image():
    with pytest.raises(ValueError, match="2 labels for 1 boxes"):
        plot.draw_boxes(make_image(), torch.tensor([[0.1, 0.1, 0.5, 0.5]]), labels=[1, 2])
    with pytest.raises(ValueError, match="out of range"):
        plot.draw_boxes(make_image(), torch.tensor([[0.1, 0.1, 0.5, 0.5]]), labels=[3],
                        class_names=("background", "a"))
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="no image"):
        plot.draw_boxes(ax, torch.tensor([[0.1, 0.1, 0.5, 0.5]]))


@pytest.mark.parametrize("ratios", [(2,), (2, 3)])
def test_draw_cell_default_boxes(ratios):
    ax = plot.draw_cell_default_boxes(make_image(), 5, 0.3, 0.5, ratios, cell=(1, 3))
    assert len(ax.patches) == 1 + 2 + 2 * len(ratios)  # shaded cell + one rectangle per default box
    cell_patch = ax.patches[0]
    assert cell_patch.get_xy() == pytest.approx((3 * 16.0, 1 * 12.0))  # a cell is 80/5 by 60/5 pixels
    with pytest.raises(ValueError, match="outside"):
        plot.draw_cell_default_boxes(make_image(), 5, 0.3, 0.5, ratios, cell=(5, 0))


def test_draw_matches_counts_gt_positives_negatives():
    priors = default_boxes((4, 2), prior_scales(2, 0.3, 0.7), ((2,), (2,)))
    gt_boxes = torch.tensor([[0.1, 0.1, 0.5, 0.6], [0.55, 0.4, 0.95, 0.9]])
    _, labels = match(gt_boxes, torch.tensor([1, 2]), priors)
    negatives = torch.zeros(len(priors), dtype=torch.bool)
    negatives[(labels == 0).nonzero()[:5, 0]] = True
    ax = plot.draw_matches(make_image(), gt_boxes, priors, labels, negatives=negatives,
                           gt_labels=torch.tensor([1, 2]), class_names=("background", "a", "b"))
    num_positives = int((labels > 0).sum())
    assert num_positives >= 2  # every object gets at least its best prior
    assert len(ax.patches) == 5 + num_positives + 2
    assert [p.get_edgecolor() for p in ax.patches[-2:]] == [matplotlib.colors.to_rgba(plot.GT_COLOR)] * 2


def test_draw_matches_no_objects_and_bad_inputs():
    priors = default_boxes((2,), prior_scales(1), ((2,),))
    ax = plot.draw_matches(make_image(), torch.zeros(0, 4), priors, torch.zeros(len(priors), dtype=torch.long))
    assert len(ax.patches) == 0
    with pytest.raises(ValueError, match="one entry per prior"):
        plot.draw_matches(make_image(), torch.zeros(0, 4), priors, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="bool mask"):
        plot.draw_matches(make_image(), torch.zeros(0, 4), priors, torch.zeros(len(priors), dtype=torch.long),
                          negatives=torch.zeros(len(priors)))


def test_draw_iou_pair():
    ax = plot.draw_iou_pair([0.0, 0.0, 0.5, 0.5], [0.25, 0.25, 0.75, 0.75])
    assert len(ax.patches) == 3
    assert ax.get_title() == "IoU = 0.14"  # 1/16 / (1/4 + 1/4 - 1/16) = 1/7
    ax = plot.draw_iou_pair([0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9])
    assert len(ax.patches) == 2 and ax.get_title() == "IoU = 0.00"


def test_subplots_and_dataset_grid():
    fig, axes = plot.subplots(5, ncols=3)
    assert len(axes) == 5 and len(fig.axes) == 6

    class TwoImages:
        class_names = ("background", "thing")

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return make_image(), {"boxes": torch.tensor([[0.1, 0.1, 0.4, 0.4]] * i).reshape(-1, 4),
                                  "labels": torch.ones(i, dtype=torch.long)}

    fig, axes = plot.draw_dataset_grid(TwoImages(), [0, 1])
    assert [len(ax.patches) for ax in axes] == [0, 1]
    assert axes[1].texts[0].get_text() == "thing"


def test_show_source_displays_code(capsys):
    plot.show_source(cxcywh_to_xyxy)
    assert "def cxcywh_to_xyxy" in capsys.readouterr().out


def test_draw_prior_heatmaps_takes_max_per_cell():
    sizes, per_location = (3, 1), (4, 6)
    values = torch.zeros(3 * 3 * 4 + 6)
    values[(1 * 3 + 2) * 4 + 3] = 0.7  # map 0, cell (1, 2), its last box
    axes = plot.draw_prior_heatmaps(values, sizes, per_location, title="best IoU ")
    assert len(axes) == 2 and axes[0].get_title() == "best IoU 3x3"
    shown = axes[0].images[0].get_array()
    assert shown.shape == (3, 3) and shown[1, 2] == pytest.approx(0.7) and shown.sum() == pytest.approx(0.7)
    with pytest.raises(ValueError, match="hold 42 default boxes but got 41"):
        plot.draw_prior_heatmaps(values[:-1], sizes, per_location)


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_draw_architecture_small_model_shows_every_map_head_and_reshape():
    from ssd_lite.model import default_model
    torch.manual_seed(0)
    model = default_model(6)
    ax = plot.draw_architecture(model)
    # input + 6 backbone stages + (map, head, reshape) for each of 4 maps + the concatenation
    assert len(ax.patches) == 1 + 6 + 3 * 4 + 1
    texts = "\n".join(_texts(ax))
    for expected in ["96×96×16", "24×24×64", "3×3×96", "map 1: 24×24\nk = 6 boxes per cell",
                     "3×3 conv to (C+4)k = 60\n24 offsets + 36 scores",
                     "(B, 24, 24, 24) → (B, 3456, 4)\n(B, 36, 24, 24) → (B, 3456, 6)",
                     "(B, 4590, 4)", "(B, 4590, 6)", "BatchNorm"]:
        assert expected in texts, expected
    assert "4590 default boxes" in ax.get_title()


def test_draw_architecture_sizes_are_those_of_a_real_forward_pass():
    """The traced shapes (on the meta device) equal the feature maps a real forward pass returns."""
    from ssd_lite.model import default_model
    torch.manual_seed(0)
    model = default_model(6).eval()
    with torch.no_grad():
        maps = model.features(torch.rand(1, 3, model.image_size, model.image_size))
    texts = _texts(plot.draw_architecture(model))
    for fmap, loc_head in zip(maps, model.loc_heads):
        channels, f, _ = fmap.shape[1:]
        assert f"{f}×{f}×{channels}" in texts
        boxes = loc_head(fmap).shape[1] // 4
        assert any(t.startswith(f"(B, {4 * boxes}, {f}, {f}) → (B, {f * f * boxes}, 4)") for t in texts)


def test_draw_architecture_ssd300_names_the_paper_layers_and_leaves_the_model_unchanged():
    from ssd_lite.model import ssd300_vgg16
    torch.manual_seed(0)
    model = ssd300_vgg16(21)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    ax = plot.draw_architecture(model)
    assert len(ax.patches) == 1 + 10 + 3 * 6 + 1
    texts = "\n".join(_texts(ax))
    for expected in ["conv4_3: 38×38\nk = 4 boxes per cell", "conv6, conv7 (were fc6, fc7)\npool3×3/1 · conv3×3 "
                     "dilation 6 · conv1×1", "19×19×1024", "conv11_2: 1×1",
                     "pool2×2/2 ceil · 3× conv3×3 · L2Norm", "(B, 126, 19, 19) → (B, 2166, 21)", "(B, 8732, 21)"]:
        assert expected in texts, expected
    assert "ReLU" in texts and "BatchNorm" not in texts
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert not any(module._forward_hooks for module in model.modules())


def test_draw_architecture_shared_heads_and_bad_inputs():
    from ssd_lite.model import default_model, small_ssd
    model = small_ssd(6, widths=(24, 48, 128, 128, 128, 128), shared_heads=True)
    ax = plot.draw_architecture(model, stage_names=list("abcdef"))
    assert "head: shared by all maps" in _texts(ax)
    assert any(t.startswith("c\n") for t in _texts(ax))
    with pytest.raises(TypeError, match="needs an SSD model"):
        plot.draw_architecture(torch.nn.Conv2d(3, 3, 3))
    with pytest.raises(ValueError, match="6 backbone stages and 4 feature maps, got 2 stage names"):
        plot.draw_architecture(default_model(6), stage_names=["a", "b"])


def test_show_diagram_stores_a_few_colour_png_and_closes_the_figure(capsys):
    import io as _io

    from PIL import Image as PILImage
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["a", "b"], [1, 2], color=plot.POSITIVE_COLOR)
    ax.set_title("two bars")
    png = plot._palette_png(fig, colours=8)
    image = PILImage.open(_io.BytesIO(png))
    assert image.mode == "P" and len(image.getcolors()) <= 8
    plot.show_diagram(fig)
    assert not plt.fignum_exists(fig.number)
    assert "Image" in capsys.readouterr().out  # outside a notebook, display prints the object
