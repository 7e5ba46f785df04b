"""Resuming a run (ssd_lite.train --resume): a run stopped and continued is the run that never stopped.

Tiny CPU runs (16 shapes images of 64 px, the small model, 0 workers): 6 steps straight against 3 steps,
a stop (Ctrl-C, a periodic save, or a time limit), then the 3 remaining steps from the saved checkpoint.
"""
import random

import numpy as np
import pytest
import torch

from ssd_lite import cli, train
from ssd_lite.augment import train_transform
from ssd_lite.checkpoint import read_checkpoint, rng_states, restore_rng_states
from ssd_lite.data import CachedDataset
from ssd_lite.model import small_ssd
from ssd_lite.shapes import ShapesDataset

# A tiny run of the command line: 16 images of 64 px, batches of 4 (4 steps an epoch, so 6 steps cross an
# epoch boundary), the paper's full augmentation (every random draw must be replayed on resume).
TINY = ["--num-images", "16", "--image-size", "64", "--batch-size", "4", "--workers", "0", "--no-progress"]


def run(*args):
    return cli.run(train.main, [str(a) for a in args], prog="ssd_lite.train")


@pytest.fixture
def full_augmentation(monkeypatch):
    """The course recipe with the paper's augmentation, so that resuming must restore the random draws."""
    recipe = {**train.COURSE_RECIPE, "augmentation": dict(photometric=True, zoom_out=2.0, iou_crop=True, flip=True)}
    monkeypatch.setitem(train.RECIPES, "course", recipe)


def _assert_same_run(straight, resumed):
    assert len(straight["history"]["loss"]) == len(resumed["history"]["loss"]) == 6
    for key in ("loss", "loc_loss", "conf_loss", "lr"):
        np.testing.assert_allclose(resumed["history"][key], straight["history"][key], rtol=0, atol=1e-6)
    for name, value in straight["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert resumed["finished"] and resumed["steps_done"] == 6


def test_ctrl_c_then_resume_repeats_the_unbroken_run(tmp_path, monkeypatch, capsys, full_augmentation):
    assert run(*TINY, "--steps", "6", "--out", tmp_path / "straight.pt") == 0
    straight = read_checkpoint(tmp_path / "straight.pt")

    # Ctrl-C during the 4th step (its batch drawn already): the checkpoint must hold the state before it.
    real_step, calls = train.training_step, []

    def ctrl_c_in_step_4(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "training_step", ctrl_c_in_step_4)
    assert run(*TINY, "--steps", "6", "--out", tmp_path / "first.pt") == 130
    monkeypatch.setattr(train, "training_step", real_step)
    first = read_checkpoint(tmp_path / "first.pt")
    assert first["interrupted"] and first["steps_done"] == 3 and not first["finished"]
    assert "--resume" in capsys.readouterr().err

    torch.rand(5), random.random(), np.random.rand()  # the caller's own draws in between change nothing
    assert run("--resume", tmp_path / "first.pt", "--out", tmp_path / "resumed.pt", "--no-progress") == 0
    assert "trained 3 steps" in capsys.readouterr().out
    _assert_same_run(straight, read_checkpoint(tmp_path / "resumed.pt"))


def test_a_periodic_save_resumes_exactly_and_everything_loads_weights_only(tmp_path, monkeypatch, capsys,
                                                                           full_augmentation):
    assert run(*TINY, "--steps", "6", "--out", tmp_path / "straight.pt") == 0
    straight = read_checkpoint(tmp_path / "straight.pt")

    # Keep a copy of each periodic save (each replaces the file at --out).
    real_save, saves = train.save_checkpoint, []

    def save_and_copy(path, *args, **kwargs):
        saved = real_save(path, *args, **kwargs)
        copy = tmp_path / f"at_{saved['steps_done']}.pt"
        copy.write_bytes(path.read_bytes())
        saves.append(saved["steps_done"])
        return saved

    monkeypatch.setattr(train, "save_checkpoint", save_and_copy)
    assert run(*TINY, "--steps", "6", "--save-every", "2", "--out", tmp_path / "run.pt") == 0
    assert saves == [2, 4, 6]
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    _assert_same_run(straight, read_checkpoint(tmp_path / "run.pt"))  # saving changes nothing

    # Everything stored, optimiser and random generator states included, loads with weights_only=True.
    at_2 = torch.load(tmp_path / "at_2.pt", weights_only=True)
    assert set(at_2["resume"]) >= {"step", "optimiser", "rng", "seconds"} and at_2["resume"]["step"] == 2
    assert at_2["resume"]["rng"]["torch"].dtype == torch.uint8 and not at_2["finished"]

    # A mid-epoch checkpoint resumed to a new output: steps 3..6 as in the straight run.
    assert run("--resume", tmp_path / "at_2.pt", "--out", tmp_path / "from_2.pt", "--no-progress") == 0
    _assert_same_run(straight, read_checkpoint(tmp_path / "from_2.pt"))


def test_a_time_limited_session_of_a_run_in_steps_resumes_to_its_end(tmp_path, monkeypatch, capsys):
    """--resume with --time-budget on a run in steps: stop after the budget, then resume the rest."""
    assert run(*TINY, "--steps", "6", "--out", tmp_path / "straight.pt") == 0
    straight = read_checkpoint(tmp_path / "straight.pt")
    real_step, calls = train.training_step, []

    def ctrl_c_in_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train, "training_step", ctrl_c_in_step_2)
    assert run(*TINY, "--steps", "6", "--out", tmp_path / "a.pt") == 130
    monkeypatch.setattr(train, "training_step", real_step)
    # A tiny time budget: one more step, then stop, saved as not finished.
    assert run("--resume", tmp_path / "a.pt", "--time-budget", "1e-6", "--out", tmp_path / "b.pt", "--no-progress") == 0
    b = read_checkpoint(tmp_path / "b.pt")
    assert b["steps_done"] == 2 and not b["finished"]
    assert "continue it with --resume" in capsys.readouterr().out
    assert run("--resume", tmp_path / "b.pt", "--out", tmp_path / "c.pt", "--no-progress") == 0
    _assert_same_run(straight, read_checkpoint(tmp_path / "c.pt"))
    # A finished run has nothing left; a new total trains on.
    assert run("--resume", tmp_path / "c.pt", "--out", tmp_path / "d.pt") == 2
    assert "has finished its run (6 steps of 6)" in capsys.readouterr().err
    assert run("--resume", tmp_path / "c.pt", "--steps", "7", "--out", tmp_path / "d.pt", "--no-progress") == 0
    assert read_checkpoint(tmp_path / "d.pt")["steps_done"] == 7


