"""Drawing for the lessons: images, boxes, default boxes and matches, with the same colours everywhere.

Every box given to a function here is normalised (fractions of the image's width and height) and is
drawn in the pixel coordinates of the image shown, so one set of boxes draws on any image size.
Images are float tensors (3, H, W) in [0, 1] or PIL images. Every function returns the matplotlib Axes
it drew on, so a lesson can add to a figure or title it.

This module serves the notebooks only: it imports the geometry (boxes, priors) and nothing in the
package imports it.
"""
from __future__ import annotations

import copy
import inspect
import io
from typing import Sequence

import matplotlib.colors as mcolors
import matplotlib.patches as mpatches
import matplotlib.patheffects as patheffects
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from ssd_lite.boxes import box_iou, cxcywh_to_xyxy
from ssd_lite.priors import cell_default_boxes

# One meaning per colour in every lesson, from the Okabe-Ito palette (Okabe and Ito, "Color Universal
# Design", 2002): its colours stay apart for readers with red-green colour blindness, so no meaning rests
# on red versus green. Every box is also drawn over a thin halo of the opposite lightness (dark under the
# light colours, white under the dark ones), so it stands out on light and dark photos alike, and mined
# negatives are dashed: the meaning never rests on the hue alone.
GT_COLOR = "#F0E442"           # ground-truth boxes: yellow
POSITIVE_COLOR = "#0072B2"     # default boxes matched to an object (positives): blue
NEGATIVE_COLOR = "#D55E00"     # background default boxes kept by hard negative mining: vermillion, dashed
DETECTION_COLOR = "#56B4E9"    # the detector's output boxes: sky blue
PRIOR_COLOR = "#CC79A7"        # default boxes in general: reddish purple
OUTLINE_COLOR = "#202020"      # the halo under the light colours; the dark ones get a white halo


def _text_colour(background) -> str:
    """Black or white, whichever reads better on `background` (by its relative luminance)."""
    red, green, blue = mcolors.to_rgb(background)
    return "black" if 0.2126 * red + 0.7152 * green + 0.0722 * blue > 0.4 else "white"


def _halo(colour, linewidth: float) -> list:
    """A line of the opposite lightness under a box's edge: readable on a night sky and a white wall alike."""
    halo = OUTLINE_COLOR if _text_colour(colour) == "black" else "white"
    return [patheffects.Stroke(linewidth=linewidth + 1.5, foreground=halo), patheffects.Normal()]


def show_source(obj) -> None:
    """Display the source of a function, class or module, syntax-highlighted, in a notebook."""
    from IPython.display import Code, display

    display(Code(inspect.getsource(obj), language="python"))


def _palette_png(fig, colours: int = 16) -> bytes:
    """The figure as a PNG of at most `colours` colours (an indexed palette)."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    buffer.seek(0)
    palette = Image.open(buffer).convert("RGB").quantize(colours)
    out = io.BytesIO()
    palette.save(out, format="png", optimize=True)
    return out.getvalue()


def show_diagram(fig, colours: int = 16) -> None:
    """Display a figure of flat colours (a diagram, a bar chart) in a notebook as a PNG of a few colours, and
    close it. Stored in the notebook, such a PNG is about a third of the JPEG or full-colour PNG the inline
    backend would keep, and sharper. Photos and smooth curves lose detail this way: leave those to the backend."""
    from IPython.display import Image, display

    png = _palette_png(fig, colours)
    plt.close(fig)  # or the inline backend would show it a second time
    display(Image(png))


def _to_numpy_image(image) -> np.ndarray:
    """(3, H, W) or (1, H, W) tensor in [0, 1] (or uint8), or a PIL image -> (H, W, 3) array for imshow."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"image tensor must have shape (3, H, W) or (1, H, W), got {tuple(image.shape)}"
                             " (pass one image of a batch, e.g. images[0])")
        image = image.detach().cpu()
        if image.dtype == torch.uint8:
            image = image.float() / 255
        array = image.float().clamp(0, 1).permute(1, 2, 0).numpy()
        return array.repeat(3, axis=2) if array.shape[2] == 1 else array
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"))
    raise ValueError(f"image must be a (3, H, W) tensor or a PIL image, got {type(image).__name__}")


