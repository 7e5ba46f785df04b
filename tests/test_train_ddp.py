"""ssd_lite.train under torchrun: several processes train as DistributedDataParallel (CPU, gloo).

- The command line, started by torchrun with 2 CPU processes, trains, saves one checkpoint (process 0
  alone writes) and resumes it (the done-when test of issue 15).
- `train` itself in 2 processes (torch.multiprocessing, the environment torchrun would set): each process
  trains on its half of every batch, and with BatchNorm held fixed the weights equal one process's on the
  whole batch. BatchNorm in training mode is the one real difference between 1 and 2 processes: each
  process normalises with the statistics of its own images (SyncBatchNorm would remove it, but has no CPU
  version), so the command-line test only asks the losses to be close, while this test fixes BatchNorm to
  show that everything else (the batch split, the global N, the logged loss, resuming, a schedule on the
  clock, a NaN) is exact.
Bad setups of the command line are in tests/test_cli.py.
"""
import copy
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssd_lite import cli, distributed, train, train_cli
from ssd_lite.checkpoint import load_checkpoint, read_checkpoint
from ssd_lite.data import CachedDataset
from ssd_lite.loss import multibox_loss
from ssd_lite.model import small_ssd
from ssd_lite.shapes import ShapesDataset

from two_processes import free_port, run_in_two_processes  # tests/two_processes.py

REPO = Path(__file__).resolve().parents[1]
TINY = ["--num-images", "8", "--image-size", "64", "--batch-size", "4", "--no-progress"]
# SGD rather than the course's AdamW: Adam divides each update by the gradient's running size, which
# magnifies rounding differences of near-zero gradients; SGD keeps them as small as they are.
RUN = dict(batch_size=4, optimiser_name="sgd", momentum=0.9, lr=0.01, num_workers=0, progress=False, seed=0)


