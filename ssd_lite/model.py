"""The SSD network: a backbone giving several feature maps, and a small conv head on each (paper, section 2.1).

Each feature map of size f x f predicts, for every cell and each of its k default boxes, 4 offsets and
C class scores with one 3x3 convolution ((C + 4) * k output channels; we use two convs, one for the
offsets and one for the scores, which is the same thing split in two). Early, fine maps see small
objects; late, coarse maps see large ones. The model owns its default boxes (`model.priors`), built in
the very order the heads emit their predictions, so prediction i always belongs to default box i.

Two networks:
- `small_ssd`: a compact BatchNorm backbone for the course's CPU training on small images (the default);
- `ssd300_vgg16`: the paper's SSD300 (VGG16 base, 8732 default boxes), randomly initialised; its VGG16
  part can start from torchvision's ImageNet weights (`vgg16_backbone_weights`, `load_vgg16_backbone`).

Two options borrowed from RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection"), for
training with the focal loss (ssd_lite.loss.focal_multibox_loss):
- class_scores="sigmoid": one independent yes/no score per class instead of a softmax over the classes,
  with the classification bias starting at the paper's prior (every box says "probably nothing here");
- shared_heads=True: the same loc and conf convolutions on every feature map.
"""
from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import VGG16_Weights

from ssd_lite.priors import (SSD300_ASPECT_RATIOS, SSD300_FEATURE_MAP_SIZES, SSD300_SCALES, SSD300_STEPS,
                             boxes_per_location, default_boxes, prior_scales)