def _new_axes(ax: Axes | None, size: float = 4.0) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(size, size))
    return ax


def show_image(image, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Show an image (3, H, W) tensor or PIL image, without axis ticks. Returns the Axes."""
    array = _to_numpy_image(image)
    ax = _new_axes(ax)
    ax.imshow(array)
    ax.set_autoscale_on(False)  # boxes reaching past the image, or points drawn later, keep the image's view
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title, fontsize=9)
    return ax


def _image_size_of(ax: Axes) -> tuple[int, int]:
    """(width, height) in pixels of the image last shown on ax."""
    if not ax.images:
        raise ValueError("the Axes shows no image: pass the image, or call show_image(image, ax) first")
    height, width = ax.images[-1].get_array().shape[:2]
    return width, height


def _as_boxes(boxes, name: str = "boxes") -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu()
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.dim() == 1 and boxes.shape[0] == 4:
        boxes = boxes[None]  # one box
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    return boxes


def _box_texts(num_boxes: int, labels, class_names, scores) -> list[str] | None:
    """One caption per box: the class name (or label) and/or the score."""
    if labels is None and scores is None:
        return None
    texts = [""] * num_boxes
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).tolist()
        if len(labels) != num_boxes:
            raise ValueError(f"got {len(labels)} labels for {num_boxes} boxes")
        for i, label in enumerate(labels):
            if class_names is not None:
                if not 0 <= int(label) < len(class_names):
                    raise ValueError(f"label {label} is out of range for {len(class_names)} class names")
                texts[i] = str(class_names[int(label)])
            else:
                texts[i] = str(int(label))
    if scores is not None:
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1).tolist()
        if len(scores) != num_boxes:
            raise ValueError(f"got {len(scores)} scores for {num_boxes} boxes")
        texts = [f"{text} {score:.2f}".strip() for text, score in zip(texts, scores)]
    return texts


def draw_boxes(image_or_ax, boxes, labels=None, class_names: Sequence[str] | None = None, scores=None,
               color=GT_COLOR, ax: Axes | None = None, title: str | None = None, linewidth: float = 2.0,
               linestyle: str = "-", box_format: str = "xyxy", fontsize: float = 7.0) -> Axes:
    """Draw normalised boxes on an image, or on an Axes that already shows one. Returns the Axes.

    image_or_ax: a (3, H, W) tensor or PIL image (shown first, on `ax` if given), or an Axes showing an
    image. boxes: (N, 4) normalised, xyxy (or cxcywh with box_format="cxcywh"); N = 0 draws nothing.
    labels: optional (N,) ints, written as class_names[label] when class_names is given; scores: optional
    (N,) floats written after the name. color: one colour, or a list of N colours.
    One Rectangle patch is added per box (captions are text, not patches).
    """
    if isinstance(image_or_ax, Axes):
        ax = image_or_ax
        if title is not None:
            ax.set_title(title, fontsize=9)
    else:
        ax = show_image(image_or_ax, ax=ax, title=title)
    boxes = _as_boxes(boxes)
    if box_format == "cxcywh":
        boxes = cxcywh_to_xyxy(boxes)
    elif box_format != "xyxy":
        raise ValueError(f"box_format must be 'xyxy' or 'cxcywh', got {box_format!r}")
    colors = [color] * len(boxes) if isinstance(color, str) or color is None else list(color)
    if len(colors) != len(boxes):
        raise ValueError(f"got {len(colors)} colours for {len(boxes)} boxes")
    texts = _box_texts(len(boxes), labels, class_names, scores)
    width, height = _image_size_of(ax)
    pixel_boxes = boxes * torch.tensor([width, height, width, height], dtype=torch.float32)
    for i, (x_min, y_min, x_max, y_max) in enumerate(pixel_boxes.tolist()):
        patch = mpatches.Rectangle((x_min, y_min), x_max - x_min, y_max - y_min, fill=False,
                                   edgecolor=colors[i], linewidth=linewidth, linestyle=linestyle)
        patch.set_path_effects(_halo(colors[i], linewidth))
        ax.add_patch(patch)
        if texts is not None and texts[i]:
            # Inside the box's top-left corner, so a box touching the image's top edge keeps its caption.
            ax.text(x_min, y_min, texts[i], fontsize=fontsize, color=_text_colour(colors[i]), va="top",
                    clip_on=True, bbox=dict(facecolor=colors[i], edgecolor="none", alpha=0.85, pad=1))
    return ax


def draw_cell_default_boxes(image, feature_map_size: int, scale: float, next_scale: float,
                            aspect_ratios: Sequence[float], cell: tuple[int, int] | None = None,
                            ax: Axes | None = None, title: str | None = None, color=PRIOR_COLOR,
                            show_grid: bool = True, show_whole_boxes: bool = True,
                            linewidth: float = 2.0) -> Axes:
    """Draw the default boxes of one cell of an f x f feature map over an image, with the map's grid.

    cell: (row, col), the centre cell by default. The cell is shaded; the extra box of scale
    sqrt(scale * next_scale) is dashed. show_whole_boxes widens the view so boxes reaching past the
    image edge are drawn whole. Patches added: the shaded cell, then one Rectangle per default box.
    """
    f = int(feature_map_size)
    if f < 1:
        raise ValueError(f"feature_map_size must be >= 1, got {feature_map_size}")
    row, col = (f // 2, f // 2) if cell is None else cell
    if not (0 <= row < f and 0 <= col < f):
        raise ValueError(f"cell {(row, col)} is outside the {f}x{f} feature map")
    priors = cell_default_boxes((col + 0.5) / f, (row + 0.5) / f, scale, next_scale, aspect_ratios)
    if title is None:
        title = f"{f}x{f} map, scale {scale:.2f}: the {len(priors)} default boxes of cell {(row, col)}"
    ax = show_image(image, ax=ax, title=title)
    width, height = _image_size_of(ax)
    if show_grid and f > 1:
        for k in range(1, f):
            ax.axvline(k * width / f, color="white", linewidth=0.5, alpha=0.6)
            ax.axhline(k * height / f, color="white", linewidth=0.5, alpha=0.6)
    ax.add_patch(mpatches.Rectangle((col * width / f, row * height / f), width / f, height / f,
                                    facecolor=color, alpha=0.3, edgecolor="none"))
    xyxy = cxcywh_to_xyxy(priors)
    draw_boxes(ax, xyxy[:1], color=color, linewidth=linewidth)
    draw_boxes(ax, xyxy[1:2], color=color, linewidth=linewidth, linestyle="--")  # the extra box
    draw_boxes(ax, xyxy[2:], color=color, linewidth=linewidth)
    if show_whole_boxes:
        x_min, y_min = min(0.0, float(xyxy[:, 0].min())), min(0.0, float(xyxy[:, 1].min()))
        x_max, y_max = max(1.0, float(xyxy[:, 2].max())), max(1.0, float(xyxy[:, 3].max()))
        ax.set_xlim(x_min * width - 2, x_max * width + 2)
        ax.set_ylim(y_max * height + 2, y_min * height - 2)  # y grows downwards in images
    return ax


def draw_matches(image, gt_boxes, priors, labels, negatives=None, gt_labels=None,
                 class_names: Sequence[str] | None = None, ax: Axes | None = None, title: str | None = None,
                 linewidth: float = 1.5) -> Axes:
    """Draw the result of matching: ground truth (yellow), positive priors (blue), mined negatives (vermillion, dashed).

    gt_boxes: (G, 4) normalised xyxy; priors: (P, 4) cxcywh; labels: (P,) from `match`, > 0 for a
    positive; negatives: optional (P,) bool, e.g. the priors kept by hard negative mining.
    Patches added: G + number of positives (+ number of negatives), negatives drawn first (underneath).
    """
    priors = _as_boxes(priors, "priors")
    labels = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if len(labels) != len(priors):
        raise ValueError(f"labels must have one entry per prior: got {len(labels)} labels, {len(priors)} priors")
    priors_xyxy = cxcywh_to_xyxy(priors)
    if title is None:
        title = f"{int((labels > 0).sum())} positive default boxes (blue) for {len(_as_boxes(gt_boxes))} objects (yellow)"
    ax = show_image(image, ax=ax, title=title)
    if negatives is not None:
        negatives = torch.as_tensor(negatives).detach().cpu().reshape(-1)
        if negatives.dtype != torch.bool or len(negatives) != len(priors):
            raise ValueError(f"negatives must be a (P,) bool mask for {len(priors)} priors, got "
                             f"{negatives.dtype} of length {len(negatives)}")
        draw_boxes(ax, priors_xyxy[negatives], color=NEGATIVE_COLOR, linewidth=linewidth * 0.7, linestyle="--")
    draw_boxes(ax, priors_xyxy[labels > 0], color=POSITIVE_COLOR, linewidth=linewidth)
    draw_boxes(ax, gt_boxes, labels=gt_labels, class_names=class_names, color=GT_COLOR, linewidth=linewidth * 2)
    return ax


def draw_iou_pair(box_a, box_b, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Draw two normalised xyxy boxes on a blank unit square, their overlap shaded, IoU in the title.

    Patches added: box A (yellow, GT_COLOR), box B (purple, PRIOR_COLOR) and, if they overlap, the shaded
    intersection.
    """
    a, b = _as_boxes(box_a, "box_a"), _as_boxes(box_b, "box_b")
    if len(a) != 1 or len(b) != 1:
        raise ValueError("draw_iou_pair draws exactly one box A and one box B")
    iou = float(box_iou(a, b)[0, 0])
    ax = _new_axes(ax, size=3.0)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)  # image convention: y grows downwards
    ax.set_aspect("equal")
    ax.set_xticks([0, 0.5, 1])
    ax.set_yticks([0, 0.5, 1])
    for box, color in ((a[0], GT_COLOR), (b[0], PRIOR_COLOR)):
        x_min, y_min, x_max, y_max = box.tolist()
        patch = mpatches.Rectangle((x_min, y_min), x_max - x_min, y_max - y_min, fill=False,
                                   edgecolor=color, linewidth=2)
        patch.set_path_effects(_halo(color, 2))
        ax.add_patch(patch)
    top_left = torch.max(a[0, :2], b[0, :2])
    bottom_right = torch.min(a[0, 2:], b[0, 2:])
    if (bottom_right > top_left).all():
        (x_min, y_min), (x_max, y_max) = top_left.tolist(), bottom_right.tolist()
        ax.add_patch(mpatches.Rectangle((x_min, y_min), x_max - x_min, y_max - y_min, facecolor="grey",
                                        alpha=0.5, edgecolor="none"))
    ax.set_title(title if title is not None else f"IoU = {iou:.2f}", fontsize=9)
    return ax


