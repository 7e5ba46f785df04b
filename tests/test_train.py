"""Tests of ssd_lite.train and ssd_lite.detect: the loop and both command lines (checkpoints and the
safety of the command lines: tests/test_checkpoint.py and tests/test_cli.py)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from ssd_lite.augment import eval_transform, train_transform
from ssd_lite.checkpoint import load_checkpoint, save_checkpoint
from ssd_lite.data import CachedDataset
from ssd_lite.detect import predict, predict_dataset
from ssd_lite.loss import multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import default_model, small_ssd
from ssd_lite.shapes import ShapesDataset
from ssd_lite.train import (NonFiniteLossError, TrainingInterrupted, default_settings, learning_rate_factor,
                            main, make_optimiser, prepare_run, train, train_default_model, training_step)
from ssd_lite.voc import write_voc

REPO = Path(__file__).resolve().parents[1]



def _tiny_data(num_images=16, image_size=64, seed=0, transform=None):
    return CachedDataset(ShapesDataset(num_images, image_size=image_size, seed=seed), image_size, transform)


def _tiny_model(seed=0):
    torch.manual_seed(seed)
    return small_ssd(6, image_size=64)


def test_loss_decreases_and_is_finite():
    data = _tiny_data()
    model = _tiny_model()
    history = train(model, data, epochs=12, batch_size=8, lr=3e-3, num_workers=0, progress=False)
    assert len(history["loss"]) == 24 and set(history) == {"loss", "loc_loss", "conf_loss", "lr"}
    losses = torch.tensor(history["loss"])
    assert torch.isfinite(losses).all()
    assert losses[-4:].mean() < 0.7 * losses[:4].mean()
    assert not model.training  # left in eval mode, ready to predict


@pytest.mark.parametrize("num_workers", [0, 1])
def test_same_seed_same_weights(num_workers):
    data = _tiny_data(8, transform=train_transform(64))
    weights = []
    for run in range(2):
        model = _tiny_model()
        torch.rand(run + 1)  # the caller's own random draws in between must not change the training
        train(model, data, epochs=2, batch_size=4, num_workers=num_workers, progress=False, seed=3)
        weights.append(model.state_dict())
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


def test_seed_matters():
    data = _tiny_data(8, transform=train_transform(64))
    weights = []
    for seed in (3, 4):
        model = _tiny_model()
        train(model, data, epochs=1, batch_size=4, num_workers=0, progress=False, seed=seed)
        weights.append(model.state_dict())
    assert not all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_time_budget_stops_on_time():
    started = time.perf_counter()
    history = train(_tiny_model(), _tiny_data(8), time_budget=1.0, batch_size=4, num_workers=0, progress=False)
    assert len(history["loss"]) >= 1 and time.perf_counter() - started < 10


def test_non_finite_loss_stops_with_a_clear_error():
    model = _tiny_model()
    with torch.no_grad():
        model.conf_heads[0].bias.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="step 1 .*bad box"):
        train(model, _tiny_data(8), epochs=1, batch_size=4, num_workers=0, progress=False)


def test_schedule_and_argument_checks():
    assert learning_rate_factor(0.0) == pytest.approx(0.01)
    assert learning_rate_factor(0.05) == pytest.approx(1.0)
    assert learning_rate_factor(1.0) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="exactly one"):
        train(_tiny_model(), _tiny_data(4), progress=False)


@pytest.mark.parametrize("bad, message", [
    (dict(lr=0.0), "lr must be a finite number > 0"), (dict(lr=float("nan")), "lr must be"),
    (dict(batch_size=0), "batch_size must be"), (dict(epochs=0), "epochs must be"),
    (dict(epochs=None, time_budget=float("inf")), "time_budget must be"), (dict(num_workers=-1), "num_workers"),
    (dict(warmup=1.0), "warmup"), (dict(weight_decay=-1.0), "weight_decay")])
def test_train_checks_its_arguments_before_any_step(bad, message):
    model = _tiny_model()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        train(model, _tiny_data(4), **{"epochs": 1, **bad}, progress=False)
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())


def test_training_step_is_match_forward_loss_update():
    """The printed step equals matching, the forward pass, multibox_loss and one optimiser step by hand."""
    data = _tiny_data(4)
    images = torch.stack([data[i][0] for i in range(4)])
    targets = [data[i][1] for i in range(4)]
    models = [_tiny_model().train(), _tiny_model().train()]
    optimisers = [make_optimiser(model, 1e-3, 1e-4) for model in models]
    loc_loss, conf_loss = training_step(models[0], optimisers[0], images, targets)

    matched = [match(t["boxes"], t["labels"], models[1].priors) for t in targets]
    expected = multibox_loss(*models[1](images), torch.stack([m[0] for m in matched]),
                             torch.stack([m[1] for m in matched]))
    optimisers[1].zero_grad()
    sum(expected).backward()
    optimisers[1].step()
    assert torch.allclose(loc_loss, expected[0]) and torch.allclose(conf_loss, expected[1])
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b)


def test_ctrl_c_keeps_the_steps_trained_so_far():
    class StopAfter(torch.utils.data.Dataset):
        """Reads like a data set, until the user presses Ctrl-C during its 9th read."""
        def __init__(self, data):
            self.data, self.reads = data, 0
        def __len__(self):
            return len(self.data)
        def __getitem__(self, index):
            self.reads += 1
            if self.reads == 9:
                raise KeyboardInterrupt
            return self.data[index]

    model = _tiny_model()
    before = model.conf_heads[0].weight.detach().clone()
    with pytest.raises(TrainingInterrupted) as stop:
        train(model, StopAfter(_tiny_data(8)), epochs=5, batch_size=4, num_workers=0, progress=False)
    assert isinstance(stop.value, KeyboardInterrupt)  # code that catches Ctrl-C still does
    assert stop.value.step == 2 and len(stop.value.history["loss"]) == 2
    assert not torch.equal(before, model.conf_heads[0].weight) and not model.training


def test_train_default_model_reuses_a_matching_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = default_model(len(ShapesDataset.class_names)).eval()
    path = tmp_path / "default.pt"
    save_checkpoint(path, model, ShapesDataset.class_names, **default_settings())
    loaded, checkpoint = train_default_model(path, progress=False)  # must not train: settings match
    assert checkpoint["data"]["held_out_seed"] != checkpoint["data"]["seed"]
    assert torch.equal(loaded.conf_heads[0].weight, model.conf_heads[0].weight)


def test_default_run_draws_the_shapes_at_128_and_trains_the_model_at_192():
    settings = default_settings()
    settings["data"]["num_images"] = 3
    model, dataset, _ = prepare_run(settings, progress=False)
    assert model.image_size == 192 and settings["data"]["draw_size"] == 128
    drawn = ShapesDataset(3, image_size=128, seed=settings["data"]["seed"])
    for cached, (image, target) in zip(dataset.images, drawn):
        enlarged, _ = eval_transform(192)(image, target)
        assert cached.shape == (3, 192, 192)
        assert (cached.float() / 255 - enlarged).abs().max() <= 0.5 / 255 + 1e-6  # uint8 rounding only
    image, _ = dataset[0]  # augmented on the way out, still the model's size
    assert image.shape == (3, 192, 192)


def test_predict_any_image_size():
    model = _tiny_model().eval()
    found = predict(model, [torch.rand(3, 50, 80), torch.rand(3, 64, 64)], score_threshold=0.0)
    assert len(found) == 2
    for image in found:
        assert set(image) == {"boxes", "scores", "labels"}
        assert image["boxes"].shape[1] == 4 and ((image["boxes"] >= 0) & (image["boxes"] <= 1)).all()
    detections, targets = predict_dataset(model, ShapesDataset(3, image_size=96, seed=5), batch_size=2)
    assert len(detections) == len(targets) == 3


def test_command_line_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--time-budget" in out and "--data" in out and "--classes" in out


def test_command_lines(tmp_path):
    """train (shapes, subprocess) -> detect (subprocess) -> JSON in pixels; train --data (VOC, in-process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors: one thread is faster (see one_thread)
    run = lambda *args: subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                                       timeout=240, env=env)
    checkpoint = tmp_path / "model.pt"
    result = run("-m", "ssd_lite.train", "--epochs", "1", "--num-images", "8", "--image-size", "64",
                 "--batch-size", "4", "--no-progress", "--out", str(checkpoint))
    assert result.returncode == 0, result.stderr
    assert checkpoint.exists()

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (200, 120), (30, 200, 40)).save(images / "wide.png")
    Image.new("RGB", (90, 150), (200, 30, 40)).save(images / "tall.jpg")
    out = tmp_path / "detections.json"
    result = run("-m", "ssd_lite.detect", "--checkpoint", str(checkpoint), "--images", str(images),
                 "--out", str(out), "--score-threshold", "0.0", "--top-k", "5")
    assert result.returncode == 0, result.stderr
    records = json.loads(out.read_text())
    assert len(records) == 10  # 5 per image with a threshold of 0
    sizes = {"wide.png": (200, 120), "tall.jpg": (90, 150)}
    for record in records:
        assert set(record) == {"image", "label", "score", "box"}
        assert record["label"] in ShapesDataset.class_names[1:]
        width, height = sizes[record["image"]]
        x_min, y_min, x_max, y_max = record["box"]
        assert 0 <= x_min <= x_max <= width and 0 <= y_min <= y_max <= height

    # A VOC folder (shapes of another size and seed), classes given and inferred.
    voc = tmp_path / "voc"
    write_voc(ShapesDataset(6, image_size=80, seed=7), voc, split="train")
    main(["--data", str(voc), "--classes", "ellipse,rectangle,triangle,star,cross", "--epochs", "1",
          "--image-size", "64", "--batch-size", "4", "--no-progress", "--workers", "0",
          "--out", str(tmp_path / "voc.pt")])
    _, saved = load_checkpoint(tmp_path / "voc.pt")
    assert saved["class_names"] == ShapesDataset.class_names
    assert saved["data"]["kind"] == "voc" and saved["data"]["num_images"] == 6
