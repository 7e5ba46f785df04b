"""Drawing for the lessons: images, boxes, default boxes and matches, with the same colours everywhere.

Every box given to a function here is normalised (fractions of the image's width and height) and is
drawn in the pixel coordinates of the image shown, so one set of boxes draws on any image size.
Images are float tensors (3, H, W) in [0, 1] or PIL images. Every function returns the matplotlib Axes
it drew on, so a lesson can add to a figure or title it.

This module serves the notebooks only: it imports the geometry (boxes, priors) and nothing in the
package imports it.
"""
from __future__ import annotations

import inspect
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