def draw_prior_heatmaps(values, feature_map_sizes: Sequence[int], boxes_per_location: Sequence[int],
                        axes: Sequence[Axes] | None = None, title: str = "", vmin: float | None = 0.0,
                        vmax: float | None = 1.0, cmap: str = "viridis") -> list[Axes]:
    """Show one number per default box as one f x f image per feature map (max over each cell's boxes).

    values: (P,) in the order of `priors.default_boxes` (map by map, cells row by row, the cell's boxes
    last), e.g. each prior's best IoU with any object. feature_map_sizes: m sides f_k;
    boxes_per_location: m counts A_k, so P = sum_k f_k^2 A_k. Returns the m Axes, titled per map.
    """
    values = torch.as_tensor(values, dtype=torch.float32).detach().cpu().reshape(-1)
    if len(feature_map_sizes) != len(boxes_per_location):
        raise ValueError(f"got {len(feature_map_sizes)} feature map sizes but {len(boxes_per_location)} "
                         "boxes-per-location counts")
    counts = [f * f * a for f, a in zip(feature_map_sizes, boxes_per_location)]
    if sum(counts) != len(values):
        raise ValueError(f"the maps hold {sum(counts)} default boxes but got {len(values)} values")
    if axes is None:
        _, axes = subplots(len(counts), ncols=len(counts), size=2.2)
    image = None
    for ax, f, a, per_map in zip(axes, feature_map_sizes, boxes_per_location, values.split(counts)):
        per_cell = per_map.reshape(f, f, a).amax(dim=2)  # the best of the cell's A boxes
        image = ax.imshow(per_cell.numpy(), vmin=vmin, vmax=vmax, cmap=cmap)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{title}{f}x{f}".strip(), fontsize=9)
    if image is not None:
        axes[-1].figure.colorbar(image, ax=list(axes), shrink=0.8)
    return list(axes)


