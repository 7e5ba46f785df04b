"""The command lines with careless hands: flags checked before any work, one-line errors, no lost files.

Most tests call each program's `main` through `ssd_lite.cli.run` in this process (what `python -m ...`
runs), so they take milliseconds; the slow paths (generation, training) must never be reached.
"""
import json
import time
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image

from ssd_lite import cli, detect, distributed, evaluate, train
from ssd_lite.checkpoint import save_checkpoint
from ssd_lite.device import THREADS_VARIABLE, choose_num_threads, pick_device
from ssd_lite.model import small_ssd
from ssd_lite.shapes import SHAPE_CLASS_NAMES

REPO = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("background", *SHAPE_CLASS_NAMES)


def run(program, *args):
    return cli.run(program.main, [str(a) for a in args], prog=program.__name__)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, small_ssd(len(CLASS_NAMES), image_size=64), CLASS_NAMES,
                    data={"kind": "shapes", "seed": 0, "held_out_seed": 1000, "held_out_num_images": 4})
    return path


@pytest.fixture
def never_generate(monkeypatch):
    """Fail the test if a program starts making training data: every check must come before that."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")
    monkeypatch.setattr(train, "prepare_run", forbidden)
    monkeypatch.setattr(evaluate, "predict_dataset", forbidden, raising=False)


# ---------------------------------------------------------------- flags checked before any work

@pytest.mark.parametrize("args, message", [
    (["--device", "nonsense"], "argument --device: unknown device 'nonsense'"),
    (["--lr", "0"], "argument --lr: must be a finite number > 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["--workers", "-1"], "argument --workers: must be >= 0"),
    (["--time-budget", "-5"], "argument --time-budget: must be a finite number > 0"),
    (["--epochs", "0"], "argument --epochs: must be >= 1"),
    (["--image-size", "100"], "argument --image-size: must be a multiple of 64"),
    (["--num-images", "0"], "argument --num-images: must be >= 1"),
    (["--threads", "0"], "argument --threads: must be >= 1"),
    (["--data", "/no/such/folder"], "--data must be a VOC folder"),
])
def test_train_flags_are_checked_first(tmp_path, capsys, never_generate, args, message):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        run(train, "--out", tmp_path / "m.pt", *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("classes, message", [
    ("cat,dog,cat", "names cat more than once"), ("background,cat", "must not name 'background'"),
    ("Background,cat", "must not name 'background'"), ("", "needs at least one class name"),
    (" , ", "needs at least one class name"), ("cat,,dog", "has an empty name")])
def test_bad_class_lists_are_refused(tmp_path, capsys, never_generate, classes, message):
    with pytest.raises(SystemExit) as exit_info:
        run(train, "--out", tmp_path / "m.pt", "--data", tmp_path, "--classes", classes)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--score-threshold", "2"], "argument --score-threshold: must be a number in [0, 1]"),
    (["--score-threshold", "nan"], "argument --score-threshold: must be a number in [0, 1]"),
    (["--iou-threshold", "-0.1"], "argument --iou-threshold: must be a number in [0, 1]"),
    (["--top-k", "0"], "argument --top-k: must be >= 1"),
    (["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    (["--device", "cuda:99" if torch.cuda.is_available() else "cuda"], "argument --device:"),
])
def test_detect_flags_are_checked_first(tmp_path, capsys, checkpoint, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run(detect, "--checkpoint", checkpoint, "--images", tmp_path, "--out", tmp_path / "d.json", *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [(["--num-images", "0"], "argument --num-images: must be >= 1"),
                                           (["--batch-size", "0"], "argument --batch-size: must be >= 1")])
def test_evaluate_flags_are_checked_first(capsys, checkpoint, never_generate, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run(evaluate, "--checkpoint", checkpoint, *args)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_evaluate_takes_num_images_as_given(capsys, checkpoint):
    assert run(evaluate, "--checkpoint", checkpoint, "--num-images", "3", "--batch-size", "2") == 0
    assert "images: 3," in capsys.readouterr().out


# ---------------------------------------------------------------- existing files and unwritable paths

def test_train_refuses_to_overwrite_a_file_that_is_not_a_checkpoint(tmp_path, capsys, never_generate):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    assert run(train, "--out", notes) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt exists and is not an ssd_lite checkpoint" in err
    assert notes.read_text() == "my notes"


def test_train_output_folder_or_impossible_path_fails_before_training(tmp_path, capsys, never_generate):
    assert run(train, "--out", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert run(train, "--out", tmp_path / "file" / "model.pt") == 2
    assert "cannot create the folder" in capsys.readouterr().err


def test_train_says_when_it_replaces_a_checkpoint(tmp_path, capsys, checkpoint, monkeypatch):
    out = tmp_path / "model.pt"
    out.write_bytes(checkpoint.read_bytes())
    monkeypatch.setattr(train, "prepare_run", lambda *a, **k: (_ for _ in ()).throw(ValueError("stop here")))
    assert run(train, "--out", out, "--no-progress") == 2
    assert f"{out} is an ssd_lite checkpoint; it will be replaced" in capsys.readouterr().out


def test_train_ctrl_c_saves_the_steps_trained_so_far(tmp_path, capsys, monkeypatch):
    real_train = train.train

    def train_then_ctrl_c(model, dataset, **kwargs):
        history = real_train(model, dataset, **{**kwargs, "epochs": 1, "time_budget": None})
        raise train.TrainingInterrupted(len(history["loss"]), history)

    monkeypatch.setattr(train, "train", train_then_ctrl_c)
    out = tmp_path / "model.pt"
    args = ["--num-images", "8", "--image-size", "64", "--batch-size", "4", "--no-progress", "--out", out]
    assert run(train, *args) == 130
    assert "interrupted after 2 steps; saved them" in capsys.readouterr().err
    saved = torch.load(out, weights_only=True)
    assert saved["interrupted"] is True and saved["steps_done"] == 2 and len(saved["history"]["loss"]) == 2

    out.unlink()
    assert run(train, *args, "--no-save-on-interrupt") == 130
    assert "nothing saved" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------- torchrun, GPUs: bad setups refused before any work

TORCHRUN_ENVIRONMENT = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")
EVERY_GPU_FLAG_ON_THE_CPU = [
    ({}, ["--amp"], "--amp (mixed precision) is for CUDA GPUs, but this run trains on cpu"),
    ({}, ["--sync-bn"], "SyncBatchNorm (--sync-bn) works on CUDA GPUs only"),
    ({}, ["--backend", "nccl"], "the NCCL backend was asked for, but torch sees no CUDA GPU on this machine"),
    (TORCHRUN_ENVIRONMENT, ["--backend", "nccl"], "the NCCL backend was asked for, but torch sees no CUDA GPU"),
]


@pytest.fixture
def existing_run(tmp_path, checkpoint, monkeypatch):
    """A machine without GPUs, started without torchrun, where --out names an earlier checkpoint."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "model.pt"
    out.write_bytes(checkpoint.read_bytes())
    return out