def test_a_run_on_the_clock_is_stretched_by_a_new_time_budget(tmp_path, capsys):
    assert run(*TINY, "--time-budget", "0.5", "--out", tmp_path / "a.pt") == 0
    a = read_checkpoint(tmp_path / "a.pt")
    assert a["finished"] and a["time_budget"] == 0.5
    assert run("--resume", tmp_path / "a.pt", "--out", tmp_path / "b.pt") == 2
    assert "--time-budget SECONDS" in capsys.readouterr().err
    assert run("--resume", tmp_path / "a.pt", "--steps", "9", "--out", tmp_path / "b.pt") == 2
    assert "scheduled by the clock" in capsys.readouterr().err
    assert run("--resume", tmp_path / "a.pt", "--time-budget", "0.5", "--out", tmp_path / "b.pt", "--no-progress") == 0
    b = read_checkpoint(tmp_path / "b.pt")
    assert b["steps_done"] > a["steps_done"] and b["time_budget"] == pytest.approx(a["train_seconds"] + 0.5, abs=0.1)
    assert b["history"]["loss"][:a["steps_done"]] == a["history"]["loss"]


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run.pt"
    assert run(*TINY, "--steps", "2", "--out", path) == 0
    return path


@pytest.mark.parametrize("args, message", [
    (["--model", "ssd300_vgg16"], "--model ssd300_vgg16 does not match"),
    (["--lr", "0.5"], "--lr 0.5 does not match"),
    (["--batch-size", "8"], "--batch-size 8 does not match"),
    (["--seed", "3"], "--seed 3 does not match"),
    (["--loss", "focal"], "--loss focal does not match"),
    (["--recipe", "voc"], "--recipe voc does not match"),
    (["--image-size", "128"], "--image-size 128 does not match"),
    (["--num-images", "32"], "--num-images 32 does not match"),
])
def test_resume_refuses_another_run_before_any_work(tmp_path, capsys, monkeypatch, saved_run, args, message):
    monkeypatch.setattr(train, "prepare_run", lambda *a, **k: pytest.fail("work started before the checks"))
    assert run("--resume", saved_run, *args, "--out", tmp_path / "x.pt") == 2
    err = capsys.readouterr().err
    assert message in err and "a resumed run keeps its settings" in err and err.count("\n") == 1
    # Repeating the run's own values is fine.
    monkeypatch.setattr(train, "prepare_run", lambda *a, **k: (_ for _ in ()).throw(ValueError("reached the work")))
    assert run("--resume", saved_run, "--lr", "0.003", "--model", "default", "--steps", "4",
               "--out", tmp_path / "x.pt") == 2
    assert "reached the work" in capsys.readouterr().err