def subplots(num: int, ncols: int = 4, size: float = 3.0):
    """A figure with `num` axes in rows of `ncols`: returns (fig, list of num Axes); spare axes hidden."""
    if num < 1:
        raise ValueError(f"need at least one subplot, got {num}")
    ncols = min(ncols, num)
    nrows = (num + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    axes = list(axes.flatten())
    for ax in axes[num:]:
        ax.set_axis_off()
    return fig, axes[:num]


def draw_dataset_grid(dataset, indices: Sequence[int], ncols: int = 4, size: float = 3.0,
                      title: str | None = None):
    """Draw several (image, target) samples of a dataset with their ground-truth boxes and class names.

    Uses dataset.class_names when it has them. Returns (fig, list of Axes).
    """
    fig, axes = subplots(len(indices), ncols=ncols, size=size)
    class_names = getattr(dataset, "class_names", None)
    for ax, index in zip(axes, indices):
        image, target = dataset[index]
        draw_boxes(image, target["boxes"], labels=target["labels"], class_names=class_names, ax=ax,
                   title=f"#{index}: {len(target['boxes'])} object{'' if len(target['boxes']) == 1 else 's'}")
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig, axes


def explore(draw, **controls) -> None:
    """Show `draw(**defaults)` as a plain figure, then the same drawing with a slider or menu per control.

    draw: a function of keyword arguments that draws one figure (it may create it with plt.subplots).
    controls: name=(default, options), options being a list of values (a menu) or (low, high, step)
    (a slider). The plain figure comes first, so the notebook still reads on a static viewer (GitHub,
    nbviewer), where widgets do not run; in Jupyter, moving a slider redraws the second figure.
    """
    import ipywidgets
    from IPython.display import display

    defaults = {name: default for name, (default, _) in controls.items()}
    draw(**defaults)
    plt.show()
    widgets = {}
    for name, (default, options) in controls.items():
        if isinstance(options, tuple) and len(options) == 3 and all(isinstance(v, (int, float)) for v in options):
            low, high, step = options
            kind = ipywidgets.IntSlider if all(isinstance(v, int) for v in (low, high, step, default)) \
                else ipywidgets.FloatSlider
            widgets[name] = kind(value=default, min=low, max=high, step=step, description=name,
                                 continuous_update=False)
        else:
            widgets[name] = ipywidgets.Dropdown(options=list(options), value=default, description=name)
    display(ipywidgets.interactive(draw, **widgets))


# ---------------------------------------------------------------------------------------------------
# The network as a diagram (lesson 06): backbone stages, feature maps, heads, and the flattening.

# SSD300's layer names (paper, figure 2), for the stages and maps that draw_architecture finds in
# ssd300_vgg16's backbone: VGG16's five blocks, fc6 and fc7 turned into conv6 and conv7, four extra blocks.
SSD300_STAGE_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5", "conv6, conv7 (were fc6, fc7)",
                      "conv8", "conv9", "conv10", "conv11")