# Images enter the model in [0, 1]; the model standardises them itself, (image - mean) / std per channel,
# so callers never have to. By default with the ImageNet channel means and standard deviations (the usual
# choice for a VGG-style network); pretrained weights bring their own (see vgg16_backbone_weights).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SSD(nn.Module):
    """Single Shot MultiBox Detector: feature maps -> per-cell offsets and class scores.

    features: a module mapping images (B, 3, H, W) to a list of m feature maps, the k-th of shape
      (B, feature_channels[k], feature_map_sizes[k], feature_map_sizes[k]).
    num_classes: C, including background (label 0).
    image_size: the side of the square input the network is built for.
    scales: m + 1 default box scales (see ssd_lite.priors.prior_scales); aspect_ratios: m tuples.
    config: how to rebuild this model with `build_model(**config)` (saved in checkpoints).
    class_scores: "softmax" (SSD: conf is turned into probabilities with a softmax over its C columns) or
      "sigmoid" (RetinaNet: column c >= 1 is an independent logit for class c, column 0 is unused, and
      the conf biases start at -log((1 - 0.01) / 0.01), i.e. every class at probability 0.01).
    shared_heads: if True, one loc conv and one conf conv serve every feature map (RetinaNet's shared
      heads); needs the same channels and the same number of boxes per location on every map.
    steps: None, or one pixel distance between default box centres per map (see
      ssd_lite.priors.default_boxes; SSD300_STEPS for SSD300, as the Caffe release).
    mean, std: per-channel (R, G, B) values the input is standardised with, (image - mean) / std.

    forward(images (B, 3, H, W) in [0, 1]) -> loc (B, P, 4) offsets, conf (B, P, C) class scores (logits).
    """

    def __init__(self, features: nn.Module, feature_channels: Sequence[int], num_classes: int,
                 image_size: int, feature_map_sizes: Sequence[int], scales: Sequence[float],
                 aspect_ratios: Sequence[Sequence[float]], config: dict | None = None,
                 class_scores: str = "softmax", shared_heads: bool = False,
                 steps: Sequence[float] | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes counts background too, so it must be >= 2, got {num_classes}")
        if not (len(feature_channels) == len(feature_map_sizes) == len(aspect_ratios)):
            raise ValueError("need one entry per feature map in feature_channels, feature_map_sizes and "
                             f"aspect_ratios, got {len(feature_channels)}, {len(feature_map_sizes)}, "
                             f"{len(aspect_ratios)}")
        self.features = features
        self.num_classes = num_classes
        self.image_size = image_size
        self.feature_map_sizes = tuple(feature_map_sizes)
        self.scales = tuple(scales)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.config = dict(config or {})
        self.boxes_per_location = [boxes_per_location(r) for r in self.aspect_ratios]
        _check_head_options(class_scores, shared_heads, feature_channels, self.boxes_per_location)
        _check_standardisation(mean, std)
        self.class_scores = class_scores
        self.shared_heads = shared_heads
        if shared_heads:
            # RetinaNet's idea: an object looks the same at every scale, so one detector can serve every
            # map. One conv each, listed once per map so that forward reads the same either way; PyTorch
            # counts (and the optimiser updates) a module listed several times once. (RetinaNet's heads
            # are four convs deep; ours stay SSD's single conv.)
            channels, k = feature_channels[0], self.boxes_per_location[0]
            loc_head = nn.Conv2d(channels, k * 4, kernel_size=3, padding=1)
            conf_head = nn.Conv2d(channels, k * num_classes, kernel_size=3, padding=1)
            self.loc_heads = nn.ModuleList([loc_head] * len(feature_channels))
            self.conf_heads = nn.ModuleList([conf_head] * len(feature_channels))
        else:
            # One 3x3 conv per map for the offsets (4 per box) and one for the class scores (C per box).
            self.loc_heads = nn.ModuleList(
                nn.Conv2d(c, k * 4, kernel_size=3, padding=1)
                for c, k in zip(feature_channels, self.boxes_per_location))
            self.conf_heads = nn.ModuleList(
                nn.Conv2d(c, k * num_classes, kernel_size=3, padding=1)
                for c, k in zip(feature_channels, self.boxes_per_location))
        if class_scores == "sigmoid":
            # The focal loss paper's prior (section 3.3 and 4.1, "Initialization"): start every class at
            # sigmoid(b) = pi = 0.01. With a bias near 0 every box would start at p = 0.5 for every
            # class, and the thousands of background boxes, each paying -log(0.5) per class, would
            # swamp the loss of the first steps (the paper found such starts unstable). Starting at
            # "probably background" makes the easy negatives' loss small from step one, so the few
            # positives drive learning.
            prior_probability = 0.01
            for head in self.conf_heads:
                nn.init.constant_(head.bias, -math.log((1 - prior_probability) / prior_probability))
        # Buffers, not parameters: they move with .to(device) and are saved, but are never trained.
        self.register_buffer("priors", default_boxes(self.feature_map_sizes, self.scales, self.aspect_ratios,
                                                     steps=steps, image_size=image_size))
        # Not saved with the weights (persistent=False): `config` records them when they are not the default.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a (B, 3, H, W) batch, got shape {tuple(images.shape)}")
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"this model takes {self.image_size}x{self.image_size} images, got "
                             f"{images.shape[-2]}x{images.shape[-1]}: resize them first "
                             "(ssd_lite.augment.eval_transform does)")
        feature_maps = self.features((images - self.mean) / self.std)
        locs, confs = [], []
        for k, (fmap, loc_head, conf_head) in enumerate(zip(feature_maps, self.loc_heads, self.conf_heads)):
            f = self.feature_map_sizes[k]
            if fmap.shape[-2:] != (f, f):
                raise ValueError(f"feature map {k} is {tuple(fmap.shape[-2:])}, but the default boxes were "
                                 f"built for {f}x{f}")
            batch = fmap.shape[0]
            # (B, k*4, f, f) -> (B, f, f, k*4) -> (B, f*f*k, 4): rows, then columns, then the cell's
            # boxes -- exactly the order of ssd_lite.priors.default_boxes.
            locs.append(loc_head(fmap).permute(0, 2, 3, 1).reshape(batch, -1, 4))
            confs.append(conf_head(fmap).permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes))
        return torch.cat(locs, dim=1), torch.cat(confs, dim=1)


def _check_standardisation(mean: Sequence[float], std: Sequence[float]) -> None:
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need one value per colour channel (3), got {tuple(mean)} and {tuple(std)}")
    if not all(math.isfinite(m) for m in mean) or not all(math.isfinite(s) and s > 0 for s in std):
        raise ValueError(f"mean must be finite and std finite and > 0, got mean {tuple(mean)}, std {tuple(std)}")


def _check_head_options(class_scores: str, shared_heads: bool, feature_channels: Sequence[int],
                        boxes_per_location: Sequence[int]) -> None:
    if class_scores not in ("softmax", "sigmoid"):
        raise ValueError(f"class_scores must be 'softmax' or 'sigmoid', got {class_scores!r}")
    if not isinstance(shared_heads, bool):
        raise TypeError(f"shared_heads must be True or False, got {shared_heads!r}")
    if shared_heads and len(set(feature_channels)) > 1:
        raise ValueError("shared_heads needs the same number of channels on every feature map (one conv "
                         f"reads them all), got feature channels {tuple(feature_channels)}")
    if shared_heads and len(set(boxes_per_location)) > 1:
        raise ValueError("shared_heads needs the same number of default boxes per location on every map "
                         "(one conv predicts them all), got boxes per location "
                         f"{tuple(boxes_per_location)}: give every map the same aspect ratios")


