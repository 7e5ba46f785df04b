"""The SSD network: a backbone giving several feature maps, and a small conv head on each (paper, section 2.1).

Each feature map of size f x f predicts, for every cell and each of its k default boxes, 4 offsets and
C class scores with one 3x3 convolution ((C + 4) * k output channels; we use two convs, one for the
offsets and one for the scores, which is the same thing split in two). Early, fine maps see small
objects; late, coarse maps see large ones. The model owns its default boxes (`model.priors`), built in
the very order the heads emit their predictions, so prediction i always belongs to default box i.

Two networks:
- `small_ssd`: a compact BatchNorm backbone for the course's CPU training on small images (the default);
- `ssd300_vgg16`: the paper's SSD300 (VGG16 base, 8732 default boxes), randomly initialised.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ssd_lite.priors import (SSD300_ASPECT_RATIOS, SSD300_FEATURE_MAP_SIZES, SSD300_SCALES,
                             boxes_per_location, default_boxes, prior_scales)

# Images enter the model in [0, 1]; the model standardises them itself with the ImageNet channel means
# and standard deviations (the usual choice for a VGG-style network), so callers never have to.
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

    forward(images (B, 3, H, W) in [0, 1]) -> loc (B, P, 4) offsets, conf (B, P, C) class scores (logits).
    """

    def __init__(self, features: nn.Module, feature_channels: Sequence[int], num_classes: int,
                 image_size: int, feature_map_sizes: Sequence[int], scales: Sequence[float],
                 aspect_ratios: Sequence[Sequence[float]], config: dict | None = None):
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
        # One 3x3 conv per map for the offsets (4 per box) and one for the class scores (C per box).
        self.loc_heads = nn.ModuleList(
            nn.Conv2d(c, k * 4, kernel_size=3, padding=1)
            for c, k in zip(feature_channels, self.boxes_per_location))
        self.conf_heads = nn.ModuleList(
            nn.Conv2d(c, k * num_classes, kernel_size=3, padding=1)
            for c, k in zip(feature_channels, self.boxes_per_location))
        # Buffers, not parameters: they move with .to(device) and are saved, but are never trained.
        self.register_buffer("priors", default_boxes(self.feature_map_sizes, self.scales, self.aspect_ratios))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

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
              aspect_ratios: Sequence[Sequence[float]] | None = None) -> SSD:
    """The course's default model: a compact BatchNorm backbone with m feature maps, sized for CPU training.

    image_size must be divisible by 2^len(widths) (128 with 6 stages: maps 16, 8, 4, 2). Scales follow the
    paper's equation from s_min to s_max (0.15-0.75: objects from ~20 to ~100 pixels of a 128 image);
    aspect ratios default to (2,) per map: 4 boxes per cell. The default widths were measured: 24-48-96
    early channels instead of 16-32-64 cost ~20% more time per step and gave a higher mAP in the same epochs.
    """
    num_stages = len(widths)
    if not 1 <= num_feature_maps <= num_stages:
        raise ValueError(f"num_feature_maps must be in 1..{num_stages}, got {num_feature_maps}")
    if image_size % 2 ** num_stages:
        raise ValueError(f"image_size must be divisible by 2^{num_stages} = {2 ** num_stages} "
                         f"(one halving per stage), got {image_size}")
    if aspect_ratios is None:
        aspect_ratios = [(2,)] * num_feature_maps
    feature_map_sizes = [image_size // 2 ** (i + 1) for i in range(num_stages)][-num_feature_maps:]
    config = dict(architecture="small_ssd", num_classes=num_classes, image_size=image_size,
                  widths=list(widths), num_feature_maps=num_feature_maps, s_min=s_min, s_max=s_max,
                  aspect_ratios=[list(r) for r in aspect_ratios])
    return SSD(SmallBackbone(widths, num_feature_maps), widths[-num_feature_maps:], num_classes, image_size,
               feature_map_sizes, prior_scales(num_feature_maps, s_min, s_max), aspect_ratios, config)


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

    def forward(self, x: Tensor) -> list[Tensor]:
        conv4_3 = self.up_to_conv4_3(x)
        maps = [self.conv4_3_norm(conv4_3)]
        x = self.up_to_conv7(conv4_3)
        maps.append(x)
        for layer in self.extras:
            x = layer(x)
            maps.append(x)
        return maps


def ssd300_vgg16(num_classes: int = 21) -> SSD:
    """The paper's SSD300: VGG16 base + extra layers, 6 maps, 8732 default boxes. Randomly initialised.

    No weights are downloaded; load your own with model.load_state_dict(torch.load(path)).
    """
    config = dict(architecture="ssd300_vgg16", num_classes=num_classes)
    return SSD(VGG16Features(), (512, 1024, 512, 256, 256, 256), num_classes, 300, SSD300_FEATURE_MAP_SIZES,
               SSD300_SCALES, SSD300_ASPECT_RATIOS, config)


def build_model(architecture: str, **settings) -> SSD:
    """Rebuild a model from its `model.config` (as saved in a checkpoint)."""
    if architecture == "small_ssd":
        return small_ssd(**settings)
    if architecture == "ssd300_vgg16":
        return ssd300_vgg16(**settings)
    raise ValueError(f"unknown architecture {architecture!r}: expected 'small_ssd' or 'ssd300_vgg16'")