SSD300_MAP_NAMES = ("conv4_3", "conv7", "conv8_2", "conv9_2", "conv10_2", "conv11_2")


def _trace_backbone(model) -> tuple[list[tuple[torch.nn.Module, tuple, Tensor]], list[int]]:
    """The backbone's layers in the order they run, as (layer, input shape, output), and for each feature
    map the position of the layer that outputs it. Runs a copy of the backbone on the meta device: shapes
    only, no arithmetic and no memory, so SSD300 traces as fast as the small model."""
    # Pre-filled memo: deepcopy takes these meta stand-ins instead of copying the real weights.
    tensors = [*model.features.parameters(), *model.features.buffers()]
    memo = {id(t): torch.nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad)
            if isinstance(t, torch.nn.Parameter) else torch.empty_like(t, device="meta") for t in tensors}
    features = copy.deepcopy(model.features, memo)
    layers = []

    def record(module, inputs, output):
        layers.append((module, tuple(inputs[0].shape), output))

    for layer in features.modules():
        if not list(layer.children()):  # a leaf: conv, pool, norm, activation
            layer.register_forward_hook(record)
    with torch.no_grad():
        maps = features(torch.empty(1, 3, model.image_size, model.image_size, device="meta"))
    # A map is the output of the last layer that returned that very tensor (an in-place ReLU returns its input).
    taps = [max(i for i, (_, _, output) in enumerate(layers) if output is fmap) for fmap in maps]
    return layers, taps


