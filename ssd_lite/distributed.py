"""Training on several GPUs (or CPU processes) with torchrun and DistributedDataParallel (DDP).

    torchrun --nproc_per_node=8 -m ssd_lite.train ...

torchrun starts one process per GPU and tells each who it is through environment variables: RANK (0 to
WORLD_SIZE - 1), WORLD_SIZE (the number of processes), LOCAL_RANK (its GPU on this machine), and
MASTER_ADDR / MASTER_PORT (where the processes meet). Each process holds a full copy of the model and
trains on its own share of every batch (`share_of_batch`); during backward, DDP averages the gradients
over the processes, so every copy takes the same step.

One thing is specific to SSD, and is this module's key function, `with_global_n`: the MultiBox loss
divides by N, the number of positive default boxes in the batch (paper, equation 1), and N belongs to
the whole batch, not to one process's share of it.

Started without torchrun, everything here behaves as a group of one process (rank 0 of 1) and does
nothing special, so a training loop can call these functions unconditionally.
"""
from __future__ import annotations

import os
from typing import Callable, Mapping, NamedTuple, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ssd_lite.device import pick_device

Objective = Callable[[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

# What torchrun (and torch.distributed.launch before it) sets in every process it starts.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class Launch(NamedTuple):
    """Who this process is in the group torchrun started."""
    rank: int
    local_rank: int
    world_size: int
    master_addr: str
    master_port: int


# ---------------------------------------------------------------------------------------------------
# Joining the group.

def launch_environment(environ: Mapping[str, str] | None = None) -> Launch | None:
    """What the launcher told this process (read from `environ`, default os.environ).

    None when none of LAUNCH_VARIABLES is set: a plain `python -m ...` run, a group of one.
    A partial or inconsistent set (some variables missing, RANK >= WORLD_SIZE, ...) raises a ValueError.
    """
    environ = os.environ if environ is None else environ
    if not any(name in environ for name in LAUNCH_VARIABLES):
        return None
    _check_launch_environment(environ)
    return Launch(rank=int(environ["RANK"]), local_rank=int(environ["LOCAL_RANK"]),
                  world_size=int(environ["WORLD_SIZE"]), master_addr=environ["MASTER_ADDR"],
                  master_port=int(environ["MASTER_PORT"]))


def init(backend: str | None = None, device: str | torch.device | None = None) -> torch.device:
    """Join the group of processes torchrun started; return the device this process should train on.

    Without the launcher's environment: joins nothing and returns pick_device(device).
    Under torchrun: with CUDA (unless device is "cpu"), one GPU per process, cuda:LOCAL_RANK, talking
    over NCCL; on the CPU, gloo. `backend` ("nccl" or "gloo") overrides that choice.
    """
    launch = launch_environment()
    if launch is None:
        return pick_device(device)
    device = _device_for(launch, device)
    backend = choose_backend(backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # so that NCCL and all_gather_object use this process's GPU
    if is_distributed():
        return device  # joined already (init called twice): the group stays as it is
    dist.init_process_group(backend, init_method="env://", rank=launch.rank, world_size=launch.world_size)
    return device


def choose_backend(backend: str | None, device: torch.device) -> str:
    """"nccl" for CUDA devices and "gloo" for the CPU, unless `backend` names one (checked here)."""
    device = torch.device(device)
    if backend is None:
        return "nccl" if device.type == "cuda" else "gloo"
    if backend not in ("nccl", "gloo"):
        raise ValueError(f"unknown distributed backend {backend!r}: expected 'nccl' (CUDA GPUs) or 'gloo' "
                         "(CPU, or GPUs where NCCL is missing), or leave it out to pick by device")
    if backend == "nccl" and (device.type != "cuda" or not torch.cuda.is_available()
                              or not dist.is_nccl_available()):
        where = ("torch sees no CUDA GPU on this machine" if not torch.cuda.is_available() else
                 "this process trains on the CPU" if device.type != "cuda" else "this torch was built without NCCL")
        raise ValueError(f"the NCCL backend was asked for, but {where}. NCCL only moves tensors between "
                         "CUDA GPUs. Leave the backend out (gloo is chosen for the CPU), or pass backend "
                         "'gloo', or run on a machine with one GPU per process.")
    return backend


def is_distributed() -> bool:
    """True inside an initialised process group (after `init` under torchrun)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the one process that prints progress, writes logs and saves checkpoints."""
    return rank() == 0


def cleanup() -> None:
    """Leave the process group (call once, at the end, on every rank); nothing to do in a group of one."""
    if is_distributed():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------------
# Model and data.

def wrap_model(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """The model as DDP wants it: DistributedDataParallel under torchrun (even with one process), the
    model itself when started without it. sync_bn=True first turns every BatchNorm into SyncBatchNorm
    (statistics over the whole batch, across processes; CUDA only). Reach the SSD inside with `unwrap`.
    """
    if sync_bn:
        check_sync_bn(device)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not is_distributed():
        return model
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel (for model.priors, state_dict and checkpoints)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def per_rank_batch_size(batch_size: int, num_processes: int | None = None) -> int:
    """Each process's share of a batch: batch_size / world size, which must be a whole number."""
    num_processes = world_size() if num_processes is None else num_processes
    _check_batch_split(batch_size, num_processes)
    return batch_size // num_processes


def share_of_batch(batch: Sequence[int]) -> list[int]:
    """This process's part of a whole batch: `batch` (B data-set indices) cut into world_size equal,
    consecutive slices, rank r taking the r-th.

    Every process draws the whole batch alike (the same sampler with the same seed) and keeps its
    slice, so step s trains on the same B images whatever the number of processes: with the global N
    (`with_global_n`), the step of W processes is the step of one (BatchNorm aside: each process
    normalises with its own images' statistics, unless wrap_model's sync_bn). torch's
    DistributedSampler deals an epoch's images out instead: which images step s sees would depend on
    the number of processes, and a run could not resume on another number of GPUs in the same order.
    """
    _check_batch_split(len(batch), world_size())
    per_rank = len(batch) // world_size()
    return list(batch[rank() * per_rank:(rank() + 1) * per_rank])


# ---------------------------------------------------------------------------------------------------
# Talking between processes. Each returns the same value on every rank; in a group of one, the input.

def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The sum of `tensor` over the processes (a new tensor; the input is left as it was)."""
    total = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of `tensor` over the processes, e.g. the loss to log (a floating-point tensor)."""
    return all_reduce_sum(tensor) / world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any: how processes agree to stop at the same step (a
    time budget ran out on one clock, one rank saw a NaN). A process that stopped alone would leave the
    others waiting forever in their next gradient all-reduce."""
    return bool(all_reduce_sum(torch.tensor(int(flag), device=device)) > 0)


def shard(num_items: int) -> range:
    """The indices of 0..num_items-1 this process evaluates: every world_size-th from its rank on.
    Unlike DistributedSampler, it repeats no image to even out the shares (that would bias the mAP)."""
    return range(rank(), num_items, world_size())


def gather_in_order(values: Sequence, indices: Sequence[int]) -> list:
    """Every process's `values` (any picklable objects, e.g. detections on the CPU), where value i
    belongs to item indices[i], gathered into one list in item order, on every rank."""
    if not is_distributed():
        return [value for _, value in sorted(zip(indices, values), key=lambda pair: pair[0])]
    shares = [None] * world_size()
    dist.all_gather_object(shares, (list(indices), list(values)))
    pairs = [pair for share_indices, share_values in shares for pair in zip(share_indices, share_values)]
    return [value for _, value in sorted(pairs, key=lambda pair: pair[0])]


# ---------------------------------------------------------------------------------------------------
# The MultiBox loss with the global N.

def with_global_n(objective: Objective) -> Objective:
    """`objective` made exact under DDP: each process's loss divided by the N of the WHOLE batch.

    objective(loc_pred, conf_pred, loc_targets, labels) -> (loc_loss, conf_loss), with ssd_lite's
    signature and normaliser: both returned losses are sums over this process's images divided by
    max(N, 1), N = (labels > 0).sum() (ssd_lite.loss.multibox_loss and focal_multibox_loss both are).

    The paper's loss is L = (L_conf + L_loc) / N, with both sums and N over the whole batch. Split the
    batch over W processes: process r holds sums S_r and positives N_r, with S = sum_r S_r and
    N = sum_r N_r. The sums split exactly, because every term belongs to one image: smooth L1 is per
    positive box, and hard negative mining picks each image's negatives from that image's own positives
    (3 per positive), whatever other images share the process; the focal loss is per box. N does not:
    alone, process r would minimise S_r / N_r, weighting an image with few positives around it more. And
    DDP AVERAGES the W processes' gradients. So process r minimises
        L_r = S_r / max(N, 1) * W,     N all-reduced over the processes,
    and the average of the gradients of L_r over r is the gradient of S / max(N, 1): one process on the
    whole batch. Here S_r is recovered from the objective's output as loss_r * max(N_r, 1). With N_r = 0
    (no object in this process's images) the objective divided by 1, so S_r is still right (0 for the
    MultiBox loss, the background boxes' loss for the focal loss); with N = 0 everywhere, both ways
    divide by 1. N is a count, not a function of the weights: it needs no gradient.

    The returned losses are this process's scaled share: their mean over the processes
    (`all_reduce_mean`) is the whole batch's loss, the number to log. In a group of one, `objective`.
    """
    def global_n_objective(loc_pred: Tensor, conf_pred: Tensor, loc_targets: Tensor,
                           labels: Tensor) -> tuple[Tensor, Tensor]:
        loc_loss, conf_loss = objective(loc_pred, conf_pred, loc_targets, labels)
        if world_size() == 1:
            return loc_loss, conf_loss
        local_n = (labels > 0).sum()
        global_n = all_reduce_sum(local_n)  # every process's positives: the paper's N
        # Undo the objective's "/ max(N_r, 1)", divide by the global N, and multiply by W to cancel
        # DDP's averaging of the gradients.
        scale = (local_n.clamp(min=1) * world_size()).double() / global_n.clamp(min=1).double()
        return loc_loss * scale.to(loc_loss.dtype), conf_loss * scale.to(conf_loss.dtype)

    global_n_objective.__name__ = f"{getattr(objective, '__name__', 'objective')}_with_global_n"
    global_n_objective.__doc__ = f"{global_n_objective.__name__}: see ssd_lite.distributed.with_global_n."
    return global_n_objective


# ---------------------------------------------------------------------------------------------------
# Checks, each with a message saying what was expected, what was found and what to do.

def _check_launch_environment(environ: Mapping[str, str]) -> None:
    missing = [name for name in LAUNCH_VARIABLES if name not in environ]
    if missing:
        present = [name for name in LAUNCH_VARIABLES if name in environ]
        raise ValueError(
            f"this process has only part of the launcher's environment: {', '.join(present)} set, "
            f"{', '.join(missing)} missing. torchrun sets all of {', '.join(LAUNCH_VARIABLES)} in every "
            "process it starts: start with `torchrun --nproc_per_node=N -m ssd_lite.train ...`, or, for one "
            f"process, plain `python -m ssd_lite.train ...` with none of them set (unset {', '.join(present)}).")
    numbers = {}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
        try:
            numbers[name] = int(environ[name])
        except ValueError:
            raise ValueError(f"the launcher's environment variable {name} must be a whole number, got "
                             f"{environ[name]!r}: start the processes with torchrun, which sets it") from None
    if numbers["WORLD_SIZE"] < 1 or not 0 <= numbers["RANK"] < numbers["WORLD_SIZE"]:
        raise ValueError(f"RANK={numbers['RANK']} and WORLD_SIZE={numbers['WORLD_SIZE']} do not fit: ranks "
                         "run from 0 to WORLD_SIZE - 1. Start the processes with torchrun, which numbers them.")
    if numbers["LOCAL_RANK"] < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {numbers['LOCAL_RANK']}")
    if not 0 < numbers["MASTER_PORT"] < 65536:
        raise ValueError(f"MASTER_PORT must be a TCP port in 1..65535, got {numbers['MASTER_PORT']}")


def _device_for(launch: Launch, device: str | torch.device | None) -> torch.device:
    """Under torchrun: the CPU if asked for (or if there is no GPU), else this process's GPU, LOCAL_RANK."""
    device = pick_device(device)  # also refuses "cuda" without a GPU, clearly
    if device.type == "cpu":
        return device
    if device.index is not None and device.index != launch.local_rank:
        raise ValueError(f"under torchrun each process uses the GPU numbered by its LOCAL_RANK "
                         f"(cuda:{launch.local_rank} here), but device {str(device)!r} was asked for: "
                         "pass --device cuda without a number")
    if launch.local_rank >= torch.cuda.device_count():
        raise ValueError(f"this process has LOCAL_RANK={launch.local_rank}, but this machine has "
                         f"{torch.cuda.device_count()} GPU(s): ask torchrun for at most one process per GPU "
                         f"(--nproc_per_node={torch.cuda.device_count()})")
    return torch.device("cuda", launch.local_rank)


def check_sync_bn(device: torch.device) -> None:
    if torch.device(device).type != "cuda":
        raise ValueError("SyncBatchNorm (--sync-bn) works on CUDA GPUs only (PyTorch's implementation "
                         f"has no CPU version), but this process trains on {device}. Leave --sync-bn out: "
                         "each process then normalises with its own images' statistics.")


def _check_batch_split(batch_size: int, num_processes: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if batch_size % num_processes:
        lower = batch_size - batch_size % num_processes
        higher = lower + num_processes
        suggestion = f"{lower} or {higher}" if lower else f"{higher}"
        raise ValueError(f"a batch of {batch_size} images does not split evenly over {num_processes} "
                         f"processes ({batch_size} / {num_processes} is not a whole number). The batch size "
                         f"is the whole batch, shared by all processes: use a multiple of {num_processes}, "
                         f"such as {suggestion}, or another number of processes.")
