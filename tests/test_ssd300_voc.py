"""From the course to the paper: SSD300 on Pascal VOC from the command line (issue 14).

--model ssd300_vgg16, several --data folders with --split and --classes voc, --backbone-weights
imagenet|PATH (torchvision's VGG16 layout, with the standardisation the weights expect), --recipe voc,
and detect/evaluate on the checkpoint. SSD300 takes seconds per step on a CPU: the runs here are one
step at batch 2, and the network never touches the internet (the download is replaced by a failure).
"""
import json
import os
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import VGG16_Weights

from ssd_lite import cli, detect, evaluate, train, train_cli
from ssd_lite.checkpoint import load_checkpoint, read_checkpoint
from ssd_lite.model import (IMAGENET_MEAN, IMAGENET_STD, VGG16_CONV_INDICES, load_vgg16_backbone, ssd300_vgg16,
                            vgg16_backbone_weights)
from ssd_lite.shapes import SHAPE_CLASS_NAMES, ShapesDataset
from ssd_lite.voc import VOC_CLASS_NAMES, write_voc

FEATURES_FILE = Path(VGG16_Weights.IMAGENET1K_FEATURES.url).name  # vgg16_features-amdegroot-88682ab5.pth


def run(program, *args):
    return cli.run(program.main, [str(a) for a in args], prog=program.__name__)


@pytest.fixture(scope="module")
def vgg16_state():
    """A torchvision VGG16's state dict (random weights: nothing is downloaded)."""
    torch.manual_seed(0)
    return torchvision.models.vgg16(weights=None).state_dict()


@pytest.fixture(scope="module")
def features_file(vgg16_state, tmp_path_factory):
    """The state dict of a torchvision VGG16's .features, saved as a file (keys "N.weight")."""
    path = tmp_path_factory.mktemp("weights") / "my_vgg16_features.pth"
    torch.save({key[len("features."):]: value for key, value in vgg16_state.items() if key.startswith("features.")},
               path)
    return path


@pytest.fixture(scope="module")
def voc_folders(tmp_path_factory):
    """Two small VOC folders of shapes, like VOC2007 and VOC2012: split trainval, some classes in one only."""
    root = tmp_path_factory.mktemp("voc")
    write_voc(ShapesDataset(3, image_size=96, seed=1), root / "VOC2007", split="trainval")
    write_voc(ShapesDataset(3, image_size=120, seed=2), root / "VOC2012", split="trainval", start_index=100)
    return root / "VOC2007", root / "VOC2012"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache, and a download that fails at once as it does without network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch_home" / "hub" / "checkpoints" / FEATURES_FILE


# ---------------------------------------------------------------- the VGG16 base from torchvision's weights

def _our_conv(model, index):
    """Our layer holding torchvision's features[index] (see ssd_lite.model.VGG16_CONV_INDICES)."""
    features = model.features
    return features.up_to_conv4_3[index] if index < 23 else features.up_to_conv7[index - 23]


def test_every_vgg16_conv_lands_in_its_layer(vgg16_state):
    torch.manual_seed(1)
    model = ssd300_vgg16(num_classes=3)
    conv7_before = model.features.up_to_conv7[10].weight.detach().clone()
    load_vgg16_backbone(model, vgg16_state)  # the whole VGG16's: its classifier is ignored
    for index in VGG16_CONV_INDICES:
        layer = _our_conv(model, index)
        assert torch.equal(layer.weight, vgg16_state[f"features.{index}.weight"]), index
        assert torch.equal(layer.bias, vgg16_state[f"features.{index}.bias"]), index
    assert torch.equal(model.features.up_to_conv7[10].weight, conv7_before)  # conv7: not a VGG16 layer
    # Cross-check with torchvision itself: its conv1_1 .. conv5_3 (with pool4) compute what ours do.
    reference = torchvision.models.vgg16(weights=None).features[:30].eval()
    reference.load_state_dict({k[len("features."):]: v for k, v in vgg16_state.items()
                               if k.startswith("features.") and int(k.split(".")[1]) < 30})
    images = torch.rand(2, 3, 64, 64)  # even sizes all the way down: pool3's ceil mode changes nothing
    with torch.no_grad():
        ours = model.features.up_to_conv7[:7](model.features.up_to_conv4_3(images))
        torch.testing.assert_close(ours, reference(images))