def _backbone_stages(layers, taps) -> list[dict]:
    """Group the traced layers into stages: a stage starts at a pooling layer, after a feature map, or at a
    second layer that shrinks the map (so a strided conv opens a stage, unless only 1x1 convs precede it)."""
    stages = []
    for i, (layer, input_shape, output) in enumerate(layers):
        shrinks = output.shape[-1] < input_shape[-1]
        if (not stages or stages[-1]["map"] is not None or isinstance(layer, torch.nn.MaxPool2d)
                or (shrinks and stages[-1]["shrunk"])):
            stages.append({"layers": [], "shrunk": False, "map": None})
        stage = stages[-1]
        stage["layers"].append(layer)
        stage["shrunk"] |= shrinks
        stage["shape"] = tuple(output.shape[1:])  # (channels, height, width) after the stage
        if i in taps:
            stage["map"] = taps.index(i)
    return stages


def _describe_layers(layers, out_channels: int) -> str:
    """'pool2×2/2 · 3× conv3×3': the convs and pools in order (" ceil": a pool that rounds its output size up),
    repeats counted, a conv's width only where it is not the stage's output width; ReLU and BatchNorm left out."""
    parts = []
    for layer in layers:
        if isinstance(layer, torch.nn.Conv2d):
            k, s, d = layer.kernel_size[0], layer.stride[0], layer.dilation[0]
            parts.append(f"conv{k}×{k}" + (f"/{s}" if s > 1 else "") + (f" dilation {d}" if d > 1 else "")
                         + (f" to {layer.out_channels}" if layer.out_channels != out_channels else ""))
        elif isinstance(layer, torch.nn.MaxPool2d):
            k = layer.kernel_size if isinstance(layer.kernel_size, int) else layer.kernel_size[0]
            s = layer.stride if isinstance(layer.stride, int) else layer.stride[0]
            parts.append(f"pool{k}×{k}/{s}" + (" ceil" if layer.ceil_mode else ""))
        elif type(layer).__name__ == "L2Norm":
            parts.append("L2Norm")
    grouped = []
    for part in parts:
        if grouped and grouped[-1][0] == part:
            grouped[-1][1] += 1
        else:
            grouped.append([part, 1])
    return " · ".join(part if n == 1 else f"{n}× {part}" for part, n in grouped)


def _tint(colour, amount: float = 0.75) -> tuple[float, float, float]:
    """`colour` mixed with white: a light fill that black text reads well on."""
    return tuple(c + (1 - c) * amount for c in mcolors.to_rgb(colour))


def _diagram_box(ax: Axes, x: float, y: float, width: float, height: float, text: str, fill,
                 left_aligned: bool = False, **text_options) -> None:
    """A rounded box with its lower-left corner at (x, y), its text centred (or left-aligned)."""
    ax.add_patch(mpatches.FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0,rounding_size=0.06",
                                         facecolor=fill, edgecolor="#404040", linewidth=0.8))
    ax.text(x + 0.08 if left_aligned else x + width / 2, y + height / 2, text, ha="left" if left_aligned else "center",
            va="center", fontsize=text_options.pop("fontsize", 9), **text_options)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float]) -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color="#404040", linewidth=0.8,
                                                          shrinkA=0, shrinkB=0))