def _assert_refused_in_one_paragraph(capsys, out, original, message):
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("ssd_lite.train: error: ")
    assert out.read_bytes() == original and [path.name for path in out.parent.iterdir()] == [out.name]
    assert not distributed.is_distributed()


@pytest.mark.parametrize("environment, args, message", [
    ({"RANK": "0"}, [], "only part of the launcher's environment: RANK set, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, "
                        "MASTER_PORT missing"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, [], "MASTER_ADDR, MASTER_PORT missing"),
    (dict(TORCHRUN_ENVIRONMENT, RANK="1"), [], "RANK=1 and WORLD_SIZE=1 do not fit"),
    *EVERY_GPU_FLAG_ON_THE_CPU,
])
def test_train_refuses_bad_parallel_setups_before_any_work(capsys, never_generate, existing_run, monkeypatch,
                                                           environment, args, message):
    """torchrun's environment in part, NCCL or a GPU-only flag without GPUs: one paragraph, exit 2, the
    earlier checkpoint untouched, no process group joined."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    original = existing_run.read_bytes()
    assert run(train, "--no-progress", "--out", existing_run, *args) == 2
    _assert_refused_in_one_paragraph(capsys, existing_run, original, message)


@pytest.mark.parametrize("args, processes, message", [
    (["--batch-size", "3"], 2, "a batch of 3 images does not split evenly over 2 processes"),
    ([], 3, "a batch of 16 images does not split evenly over 3 processes (16 / 3 is not a whole number). The batch "
            "size is the whole batch, shared by all processes: use a multiple of 3, such as 15 or 18"),
])
def test_train_refuses_a_batch_the_processes_cannot_share(capsys, never_generate, existing_run, monkeypatch,
                                                          args, processes, message):
    """Under torchrun every process checks this before any work (the real 2-process run is in
    tests/test_train_ddp.py); here the group's size is faked."""
    monkeypatch.setattr(distributed, "world_size", lambda: processes)
    original = existing_run.read_bytes()
    assert run(train, "--no-progress", "--out", existing_run, *args) == 2
    _assert_refused_in_one_paragraph(capsys, existing_run, original, message)