def test_a_features_file_loads_with_the_standardisation_of_its_weights(vgg16_state, features_file, tmp_path):
    state, mean, std = vgg16_backbone_weights(features_file)
    # Any other file name: IMAGENET1K_V1's standardisation, the ImageNet mean and std in [0, 1].
    assert (mean, std) == (pytest.approx(IMAGENET_MEAN), pytest.approx(IMAGENET_STD))
    model = ssd300_vgg16(num_classes=3, mean=mean, std=std)
    load_vgg16_backbone(model, state)
    assert torch.equal(_our_conv(model, 28).weight, vgg16_state["features.28.weight"])
    # A file named as torchvision's IMAGENET1K_FEATURES: the Caffe VGG16's inputs, 0-255 minus the mean.
    named = tmp_path / FEATURES_FILE
    os.symlink(features_file, named)
    _, mean, std = vgg16_backbone_weights(named)
    expected = VGG16_Weights.IMAGENET1K_FEATURES.transforms()
    assert mean == tuple(expected.mean) == pytest.approx((123 / 255, 117 / 255, 104 / 255), abs=1e-4)
    assert std == tuple(expected.std) == pytest.approx((1 / 255,) * 3)


def test_the_model_standardises_as_its_config_says_and_checkpoints_keep_it(tmp_path):
    mean, std = (0.48235, 0.45882, 0.40784), (1 / 255,) * 3
    model = ssd300_vgg16(num_classes=3, mean=mean, std=std).eval()
    assert model.config["mean"] == list(mean) and model.config["std"] == list(std)
    seen = []
    model.features.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    images = torch.rand(1, 3, 300, 300)
    with torch.no_grad():
        model(images)
    expected = (images - torch.tensor(mean).view(1, 3, 1, 1)) * 255
    torch.testing.assert_close(seen[0], expected)
    from ssd_lite.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "m.pt", model, ("background", "a", "b"))
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)
    assert "mean" not in ssd300_vgg16(num_classes=3).config  # the default needs no record
    with pytest.raises(ValueError, match="std finite and > 0"):
        ssd300_vgg16(num_classes=3, std=(0.0, 1.0, 1.0))


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update({"features.10.weight": torch.zeros(256, 128, 3, 1)}),
     r"'features.10.weight' has shape \(256, 128, 3, 1\), but SSD300's VGG16 needs \(256, 128, 3, 3\)"),
    (lambda s: s.pop("features.28.bias"), "no 'features.28.bias'"),
    (lambda s: s.update({"features.1.running_mean": torch.zeros(64)}), "'features.1.running_mean' is not a layer"),
])
def test_a_file_that_does_not_fit_is_named_with_its_key(vgg16_state, tmp_path, change, message):
    # The layout of a whole torchvision VGG16, with a small stand-in for its (ignored) classifier.
    state = {key: value for key, value in vgg16_state.items() if key.startswith("features.")}
    state["classifier.0.bias"] = torch.zeros(4096)
    change(state)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=message):
        vgg16_backbone_weights(path)
    model = ssd300_vgg16(num_classes=3)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        load_vgg16_backbone(model, state)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_imagenet_offline_fails_at_once_saying_where_to_put_the_file(offline, tmp_path, capsys, monkeypatch,
                                                                   voc_folders):
    with pytest.raises(FileNotFoundError) as error:
        vgg16_backbone_weights("imagenet")
    assert str(offline) in str(error.value) and VGG16_Weights.IMAGENET1K_FEATURES.url in str(error.value)
    # From the command line: one line, before any data is read.
    monkeypatch.setattr(train, "prepare_run", lambda *a, **k: pytest.fail("data prepared before the weights"))
    assert run(train, "--model", "ssd300_vgg16", "--backbone-weights", "imagenet", "--data", voc_folders[0],
               "--split", "trainval", "--out", tmp_path / "x.pt") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"put it at {offline}" in err


