"""Tests of ssd_lite.distributed: DDP with the global N gives the gradients of one process on the
whole batch (2 CPU processes, gloo), and the launcher's bad setups get clear errors."""

import pytest
import torch

from ssd_lite import distributed
from ssd_lite.distributed import (choose_backend, launch_environment, per_rank_batch_size, share_of_batch,
                                  with_global_n, wrap_model)
from ssd_lite.loss import focal_multibox_loss, multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import small_ssd

from two_processes import free_port, run_in_two_processes  # tests/two_processes.py

OBJECTIVES = {"mining": multibox_loss, "focal": focal_multibox_loss}
# Six 64x64 images' objects (xyxy in [0, 1], label): images 2, 3 and 5 hold none.
OBJECTS = [
    [([0.1, 0.1, 0.5, 0.6], 1), ([0.5, 0.2, 0.9, 0.5], 3), ([0.05, 0.6, 0.95, 0.95], 5)],
    [([0.3, 0.3, 0.7, 0.7], 2)],
    [], [],
    [([0.0, 0.0, 0.3, 0.3], 4), ([0.6, 0.6, 1.0, 1.0], 1)],
    [],
]
# Each scenario: the objective, and the images of process 0 and of process 1; one process alone gets
# both lists, concatenated. The positives per process differ, and one process often has none.
SCENARIOS = {
    "mining, process 1 without objects": ("mining", [0, 1], [2, 3]),
    "mining, uneven positives": ("mining", [0, 2], [1, 3]),
    "mining, no object in the batch": ("mining", [2, 3], [5, 2]),
    "focal, process 1 without objects": ("focal", [0, 1], [2, 3]),
    "focal, uneven positives": ("focal", [4, 5], [1, 3]),
    "focal, no object in the batch": ("focal", [2, 3], [5, 2]),
}
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def _images():
    return torch.rand(len(OBJECTS), 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _targets(indices):
    targets = []
    for i in indices:
        boxes = torch.tensor([box for box, _ in OBJECTS[i]]).reshape(-1, 4)
        labels = torch.tensor([label for _, label in OBJECTS[i]], dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def _model():
    """The seeded small model with BatchNorm in eval mode. SyncBatchNorm, which would make per-process
    batch statistics equal the whole batch's, has no CPU version; in train mode each process would
    normalise its 2 images with their own mean and variance, a real difference between one process and
    two that no loss normaliser can remove. In eval mode BatchNorm is a fixed per-channel affine map, so
    the only thing that can differ is the loss's N, which is what this test is about."""
    torch.manual_seed(0)
    return small_ssd(6, image_size=64).eval()


def _step(model, priors, images, targets, objective):
    """The first three lines of ssd_lite.train.training_step (match, forward, objective), then backward."""
    matched = [match(target["boxes"], target["labels"], priors) for target in targets]
    loc_targets = torch.stack([loc for loc, _ in matched])
    labels = torch.stack([label for _, label in matched])
    loc_pred, conf_pred = model(images)
    loc_loss, conf_loss = objective(loc_pred, conf_pred, loc_targets, labels)
    (loc_loss + conf_loss).backward()
    return torch.stack([loc_loss, conf_loss]).detach(), int((labels > 0).sum())


def _gradients(model):
    return [parameter.grad.clone() for parameter in model.parameters()]


def _worker(rank, world_size, port, out_path):
    """One of the two processes torchrun would start: join the group, then, per scenario, train one step
    on this process's images, with and without the global N; save the gradients DDP leaves."""
    import os
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = distributed.init(device="cpu")
    assert distributed.is_distributed() and distributed.world_size() == world_size
    assert torch.distributed.get_backend() == "gloo"
    images, results = _images(), {}
    for name, (objective_name, *shares) in SCENARIOS.items():
        mine = shares[rank]
        for global_n in (True, False):
            ddp_model = wrap_model(_model(), device)
            assert isinstance(ddp_model, torch.nn.parallel.DistributedDataParallel)
            objective = OBJECTIVES[objective_name]
            if global_n:
                objective = with_global_n(objective)
            losses, positives = _step(ddp_model, distributed.unwrap(ddp_model).priors, images[mine],
                                      _targets(mine), objective)
            results[name, global_n] = dict(gradients=_gradients(distributed.unwrap(ddp_model)),
                                           logged=distributed.all_reduce_mean(losses), positives=positives)
    # The helpers a training loop needs, each the same on every rank.
    results["share"] = share_of_batch([10, 11, 12, 13, 14, 15])
    try:
        share_of_batch([1, 2, 3])
    except ValueError as error:
        results["odd batch"] = str(error)
    results["any_rank"] = [distributed.any_rank(rank == 1, device), distributed.any_rank(False, device)]
    indices = distributed.shard(5)
    results["gathered"] = distributed.gather_in_order([f"item {i}" for i in indices], indices)
    results["sum"] = distributed.all_reduce_sum(torch.tensor([rank + 1.0]))
    torch.save(results, f"{out_path}.{rank}")
    distributed.cleanup()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Run the two processes once for every scenario; returns each rank's results."""
    out_path = tmp_path_factory.mktemp("ddp") / "results"
    return run_in_two_processes(_worker, (2, free_port(), str(out_path)), out_path, "DDP")


def _one_process(name):
    """Gradients and losses of one process, no DDP, on the whole batch of a scenario."""
    objective_name, first, second = SCENARIOS[name]
    model = _model()
    images = _images()
    losses, positives = _step(model, model.priors, images[first + second], _targets(first + second),
                              OBJECTIVES[objective_name])
    return _gradients(model), losses, positives


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_two_processes_with_global_n_equal_one_process(ddp_results, name):
    gradients, losses, positives = _one_process(name)
    assert sum(rank[name, True]["positives"] for rank in ddp_results) == positives
    for rank in ddp_results:
        for ddp_gradient, gradient in zip(rank[name, True]["gradients"], gradients):
            torch.testing.assert_close(ddp_gradient, gradient, **TOLERANCE)
            assert torch.isfinite(ddp_gradient).all()
        # The mean over processes of the returned losses is the whole batch's loss: the number to log.
        torch.testing.assert_close(rank[name, True]["logged"], losses, **TOLERANCE)


def test_the_scenarios_cover_what_can_go_wrong(ddp_results):
    positives = {name: [rank[name, True]["positives"] for rank in ddp_results] for name in SCENARIOS}
    assert positives["mining, process 1 without objects"][0] > 0 == positives["mining, process 1 without objects"][1]
    for name in ("mining, uneven positives", "focal, uneven positives"):
        assert 0 < positives[name][0] != positives[name][1] > 0
    assert positives["focal, no object in the batch"] == [0, 0]


def test_helpers_agree_across_processes(ddp_results):
    assert [rank["share"] for rank in ddp_results] == [[10, 11, 12], [13, 14, 15]]
    assert "a batch of 3 images does not split evenly over 2 processes" in ddp_results[0]["odd batch"]
    for rank in ddp_results:
        assert rank["any_rank"] == [True, False]  # rank 1 alone said True: both stop
        assert rank["gathered"] == [f"item {i}" for i in range(5)]  # shards 0, 2, 4 and 1, 3, in order
        assert rank["sum"].item() == 3.0


@pytest.mark.parametrize("name", ["mining, process 1 without objects", "focal, uneven positives"])
def test_without_global_n_the_gradients_differ(ddp_results, name):
    """Each process dividing by its own N, as the plain loss does, gives other gradients: the test above
    would catch a wrapper that did nothing."""
    gradients, _, _ = _one_process(name)
    difference = max((ddp - one).abs().max().item()
                     for ddp, one in zip(ddp_results[0][name, False]["gradients"], gradients))
    assert difference > 1e-3


# ---------------------------------------------------------------------------------------------------
# A group of one: everything is a no-op, so train.py can call it unconditionally.

def test_without_launcher_nothing_changes(monkeypatch):
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.init(device="cpu") == torch.device("cpu")
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    model = small_ssd(6, image_size=64)
    assert wrap_model(model, torch.device("cpu")) is model and distributed.unwrap(model) is model
    assert share_of_batch([5, 3, 8]) == [5, 3, 8]
    assert distributed.any_rank(True, torch.device("cpu")) and not distributed.any_rank(False, torch.device("cpu"))
    assert list(distributed.shard(5)) == [0, 1, 2, 3, 4]
    assert distributed.gather_in_order(["b", "a"], [1, 0]) == ["a", "b"]
    value = torch.tensor([1.0, 2.0])
    assert torch.equal(distributed.all_reduce_mean(value), value)
    distributed.cleanup()  # nothing to leave: no error


def test_global_n_is_the_objective_itself_in_one_process():
    generator = torch.Generator().manual_seed(0)
    loc_pred, conf_pred = torch.randn(2, 30, 4, generator=generator), torch.randn(2, 30, 3, generator=generator)
    loc_targets, labels = torch.randn(2, 30, 4, generator=generator), torch.randint(0, 3, (2, 30), generator=generator)
    for objective in OBJECTIVES.values():
        wrapped = with_global_n(objective)
        for got, expected in zip(wrapped(loc_pred, conf_pred, loc_targets, labels),
                                 objective(loc_pred, conf_pred, loc_targets, labels)):
            assert torch.equal(got, expected)
    assert with_global_n(multibox_loss).__name__ == "multibox_loss_with_global_n"


# ---------------------------------------------------------------------------------------------------
# Bad setups: one clear paragraph each.

TORCHRUN_ENVIRONMENT = dict(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500")


def test_launch_environment_is_read():
    assert launch_environment({}) is None
    launch = launch_environment(TORCHRUN_ENVIRONMENT)
    assert launch == (1, 1, 2, "127.0.0.1", 29500) and launch.world_size == 2


@pytest.mark.parametrize("missing", [["WORLD_SIZE"], ["MASTER_ADDR", "MASTER_PORT"], ["RANK", "LOCAL_RANK"]])
def test_partial_launch_environment_is_refused(missing):
    environ = {key: value for key, value in TORCHRUN_ENVIRONMENT.items() if key not in missing}
    with pytest.raises(ValueError, match="only part of the launcher's environment") as error:
        launch_environment(environ)
    message = str(error.value)
    assert all(name in message for name in missing) and "torchrun --nproc_per_node" in message


@pytest.mark.parametrize("changes, expected", [
    (dict(RANK="one"), "RANK must be a whole number"),
    (dict(RANK="2"), "RANK=2 and WORLD_SIZE=2 do not fit"),
    (dict(WORLD_SIZE="0", RANK="0"), "do not fit"),
    (dict(LOCAL_RANK="-1"), "LOCAL_RANK must be >= 0"),
    (dict(MASTER_PORT="70000"), "MASTER_PORT must be a TCP port"),
])
def test_inconsistent_launch_environment_is_refused(changes, expected):
    with pytest.raises(ValueError, match=expected):
        launch_environment({**TORCHRUN_ENVIRONMENT, **changes})


def test_init_refuses_a_partial_environment_before_joining(monkeypatch):
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT missing"):
        distributed.init()
    assert not distributed.is_distributed()


def test_backend_follows_the_device():
    assert choose_backend(None, torch.device("cpu")) == "gloo"
    assert choose_backend(None, torch.device("cuda", 0)) == "nccl"
    assert choose_backend("gloo", torch.device("cpu")) == "gloo"
    with pytest.raises(ValueError, match="unknown distributed backend 'mpi'"):
        choose_backend("mpi", torch.device("cpu"))


def test_nccl_without_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cpu", "cuda"):
        with pytest.raises(ValueError, match="NCCL backend was asked for, but torch sees no CUDA GPU"):
            choose_backend("nccl", torch.device(device))


def test_nccl_for_a_cpu_process_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="this process trains on the CPU"):
        choose_backend("nccl", torch.device("cpu"))


def test_batch_must_split_evenly():
    assert per_rank_batch_size(32, 8) == 4 and per_rank_batch_size(32, 1) == 32
    assert per_rank_batch_size(32) == 32  # a group of one
    with pytest.raises(ValueError, match=r"a batch of 30 images does not split evenly over 4 processes.*28 or 32"):
        per_rank_batch_size(30, 4)
    with pytest.raises(ValueError, match=r"such as 8,"):
        per_rank_batch_size(3, 8)
    with pytest.raises(ValueError, match="whole number >= 1"):
        per_rank_batch_size(0, 2)


def test_sync_batchnorm_is_refused_on_the_cpu():
    with pytest.raises(ValueError, match="SyncBatchNorm .* CUDA GPUs only"):
        wrap_model(small_ssd(6, image_size=64), torch.device("cpu"), sync_bn=True)