# ---------------------------------------------------------------------------------------------------
# The small model for CPU training on the course's synthetic shapes (and other simple objects).

def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, BatchNorm, ReLU: BatchNorm lets a randomly initialised net train fast at a high lr."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SmallBackbone(nn.Module):
    """A plain VGG-like stack of stride-2 stages; the last `num_feature_maps` stages are the feature maps.

    With image_size 128 and six stages: maps of 64, 32, 16, 8, 4, 2; the last four are kept by default.
    forward(x (B, 3, S, S)) -> list of (B, widths[i], S / 2^(i+1), S / 2^(i+1)) for the last maps.
    """

    def __init__(self, widths: Sequence[int], num_feature_maps: int):
        super().__init__()
        stages, in_channels = [], 3
        for i, width in enumerate(widths):
            # Two convs per stage from stride 8 on, where the maps are small and cheap; one before.
            layers = [conv_bn_relu(in_channels, width, stride=2)]
            if i >= 2:
                layers.append(conv_bn_relu(width, width))
            stages.append(nn.Sequential(*layers))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.num_feature_maps = num_feature_maps

    def forward(self, x: Tensor) -> list[Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps[-self.num_feature_maps:]


def small_ssd(num_classes: int, image_size: int = 128, widths: Sequence[int] = (24, 48, 96, 128, 128, 128),
              num_feature_maps: int = 4, s_min: float = 0.15, s_max: float = 0.75,
              aspect_ratios: Sequence[Sequence[float]] | None = None, class_scores: str = "softmax",
              shared_heads: bool = False) -> SSD:
    """A compact BatchNorm SSD with m feature maps, sized for CPU training (`default_model` picks its settings).

    image_size must be divisible by 2^len(widths) (128 with 6 stages: maps 16, 8, 4, 2). Scales follow the
    paper's equation from s_min to s_max (0.15-0.75: objects from ~20 to ~100 pixels of a 128 image);
    aspect ratios default to (2,) per map: 4 boxes per cell. The default widths were measured at 128 px:
    24-48-96 early channels instead of 16-32-64 cost ~20% more time per step and gave a higher mAP in the same
    epochs (default_model spends that time on a 192 px input instead).
    class_scores and shared_heads: see SSD. Shared heads need the feature maps (the last num_feature_maps
    widths) to be equally wide, which the default widths are not: e.g. widths=(24, 48, 128, 128, 128, 128).
    """
    num_stages = len(widths)
    if not 1 <= num_feature_maps <= num_stages:
        raise ValueError(f"num_feature_maps must be in 1..{num_stages}, got {num_feature_maps}")
    if image_size % 2 ** num_stages:
        raise ValueError(f"image_size must be divisible by 2^{num_stages} = {2 ** num_stages} "
                         f"(one halving per stage), got {image_size}")
    map_widths = tuple(widths[-num_feature_maps:])
    if shared_heads and len(set(map_widths)) > 1:
        equal_widths = tuple(widths[:-num_feature_maps]) + (max(map_widths),) * num_feature_maps
        raise ValueError(f"shared_heads needs equally wide feature maps, but the last {num_feature_maps} "
                         f"widths are {map_widths}: try widths={equal_widths}")
    if aspect_ratios is None:
        aspect_ratios = [(2,)] * num_feature_maps
    feature_map_sizes = [image_size // 2 ** (i + 1) for i in range(num_stages)][-num_feature_maps:]
    config = dict(architecture="small_ssd", num_classes=num_classes, image_size=image_size,
                  widths=list(widths), num_feature_maps=num_feature_maps, s_min=s_min, s_max=s_max,
                  aspect_ratios=[list(r) for r in aspect_ratios], class_scores=class_scores,
                  shared_heads=shared_heads)
    return SSD(SmallBackbone(widths, num_feature_maps), map_widths, num_classes, image_size,
               feature_map_sizes, prior_scales(num_feature_maps, s_min, s_max), aspect_ratios, config,
               class_scores, shared_heads)


# ---------------------------------------------------------------------------------------------------
# SSD300 with a VGG16 base, as in the paper (figure 2) and the original Caffe model.

class L2Norm(nn.Module):
    """Normalise each position's feature vector to unit length, then scale each channel by a learnt weight.

    conv4_3's activations are much larger than those of later layers (ParseNet, Liu et al. 2015); the
    paper normalises them and learns the scale, initialised to 20.
    """

    def __init__(self, channels: int, initial_scale: float = 20.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), initial_scale))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(x, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


# VGG16 configuration "D": numbers are 3x3 conv widths, "M" a 2x2 max pool. pool3 rounds up (ceil mode)
# so that 300 -> 150 -> 75 -> 38, as in the Caffe model.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M_ceil", 512, 512, 512, "M", 512, 512, 512)


def vgg16_layers() -> list[nn.Module]:
    """VGG16's conv1_1..conv5_3 with ReLUs and pools, written out (same layers as torchvision.models.vgg16)."""
    layers, in_channels = [], 3
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif v == "M_ceil":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(in_channels, v, 3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return layers


class VGG16Features(nn.Module):
    """SSD300's six feature maps: conv4_3 (38, L2-normalised), conv7 (19), conv8_2 (10), conv9_2 (5),
    conv10_2 (3), conv11_2 (1). forward(x (B, 3, 300, 300)) -> list of 6 maps."""

    def __init__(self):
        super().__init__()
        vgg = vgg16_layers()
        self.up_to_conv4_3 = nn.Sequential(*vgg[:23])  # conv1_1 .. conv4_3 + ReLU
        self.conv4_3_norm = L2Norm(512, initial_scale=20.0)
        # pool4, conv5_1..conv5_3, then the paper's changes: pool5 becomes 3x3 stride 1 (keeps 19x19),
        # fc6 becomes a 3x3 conv with dilation 6 (the "a trous" trick: a large receptive field without
        # shrinking the map), fc7 a 1x1 conv.
        self.up_to_conv7 = nn.Sequential(
            *vgg[23:],
            nn.MaxPool2d(3, stride=1, padding=1),
            nn.Conv2d(512, 1024, 3, padding=6, dilation=6), nn.ReLU(inplace=True),  # conv6
            nn.Conv2d(1024, 1024, 1), nn.ReLU(inplace=True),  # conv7
        )

        def extra(in_channels: int, middle: int, out_channels: int, stride: int, padding: int) -> nn.Sequential:
            # A 1x1 conv to squeeze channels, then a 3x3 conv that halves (or trims) the map.
            return nn.Sequential(nn.Conv2d(in_channels, middle, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(middle, out_channels, 3, stride=stride, padding=padding),
                                 nn.ReLU(inplace=True))

        self.extras = nn.ModuleList([
            extra(1024, 256, 512, stride=2, padding=1),  # conv8: 19 -> 10
            extra(512, 128, 256, stride=2, padding=1),   # conv9: 10 -> 5
            extra(256, 128, 256, stride=1, padding=0),   # conv10: 5 -> 3
            extra(256, 128, 256, stride=1, padding=0),   # conv11: 3 -> 1
        ])
        # conv6, conv7 and the extra layers get no weights from torchvision's VGG16 (it has conv1_1..conv5_3
        # only): they start as torchvision's SSD300 starts them, Xavier-uniform weights and zero biases. (The
        # paper instead converts its ImageNet VGG's fc6/fc7 into conv6/conv7; the extra layers are Xavier
        # there too.)
        for layer in [*self.up_to_conv7[len(vgg) - 23:].modules(), *self.extras.modules()]:
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3 = self.up_to_conv4_3(x)
        maps = [self.conv4_3_norm(conv4_3)]
        x = self.up_to_conv7(conv4_3)
        maps.append(x)
        for layer in self.extras:
            x = layer(x)
            maps.append(x)
        return maps


def ssd300_vgg16(num_classes: int = 21, class_scores: str = "softmax", shared_heads: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> SSD:
    """The paper's SSD300: VGG16 base + extra layers, 6 maps, 8732 default boxes. Randomly initialised.

    No weights are downloaded here: `load_vgg16_backbone(model, vgg16_backbone_weights("imagenet"))`
    starts the VGG16 part from ImageNet, and then mean and std must be those the weights expect.
    class_scores: see SSD. shared_heads=True raises a ValueError: the paper's maps differ in channels
    (512, 1024, 512, 256, 256, 256) and in boxes per location (4, 6, 6, 6, 4, 4), so one conv cannot
    serve them all (RetinaNet first brings every map to 256 channels with its feature pyramid).
    mean, std: the input standardisation (see SSD); recorded in model.config when not ImageNet's.
    """
    config = dict(architecture="ssd300_vgg16", num_classes=num_classes, class_scores=class_scores,
                  shared_heads=shared_heads)
    if (tuple(mean), tuple(std)) != (IMAGENET_MEAN, IMAGENET_STD):
        config.update(mean=[float(m) for m in mean], std=[float(s) for s in std])
    return SSD(VGG16Features(), (512, 1024, 512, 256, 256, 256), num_classes, 300, SSD300_FEATURE_MAP_SIZES,
               SSD300_SCALES, SSD300_ASPECT_RATIOS, config, class_scores, shared_heads,
               steps=SSD300_STEPS, mean=mean, std=std)


def build_model(architecture: str, **settings) -> SSD:
    """Rebuild a model from its `model.config` (as saved in a checkpoint)."""
    if architecture == "small_ssd":
        return small_ssd(**settings)
    if architecture == "ssd300_vgg16":
        return ssd300_vgg16(**settings)
    raise ValueError(f"unknown architecture {architecture!r}: expected 'small_ssd' or 'ssd300_vgg16'")


# ---------------------------------------------------------------------------------------------------
# SSD300's VGG16 base from ImageNet (the paper fine-tunes "the ILSVRC CLS-LOC pretrained" VGG16).

# torchvision's VGG16 `features` numbers its layers as vgg16_layers does: its key "features.N.weight" is
# our layer N, which lies in up_to_conv4_3 for N < 23 and in up_to_conv7 (as layer N - 23) after.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # conv1_1 .. conv5_3


def vgg16_backbone_weights(source: str | Path) -> tuple[dict[str, Tensor], tuple[float, ...], tuple[float, ...]]:
    """VGG16 weights for SSD300's base, with the input standardisation they were trained with.

    source: "imagenet" for torchvision's VGG16_Weights.IMAGENET1K_FEATURES (the VGG16 of the original
      SSD code, ported from amdegroot/ssd.pytorch), through torchvision's weight API and torch hub's
      cache; or a file in torchvision's VGG16 layout (see load_vgg16_backbone). A file named as one of
      torchvision's VGG16 weight files gets that entry's standardisation, any other IMAGENET1K_V1's
      (the weights torchvision.models.vgg16() is usually saved with).
    Returns (state dict, mean, std): mean and std as the weights' own transforms give them.
    Raises FileNotFoundError (offline, or no such file) saying where to put the file, ValueError for a
    file that does not load or does not fit (see load_vgg16_backbone).
    """
    if str(source) == "imagenet":
        weights = VGG16_Weights.IMAGENET1K_FEATURES
        state_dict = _download(weights)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no VGG16 weights file at {path}" + (" (a folder)" if path.is_dir() else ""))
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # pickle, zip and torch errors alike: not a loadable weights file
            raise ValueError(f"{path} is not a readable state dict ({str(error).splitlines()[0]})") from None
        by_name = {Path(urlparse(w.url).path).name: w for w in VGG16_Weights}
        weights = by_name.get(path.name, VGG16_Weights.IMAGENET1K_V1)
    # Check every key and shape now, on a model without memory (the meta device), so that a wrong file is
    # reported before any data is read.
    with torch.device("meta"):
        reference = VGG16Features().state_dict()
    _vgg16_tensors(state_dict, reference, str(weights) if str(source) == "imagenet" else str(source))
    transform = weights.transforms()
    return state_dict, tuple(transform.mean), tuple(transform.std)


def _download(weights: VGG16_Weights) -> dict[str, Tensor]:
    """The weights' state dict from torch hub's cache, downloaded there first if needed."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    # Without a timeout, a machine whose firewall drops packets silently would wait for minutes.
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        return weights.get_state_dict(progress=True, weights_only=True)
    except Exception as error:  # no network, a proxy, a damaged file: each raises its own kind
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if cached.exists():
            raise ValueError(f"{cached}, torchvision's cached copy of {weights}, cannot be read ({reason}): "
                             "delete it and try again") from None
        raise FileNotFoundError(
            f"cannot download {weights} from {weights.url} ({reason}). Without network: download that file "
            f"on another machine and put it at {cached} (torch hub's cache; TORCH_HOME moves it), or give "
            "its path instead of 'imagenet'") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def load_vgg16_backbone(model: SSD, state_dict: Mapping[str, Tensor], source: str = "the weights") -> None:
    """Copy torchvision VGG16 weights (conv1_1 .. conv5_3) into the VGG16 part of an ssd300_vgg16 model.

    state_dict: that of torchvision.models.vgg16() (keys "features.N.weight"; the classifier is ignored)
      or of its .features (keys "N.weight"). conv6, conv7, the extra layers and the heads keep theirs.
    The model's mean and std must be those the weights expect (vgg16_backbone_weights returns them).
    Raises ValueError naming the first key that is missing, not a VGG16 layer, or of the wrong shape
    (with both shapes), before changing any weight; `source` names the weights in the messages.
    """
    if not isinstance(model.features, VGG16Features):
        raise ValueError(f"VGG16 weights fit only ssd300_vgg16, not a {type(model.features).__name__} model")
    model.features.load_state_dict(_vgg16_tensors(state_dict, model.features.state_dict(), source), strict=False)


def _vgg16_tensors(state_dict: Mapping[str, Tensor], ours: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """The conv tensors of a torchvision VGG16 state dict, renamed to VGG16Features' keys (`ours`), checked."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(f"{source} is not a state dict (a dict of tensors), got {type(state_dict).__name__}")
    # The file's own key names go in the messages: "features.10.weight", or "10.weight" for .features'.
    prefix = "features." if any(key.startswith("features.") for key in state_dict) else ""
    mapped = {}
    for key, tensor in state_dict.items():
        if not key.startswith(prefix):
            continue  # the classifier of a whole torchvision VGG16
        index, _, name = key[len(prefix):].partition(".")
        target = (f"up_to_conv4_3.{index}.{name}" if int(index) < 23 else
                  f"up_to_conv7.{int(index) - 23}.{name}") if index.isdigit() else key
        if target not in ours:
            raise ValueError(f"{source}: {key!r} is not a layer of VGG16's convolutions (conv1_1 .. conv5_3, "
                             "without BatchNorm: vgg16_bn does not fit)")
        if not isinstance(tensor, Tensor) or tensor.shape != ours[target].shape:
            shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(f"{source}: {key!r} has shape {shape}, but SSD300's VGG16 needs "
                             f"{tuple(ours[target].shape)}")
        mapped[target] = tensor
    needed = [f"{prefix}{i}.{name}" for i in VGG16_CONV_INDICES for name in ("weight", "bias")]
    missing = [key for key in needed if key not in state_dict]
    if missing:
        raise ValueError(f"{source}: no {missing[0]!r} ({len(missing)} of VGG16's {len(needed)} conv tensors "
                         "missing): expected the state dict of torchvision.models.vgg16() or of its .features")
    return mapped


# ---------------------------------------------------------------------------------------------------
# The course's default model (lessons 06 and 07, `python -m ssd_lite.train`).

def default_model(num_classes: int, image_size: int = 192, class_scores: str = "softmax") -> SSD:
    """The course's model for simple objects: small_ssd with 4 maps (24, 12, 6, 3 at 192 px), channels
    16-32-64-96-96-96 and boxes of scales 0.1 to 0.7 with aspect ratios 1, 2, 1/2, 3, 1/3 (6 per cell):
    smaller and more elongated boxes than small_ssd's defaults, for the shapes' small and thin objects.
    class_scores: "softmax" for the MultiBox loss, "sigmoid" for the focal loss (see SSD).

    Why 192 px with narrow channels rather than 128 px with small_ssd's wider ones (24-48-96-128-128-128):
    at 192 px the finest map is 24x24 cells of 8 px instead of 16x16, so small objects sit on a finer grid,
    and the narrower channels pay for the larger maps (a step costs about 1.1x the 128 px model's). In the
    same 5 CPU minutes it reached a held-out mAP of 0.936 and 0.938 on two seeds, against 0.920 and 0.909
    (benchmarks/bench_variants.py, variant input-192-narrow; the README's "Toward 0.95")."""
    return small_ssd(num_classes, image_size=image_size, widths=(16, 32, 64, 96, 96, 96), s_min=0.1, s_max=0.7,
                     aspect_ratios=[(2, 3)] * 4, class_scores=class_scores)