def _torchrun(*args, timeout=240):
    """`torchrun --standalone --nproc_per_node=2 -m ssd_lite.train ARGS` on the CPU, one thread each."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "ssd_lite.train", "--device", "cpu", *map(str, args)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in distributed.LAUNCH_VARIABLES:
        environment.pop(name, None)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=environment)


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory):
    """One 2-process torchrun run of 2 steps (8 images, batches of 4): (result, its folder)."""
    folder = tmp_path_factory.mktemp("torchrun")
    return _torchrun(*TINY, "--epochs", "1", "--out", folder / "ddp.pt"), folder


def test_torchrun_two_cpu_processes_train_and_save_one_checkpoint(torchrun_run):
    result, folder = torchrun_run
    assert result.returncode == 0, result.stderr
    assert "training on cpu, 1 CPU thread(s), 2 processes (DistributedDataParallel, gloo)" in result.stdout
    assert result.stdout.count("trained 2 steps") == 1  # process 0 alone speaks
    assert sorted(path.name for path in folder.iterdir()) == ["ddp.pt"]  # one checkpoint, no temporary file
    model, checkpoint = load_checkpoint(folder / "ddp.pt")  # loads (weights only) into the plain model
    assert checkpoint["world_size"] == 2 and checkpoint["finished"] and checkpoint["steps_done"] == 2
    assert len(checkpoint["resume"]["rng_per_process"]) == 2
    assert all(math.isfinite(loss) for loss in checkpoint["history"]["loss"])


def test_torchrun_losses_are_close_to_one_process(torchrun_run, tmp_path):
    """The same global batches, split over 2 processes: the first step starts from the same weights, and
    its loss differs only by BatchNorm's per-process statistics and the augmentation's random draws
    (measured: 1.6% at step 1, 0.6% at step 2)."""
    _, folder = torchrun_run
    assert cli.run(train.main, [*TINY, "--epochs", "1", "--out", str(tmp_path / "one.pt")]) == 0
    one, two = read_checkpoint(tmp_path / "one.pt"), read_checkpoint(folder / "ddp.pt")
    assert two["history"]["lr"] == one["history"]["lr"]
    for key in ("loss", "loc_loss", "conf_loss"):
        for two_value, one_value in zip(two["history"][key], one["history"][key]):
            assert two_value == pytest.approx(one_value, rel=0.1), key


def test_torchrun_resumes_a_run(torchrun_run, tmp_path):
    """--resume under torchrun: every process reads the checkpoint, process 0 replaces it."""
    _, folder = torchrun_run
    out = tmp_path / "ddp.pt"
    out.write_bytes((folder / "ddp.pt").read_bytes())
    result = _torchrun("--resume", out, "--steps", "3", "--no-progress", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stdout and "trained 1 steps" in result.stdout
    assert "other random augmentations" not in result.stdout  # each process got its own generators back
    checkpoint = read_checkpoint(out)
    assert checkpoint["steps_done"] == 3 and len(checkpoint["history"]["loss"]) == 3
    assert checkpoint["history"]["loss"][:2] == read_checkpoint(folder / "ddp.pt")["history"]["loss"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ddp.pt"]


# ---------------------------------------------------------------------------------------------------
# `train` in 2 processes against 1, with BatchNorm held fixed.

class Recorded(torch.utils.data.Dataset):
    """A data set that remembers which items were read, in order."""

    def __init__(self, data):
        self.data, self.reads = data, []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads.append(index)
        return self.data[index]


def _data(num_images=8):
    """Shapes without augmentation: each process then sees exactly the pixels one process would."""
    return Recorded(CachedDataset(ShapesDataset(num_images, image_size=64, seed=0), 64))


def _model():
    """The seeded small model, its BatchNorm layers kept in eval mode (a fixed per-channel affine map,
    still trained) even while `train` puts the rest in training mode."""
    torch.manual_seed(0)
    model = small_ssd(6, image_size=64)

    def train_mode(mode=True):
        torch.nn.Module.train(model, mode)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()
        return model

    model.train = train_mode
    return model


def _weights(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _runs():
    """The runs compared between 1 and 2 processes (each process calls this)."""
    results = {}
    data, unbroken, at_2 = _data(), _model(), {}

    def keep(state, final):  # the periodic save: the state and weights after step 2
        if not final:
            at_2.update(state=copy.deepcopy(state), weights=_weights(unbroken))

    history = train.train(unbroken, data, steps=4, save_every=2, save=keep, **RUN)
    results["unbroken"] = dict(history=history, weights=_weights(unbroken), reads=data.reads)
    resumed = _model()
    resumed.load_state_dict(at_2["weights"])
    history = train.train(resumed, _data(), steps=4, resume=at_2["state"], **RUN)
    results["resumed"] = dict(history=history, weights=_weights(resumed), state=at_2["state"])
    clock = _model()
    history = train.train(clock, _data(), time_budget=1.0, **RUN)
    results["clock"] = dict(history=history, weights=_weights(clock))
    return results


def _worker(rank, port, out_path):
    """One of the two processes torchrun would start: its environment, then the runs."""
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.init(device="cpu")
    results = _runs()
    # The weights download: process 0 first, the others once it is done.
    results["loaded at"] = train_cli._process_0_first(lambda: (time.sleep(0.2 * (rank == 0)), time.monotonic())[1])
    try:  # 3 images cannot be shared by 2 processes: refused before any step
        train.train(_model(), _data(3), steps=1, **RUN)
    except ValueError as error:
        results["3 images"] = str(error)

    def nan_in_process_1(loc_pred, conf_pred, loc_targets, labels):
        loc_loss, conf_loss = multibox_loss(loc_pred, conf_pred, loc_targets, labels)
        return loc_loss * (math.nan if rank == 1 else 1.0), conf_loss

    try:  # without agreeing, process 0 would wait forever for process 1's gradients
        train.train(_model(), _data(), steps=2, objective=nan_in_process_1, **RUN)
    except train.NonFiniteLossError as error:
        results["nan"] = str(error)
    torch.save(results, f"{out_path}.{rank}")
    distributed.cleanup()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out_path = tmp_path_factory.mktemp("train_ddp") / "results"
    return run_in_two_processes(_worker, (free_port(), str(out_path)), out_path, "training", weights_only=False)


@pytest.fixture(scope="module")
def one_process():
    for name in distributed.LAUNCH_VARIABLES:
        assert name not in os.environ
    return _runs()


def test_each_process_trains_on_its_half_of_every_batch(two_processes, one_process):
    reads = [rank["unbroken"]["reads"] for rank in two_processes]
    whole = one_process["unbroken"]["reads"]
    assert len(whole) == 4 * 4 and len(reads[0]) == len(reads[1]) == 4 * 2
    for step in range(4):
        assert reads[0][2 * step:2 * step + 2] + reads[1][2 * step:2 * step + 2] == whole[4 * step:4 * step + 4]


def test_two_processes_train_like_one(two_processes, one_process):
    """Same logged losses (the whole batch's, with the global N) and same weights after 4 SGD steps."""
    expected = one_process["unbroken"]
    for rank in two_processes:
        for key in ("loss", "loc_loss", "conf_loss"):
            torch.testing.assert_close(torch.tensor(rank["unbroken"]["history"][key]),
                                       torch.tensor(expected["history"][key]), rtol=1e-5, atol=1e-5)
        assert rank["unbroken"]["history"]["lr"] == expected["history"]["lr"]
        for name, value in expected["weights"].items():
            torch.testing.assert_close(rank["unbroken"]["weights"][name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_resuming_in_two_processes_repeats_the_unbroken_run(two_processes):
    for rank in two_processes:
        assert len(rank["resumed"]["state"]["rng_per_process"]) == 2
        assert rank["resumed"]["history"] == rank["unbroken"]["history"]
        for name, value in rank["unbroken"]["weights"].items():
            assert torch.equal(rank["resumed"]["weights"][name], value), name


def test_processes_agree_on_the_clock(two_processes):
    """With --time-budget, the lr follows the clock: both processes must read the same one, set the same
    lr and stop after the same step, or their weights drift apart (or one waits forever)."""
    first, second = (rank["clock"] for rank in two_processes)
    assert len(first["history"]["lr"]) >= 1 and first["history"] == second["history"]
    for name, value in first["weights"].items():
        assert torch.equal(second["weights"][name], value), name


def test_process_0_loads_first(two_processes):
    assert two_processes[0]["loaded at"] < two_processes[1]["loaded at"]


def test_bad_cases_stop_every_process(two_processes):
    for rank in two_processes:
        assert "a batch of 3 images does not split evenly over 2 processes" in rank["3 images"]
    assert two_processes[1]["nan"].startswith("step 1 (epoch 1): the loss became nan")
    assert two_processes[0]["nan"].startswith("step 1 (epoch 1): the loss became NaN or infinite in another process")


def test_gpu_only_options_are_refused_on_the_cpu_before_the_model_moves():
    model, data = _model(), _data(4)
    before = _weights(model)
    with pytest.raises(ValueError, match=r"--amp \(mixed precision\) is for CUDA GPUs, but this run trains on cpu"):
        train.train(model, data, steps=1, amp=True, device="cpu", **RUN)
    with pytest.raises(ValueError, match=r"SyncBatchNorm \(--sync-bn\) works on CUDA GPUs only"):
        train.train(model, data, steps=1, sync_bn=True, device="cpu", **RUN)
    assert data.reads == [] and all(torch.equal(before[name], value) for name, value in _weights(model).items())