def test_imagenet_from_torch_hubs_cache(offline, features_file, vgg16_state):
    """With the file in torch hub's cache (put there by hand), 'imagenet' needs no network."""
    offline.parent.mkdir(parents=True)
    os.symlink(features_file, offline)
    state, mean, std = vgg16_backbone_weights("imagenet")
    expected = VGG16_Weights.IMAGENET1K_FEATURES.transforms()
    assert (mean, std) == (tuple(expected.mean), tuple(expected.std))
    assert torch.equal(state["0.weight"], vgg16_state["features.0.weight"])


# ---------------------------------------------------------------- the command line

def test_classes_voc_are_the_twenty_in_their_usual_order():
    assert train_cli.class_list("voc") == ("background", *VOC_CLASS_NAMES)
    assert VOC_CLASS_NAMES[:3] == ("aeroplane", "bicycle", "bird") and VOC_CLASS_NAMES[-1] == "tvmonitor"
    assert len(VOC_CLASS_NAMES) == 20 == len(set(VOC_CLASS_NAMES))


@pytest.mark.parametrize("args, message", [
    (["--model", "ssd300_vgg16", "--image-size", "256"], "--model ssd300_vgg16 takes 300x300 images"),
    (["--recipe", "voc"], "add --model ssd300_vgg16"),
    (["--backbone-weights", "imagenet"], "only applies to --model ssd300_vgg16"),
    (["--split", "trainval"], "--split only applies to --data"),
    (["--model", "resnet"], "argument --model: invalid choice"),
])
def test_flags_that_do_not_go_together_are_refused_first(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.setattr(train, "prepare_run", lambda *a, **k: pytest.fail("work started before the checks"))
    with pytest.raises(SystemExit) as exit_info:
        run(train, "--out", tmp_path / "x.pt", *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_recipe_voc_and_explicit_flags(voc_folders):
    voc07, voc12 = voc_folders
    base = ["--model", "ssd300_vgg16", "--data", voc07, "--data", voc12, "--split", "trainval", "--out", "x.pt"]
    settings = train_cli.settings_from_args(train_cli.parse_args([str(a) for a in [*base, "--recipe", "voc"]]))
    assert (settings["optimiser"], settings["lr"], settings["momentum"]) == ("sgd", 1e-3, 0.9)
    assert settings["weight_decay"] == 5e-4
    assert settings["batch_size"] == 32 and settings["steps"] == 120_000 and settings["time_budget"] is None
    assert settings["milestones"] == [pytest.approx(2 / 3), pytest.approx(5 / 6)] and settings["warmup"] < 0.01
    assert settings["augmentation"]["zoom_out"] == 4.0 and settings["augmentation"]["iou_crop"]
    assert settings["data"]["image_size"] == 300
    assert [folder["split"] for folder in settings["data"]["folders"]] == ["trainval", "trainval"]
    # Flags given override the recipe; a time budget replaces its 120k steps (the schedule follows the clock).
    settings = train_cli.settings_from_args(train_cli.parse_args(
        [str(a) for a in [*base, "--recipe", "voc", "--lr", "0.01", "--batch-size", "8", "--time-budget", "60"]]))
    assert (settings["lr"], settings["batch_size"], settings["steps"], settings["time_budget"]) == (0.01, 8, None, 60)
    # The lr of the voc recipe: warm-up, then 1, 0.1 and 0.01 of the peak.
    factor = lambda progress: train.learning_rate_factor(progress, settings["warmup"], settings["milestones"])
    assert factor(0.0) == pytest.approx(0.01) and factor(0.5) == 1.0
    assert factor(0.7) == pytest.approx(0.1) and factor(0.9) == pytest.approx(0.01)
    with pytest.raises(SystemExit):
        train_cli.parse_args([str(a) for a in [*base, "--split", "train", "--split", "val", "--split", "test"]])


def test_several_folders_merge_their_classes(voc_folders, tmp_path, capsys):
    """Two folders on the small model (fast): classes merged, --classes voc refused for shapes."""
    voc07, voc12 = voc_folders
    small = ["--image-size", "64", "--batch-size", "2", "--steps", "1", "--no-progress", "--split", "trainval"]
    assert run(train, "--data", voc07, "--data", voc12, *small, "--out", tmp_path / "a.pt") == 0
    saved = read_checkpoint(tmp_path / "a.pt")
    found = set()
    for folder in voc_folders:
        for xml in (folder / "Annotations").glob("*.xml"):
            found |= {line.strip()[6:-7] for line in xml.read_text().splitlines() if line.strip().startswith("<name>")}
    assert saved["class_names"] == ("background", *sorted(found)) and saved["data"]["num_images"] == 6
    assert [f["num_images"] for f in saved["data"]["folders"]] == [3, 3]
    assert run(train, "--data", voc07, "--classes", "voc", *small, "--out", tmp_path / "b.pt") == 2
    err = capsys.readouterr().err
    assert "unknown class" in err and "aeroplane" in err
    # Resuming refuses other data: a folder whose split lists other images.
    assert run(train, "--resume", tmp_path / "a.pt", "--data", voc12, "--data", voc07, "--steps", "2",
               "--out", tmp_path / "c.pt") == 2
    assert "lists other images than the run" in capsys.readouterr().err
    assert run(train, "--resume", tmp_path / "a.pt", "--classes", ",".join(SHAPE_CLASS_NAMES), "--steps", "2",
               "--out", tmp_path / "c.pt") == 2
    assert "a resumed run keeps its classes" in capsys.readouterr().err


def test_ssd300_voc_recipe_resume_detect_evaluate(voc_folders, features_file, tmp_path, capsys):
    """The issue's "done when", at batch 2 and one step a run: train, resume, detect, evaluate."""
    voc07, voc12 = voc_folders
    first, second = tmp_path / "x.pt", tmp_path / "y.pt"
    assert run(train, "--model", "ssd300_vgg16", "--data", voc07, "--data", voc12, "--split", "trainval",
               "--recipe", "voc", "--batch-size", "2", "--time-budget", "1e-6", "--backbone-weights", features_file,
               "--no-progress", "--out", first) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    model, saved = load_checkpoint(first)
    assert model.config["architecture"] == "ssd300_vgg16" and model.image_size == 300
    assert saved["recipe"] == "voc" and saved["optimiser"] == "sgd" and not saved["cache_images"]
    assert saved["backbone_weights"] == str(features_file) and saved["resume"]["optimiser"]["state"]

    assert run(train, "--resume", first, "--time-budget", "1e-6", "--no-progress", "--out", second) == 0
    resumed = read_checkpoint(second)
    assert resumed["steps_done"] == 2 and resumed["history"]["loss"][:1] == saved["history"]["loss"]
    assert resumed["model_config"] == saved["model_config"]

    out = tmp_path / "detections.json"
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (160, 90), (200, 120, 40)).save(images / "wide.png")
    assert run(detect, "--checkpoint", second, "--images", images, "--out", out, "--score-threshold", "0",
               "--top-k", "3", "--no-progress") == 0
    records = json.loads(out.read_text())
    assert len(records) == 3 and all(record["label"] in resumed["class_names"] for record in records)
    assert run(evaluate, "--checkpoint", second, "--data", voc12, "--split", "trainval") == 0
    assert "mAP" in capsys.readouterr().out