def _image_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (200, 120), (30, 200, 40)).save(images / "a.png")
    (images / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")  # truncated
    Image.new("RGB", (90, 150), (200, 30, 40)).save(images / "c.jpg")
    (images / "._c.jpg").write_bytes(b"\x00\x05\x16\x07 macOS AppleDouble metadata")
    return images


def test_detect_skips_and_lists_unreadable_images(tmp_path, capsys, checkpoint):
    out = tmp_path / "detections.json"
    code = run(detect, "--checkpoint", checkpoint, "--images", _image_folder(tmp_path), "--out", out,
               "--score-threshold", "0", "--top-k", "2", "--batch-size", "2", "--no-progress")
    captured = capsys.readouterr()
    assert code == 1  # not all images were read
    assert "skipped 1 of 3 images" in captured.err and "b.jpg: cannot read the image" in captured.err
    assert "1 hidden files" in captured.out
    records = json.loads(out.read_text())
    assert sorted({r["image"] for r in records}) == ["a.png", "c.jpg"] and len(records) == 4


def test_detect_checks_its_output_before_the_first_image(tmp_path, capsys, checkpoint, monkeypatch):
    monkeypatch.setattr(detect, "load_image", lambda path: pytest.fail("read an image before checking --out"))
    images = _image_folder(tmp_path)
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "settings"}')
    assert run(detect, "--checkpoint", checkpoint, "--images", images, "--out", notes) == 2
    assert "is not a detections file written by ssd_lite.detect" in capsys.readouterr().err
    assert notes.read_text() == '{"my": "settings"}'
    assert run(detect, "--checkpoint", checkpoint, "--images", images, "--out", tmp_path) == 2
    assert "is a folder" in capsys.readouterr().err


def test_detect_batches_give_the_same_detections(checkpoint):
    model, saved = detect.load_checkpoint(checkpoint)
    files, _ = detect.list_images(REPO / "data" / "photos" / "JPEGImages")
    one, _ = detect.detect_folder(model, files, saved["class_names"], 0.05, 0.45, 20, batch_size=1)
    batched, _ = detect.detect_folder(model, files, saved["class_names"], 0.05, 0.45, 20, batch_size=4)
    assert [r["image"] for r in one] == [r["image"] for r in batched]
    for a, b in zip(one, batched):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["box"] == pytest.approx(b["box"], abs=0.05)


# ---------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("make_file, message", [
    (lambda p: None, "no checkpoint at"),
    (lambda p: p.write_text("not a checkpoint"), "is not a readable checkpoint"),
])
def test_user_errors_are_one_line(tmp_path, capsys, make_file, message):
    path = tmp_path / "model.pt"
    make_file(path)
    (tmp_path / "images").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "x.png")
    assert run(detect, "--checkpoint", path, "--images", tmp_path / "images", "--out", tmp_path / "d.json") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssd_lite.detect: error: ") and message in err
    assert str(path) in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "images" / "x.png")
    assert run(detect, "--checkpoint", tmp_path / "missing.pt", "--images", tmp_path / "images",
               "--out", tmp_path / "d.json", "--debug") == 2
    assert "Traceback" in capsys.readouterr().err


def test_real_bugs_keep_their_traceback(monkeypatch):
    def buggy(argv):
        raise ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        cli.run(buggy, [])


# ---------------------------------------------------------------- devices and threads

def test_pick_device(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        pick_device("gpu0")
    with pytest.raises(ValueError, match="not supported"):
        pick_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")


def test_threads_follow_the_free_cores(monkeypatch):
    import ssd_lite.device as device
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    monkeypatch.setattr(device, "TORCH_DEFAULT_THREADS", 8)
    monkeypatch.setattr(device.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(device.os, "getloadavg", lambda: (0.1, 0.0, 0.0))
    assert choose_num_threads() == 8  # an idle machine: one per core
    monkeypatch.setattr(device.os, "getloadavg", lambda: (5.2, 0.0, 0.0))
    assert choose_num_threads() == 3  # five cores busy elsewhere
    monkeypatch.setattr(device.os, "getloadavg", lambda: (30.0, 0.0, 0.0))
    assert choose_num_threads() == 1  # never fewer than one
    assert choose_num_threads(4) == 4  # asked for: as asked
    monkeypatch.setenv(THREADS_VARIABLE, "2")
    assert choose_num_threads() == 2
    monkeypatch.setenv(THREADS_VARIABLE, "two")
    with pytest.raises(ValueError, match="SSD_LITE_THREADS='two' is not a whole number"):
        choose_num_threads()


# ---------------------------------------------------------------- the test command itself

def _pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_notebook_cells_have_a_deliberate_timeout_with_margin():
    """Lesson 06's training cell was measured at 1,917 s on a busy machine: nbval's default 2,000 s is no margin."""
    options = _pyproject()["tool"]["pytest"]["ini_options"]["addopts"].split()
    timeouts = [int(o.split("=", 1)[1]) for o in options if o.startswith("--nbval-cell-timeout=")]
    assert timeouts and timeouts[0] >= 3600


def test_the_test_extra_installs_what_pytest_needs():
    """pytest's addopts name nbval's flags: a pyproject-only install (`pip install -e .[test]`) must bring it."""
    test_extra = " ".join(_pyproject()["project"]["optional-dependencies"]["test"])
    for needed in ("pytest", "nbval", "pycocotools", "ipykernel"):
        assert needed in test_extra
    requirements = (REPO / "requirements.txt").read_text()
    assert "-e .[test" in requirements