# draw_architecture's columns: (left edge, width) in inches.
_COLUMNS = {"backbone": (0.0, 3.4), "map": (3.7, 1.6), "head": (5.6, 1.85), "reshape": (7.75, 2.55),
            "concat": (10.6, 1.5)}


def draw_architecture(model, ax: Axes | None = None, title: str | None = None,
                      stage_names: Sequence[str] | None = None, map_names: Sequence[str] | None = None) -> Axes:
    """Draw an SSD network (ssd_lite.model.SSD) as a diagram read top to bottom, then left to right.

    Left, the backbone: the input, then one box per stage with its layers and the size of its output
    (height x width x channels). Each stage that gives a feature map is linked to a box for that map:
    its size f x f and its k default boxes per cell; then its head, a 3x3 conv with (C + 4)k output
    channels (4k offsets, Ck class scores); then the reshape of the head's (B, 4k, f, f) and (B, Ck, f, f)
    outputs into (B, f*f*k, 4) and (B, f*f*k, C); last, their concatenation over the maps into (B, P, 4)
    and (B, P, C). Everything is read from the model: its heads, its default boxes, and its backbone's
    layers, traced on a meta-device copy (no weights copied, nothing computed; the model is unchanged).

    stage_names, map_names: labels for the stages and maps (default: SSD300's layer names for
    ssd300_vgg16, "stage i" and "map k" otherwise). Returns the Axes; its patches are one box for the
    input, one per stage, then per map its map, head and reshape boxes, and last the concatenation.
    """
    _check_ssd(model)
    stages = _backbone_stages(*_trace_backbone(model))
    num_maps, num_classes, num_priors = len(model.feature_map_sizes), model.num_classes, len(model.priors)
    is_ssd300 = type(model.features).__name__ == "VGG16Features" and len(stages) == len(SSD300_STAGE_NAMES)
    stage_names = list(stage_names or (SSD300_STAGE_NAMES if is_ssd300 else
                                       [f"stage {i + 1}" for i in range(len(stages))]))
    map_names = list(map_names or (SSD300_MAP_NAMES if is_ssd300 else [f"map {k + 1}" for k in range(num_maps)]))
    if len(stage_names) != len(stages) or len(map_names) != num_maps:
        raise ValueError(f"this model has {len(stages)} backbone stages and {num_maps} feature maps, got "
                         f"{len(stage_names)} stage names and {len(map_names)} map names")

    row_height, box_height, rows = 0.62, 0.48, len(stages) + 1
    bottom = lambda row: -row * row_height  # rows go down the page
    middle = lambda row: bottom(row) + box_height / 2
    width, height = sum(_COLUMNS["concat"]), rows * row_height + 0.75
    if ax is None:
        fig, ax = plt.subplots(figsize=(width + 0.2, height + 0.45))
        # The axes fill the figure, so that one data unit is one inch and the boxes fit their 9 pt text.
        fig.subplots_adjust(left=0.1 / (width + 0.2), right=1 - 0.1 / (width + 0.2), bottom=0,
                            top=height / (height + 0.45))
    x0, w0 = _COLUMNS["backbone"]
    _diagram_box(ax, x0, bottom(0), w0, box_height, f"input image {model.image_size}×{model.image_size}×3", "white")
    map_rows = {}
    for row, (stage, name) in enumerate(zip(stages, stage_names), start=1):
        channels, map_height, map_width = stage["shape"]
        fill = _tint(PRIOR_COLOR, 0.8) if stage["map"] is not None else "#EBEBEB"
        _diagram_box(ax, x0, bottom(row), w0, box_height, f"{name}\n{_describe_layers(stage['layers'], channels)}",
                     fill, left_aligned=True, fontsize=8.5)
        ax.text(x0 + w0 - 0.08, bottom(row) + box_height - 0.06, f"{map_height}×{map_width}×{channels}", ha="right",
                va="top", fontsize=9, fontweight="bold")
        _arrow(ax, (x0 + w0 / 2, bottom(row - 1)), (x0 + w0 / 2, bottom(row) + box_height))
        if stage["map"] is not None:
            map_rows[stage["map"]] = row

    for k in range(num_maps):
        f, boxes, row = model.feature_map_sizes[k], model.boxes_per_location[k], map_rows[k]
        loc_channels, conf_channels = model.loc_heads[k].out_channels, model.conf_heads[k].out_channels
        texts = {"map": (f"{map_names[k]}: {f}×{f}\nk = {boxes} boxes per cell", _tint(PRIOR_COLOR, 0.8), {}),
                 "head": (f"3×3 conv to (C+4)k = {loc_channels + conf_channels}"
                          f"\n{loc_channels} offsets + {conf_channels} scores", _tint(DETECTION_COLOR, 0.7), {}),
                 "reshape": (f"(B, {loc_channels}, {f}, {f}) → (B, {f * f * boxes}, 4)\n"
                             f"(B, {conf_channels}, {f}, {f}) → (B, {f * f * boxes}, {num_classes})",
                             _tint(DETECTION_COLOR, 0.85), {"family": "monospace", "fontsize": 8.5})}
        previous_end = x0 + w0
        for key, (text, fill, options) in texts.items():
            x, w = _COLUMNS[key]
            _arrow(ax, (previous_end, middle(row)), (x, middle(row)))
            _diagram_box(ax, x, bottom(row), w, box_height, text, fill, **options)
            previous_end = x + w

    x, w = _COLUMNS["concat"]
    concat_height = 1.3
    y = (middle(min(map_rows.values())) + middle(max(map_rows.values()))) / 2
    _diagram_box(ax, x, y - concat_height / 2, w, concat_height,
                 f"all {num_maps} maps\n\nloc\n(B, {num_priors}, 4)\nconf\n(B, {num_priors}, {num_classes})",
                 _tint(DETECTION_COLOR, 0.6))
    for row in map_rows.values():
        _arrow(ax, (_COLUMNS["reshape"][0] + _COLUMNS["reshape"][1], middle(row)), (x, y))
    for key, heading in [("backbone", "backbone (shared by every map)"), ("map", "feature map"),
                         ("head", "head: " + ("shared by all maps" if model.shared_heads else "one per map")),
                         ("reshape", "permute(0, 2, 3, 1), reshape"), ("concat", "torch.cat(dim=1)")]:
        x, w = _COLUMNS[key]
        ax.text(x + w / 2, bottom(0) + box_height + 0.08, heading, ha="center", va="bottom", fontsize=9,
                fontweight="bold")
    batchnorm = any(isinstance(layer, torch.nn.BatchNorm2d) for layer in model.features.modules())
    ax.text(0, bottom(rows - 1) - 0.12, f"Every conv is followed by {'BatchNorm and ' if batchnorm else ''}ReLU; "
            f"conv3×3/2: stride 2. C = {num_classes} classes (background included), B = batch size, "
            f"P = {num_priors} default boxes.", ha="left", va="top", fontsize=8.5)
    ax.set_xlim(-0.05, width + 0.05)
    ax.set_ylim(bottom(rows - 1) - 0.45, bottom(rows - 1) - 0.45 + height)
    ax.set_axis_off()
    architecture = model.config.get("architecture", type(model).__name__)
    ax.set_title(title if title is not None else
                 f"{architecture}: {num_maps} feature maps, {num_priors} default boxes, "
                 f"{sum(p.numel() for p in model.parameters()):,} parameters", fontsize=10)
    return ax


def _check_ssd(model) -> None:
    needed = ("features", "feature_map_sizes", "boxes_per_location", "loc_heads", "conf_heads", "priors", "image_size")
    if not isinstance(model, torch.nn.Module) or not all(hasattr(model, name) for name in needed):
        raise TypeError(f"draw_architecture needs an SSD model (ssd_lite.model.SSD, e.g. default_model(6)), "
                        f"got {type(model).__name__}")