def test_resume_refuses_a_checkpoint_without_a_run_state(tmp_path, capsys):
    torch.manual_seed(0)
    from ssd_lite.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "plain.pt", small_ssd(6, image_size=64), ShapesDataset.class_names)
    assert run("--resume", tmp_path / "plain.pt", "--out", tmp_path / "x.pt") == 2
    assert "holds no training state to resume" in capsys.readouterr().err
    assert run("--resume", tmp_path / "missing.pt", "--out", tmp_path / "x.pt") == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_train_resume_state_continues_exactly():
    """The same at the level of `train`: the state from TrainingInterrupted continues the run exactly."""
    data = CachedDataset(ShapesDataset(16, image_size=64, seed=0), 64, train_transform(64))

    def model():
        torch.manual_seed(0)
        return small_ssd(6, image_size=64)

    straight = model()
    history = train.train(straight, data, steps=6, batch_size=4, num_workers=0, progress=False, seed=5)

    class StopAt:
        """Reads like the data set, until Ctrl-C at the first read of the 4th batch."""
        def __init__(self):
            self.reads = 0
        def __len__(self):
            return len(data)
        def __getitem__(self, index):
            self.reads += 1
            if self.reads == 13:
                raise KeyboardInterrupt
            return data[index]

    first = model()
    with pytest.raises(train.TrainingInterrupted) as stop:
        train.train(first, StopAt(), steps=6, batch_size=4, num_workers=0, progress=False, seed=5)
    assert stop.value.step == 3 and stop.value.state["step"] == 3
    second = model()
    second.load_state_dict(first.state_dict())
    resumed = train.train(second, data, steps=6, batch_size=4, num_workers=0, progress=False, seed=5,
                          resume=stop.value.state)
    np.testing.assert_allclose(resumed["loss"], history["loss"], rtol=0, atol=1e-6)
    for a, b in zip(straight.parameters(), second.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="in batches of 4, not 16 in batches of 8"):
        train.train(model(), data, steps=6, batch_size=8, progress=False, resume=stop.value.state)


def test_data_order_is_a_function_of_seed_and_epoch():
    batches = train.ShuffledBatches(10, 3, seed=7)
    assert len(batches) == 3
    epochs = [list(batches)]
    batches.start_at(3)
    epochs.append(list(batches))
    assert all(len(batch) == 3 for epoch in epochs for batch in epoch)
    assert len(set(sum(epochs[0], []))) == 9  # 9 different items of 10: the incomplete last batch is dropped
    assert epochs[0] != epochs[1]  # a new order each epoch
    batches.start_at(4)  # epoch 1, from its second batch: the same batches as above
    assert list(batches) == epochs[1][1:]
    assert train.ShuffledBatches(10, 3, seed=7).permutation(1) == batches.permutation(1)
    assert train.ShuffledBatches(10, 3, seed=8).permutation(1) != batches.permutation(1)
    assert list(train.ShuffledBatches(2, 3, seed=0))[0] in ([0, 1], [1, 0])  # fewer items than a batch


def test_rng_states_round_trip():
    states = rng_states()
    drawn = (torch.rand(4), random.random(), np.random.rand())
    restore_rng_states(states)
    assert torch.equal(torch.rand(4), drawn[0]) and random.random() == drawn[1] and np.random.rand() == drawn[2]
