"""Where the work runs: the device (CPU or CUDA) and how many CPU threads torch may use.

Not an idea of the paper, but the first thing that goes wrong on a student's laptop: a misspelt device
found only after minutes of work, or a 2-core machine asked to run 2 torch threads while something else
keeps it busy (the threads then wait for each other: one forward pass measured 480 ms instead of 4.5 ms).
"""
from __future__ import annotations

import os

import torch

# Set this environment variable to a whole number to choose the threads yourself (as OMP_NUM_THREADS
# would); `choose_num_threads` then never second-guesses it.
THREADS_VARIABLE = "SSD_LITE_THREADS"
# Torch's own choice when this module is first imported (one per physical core, or OMP_NUM_THREADS):
# remembered so that lowering the count on a busy moment does not lower every later choice.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA if available, else the CPU.

    A device that cannot be used here (a misspelt name, "cuda" on a machine without a GPU) raises a
    ValueError saying so at once, not after minutes of data preparation.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N' ({error})") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} was asked for, but torch sees no CUDA GPU here: "
                             "use --device cpu (or leave --device out to pick the best available)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s), numbered from 0")
    elif device.type != "cpu":
        raise ValueError(f"device {str(device)!r} is not supported by ssd_lite: expected 'cpu' or 'cuda'")
    return device


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers: none on the CPU (a worker would compete with the network for the same cores),
    one with CUDA (it prepares the next batch while the GPU computes)."""
    return 0 if device.type == "cpu" else 1


def choose_num_threads(requested: int | None = None) -> int:
    """How many CPU threads torch should use: never more than the cores that are free now.

    `requested` (e.g. a --threads flag), else the SSD_LITE_THREADS environment variable, wins when given.
    Otherwise: the cores there are minus the load the machine already carries (the 1-minute load average),
    at least 1 and at most torch's own default. Torch's threads spin while they wait for each other, so
    one thread too many on a busy machine costs far more than one thread too few.
    """
    if requested is None and os.environ.get(THREADS_VARIABLE):
        value = os.environ[THREADS_VARIABLE]
        try:
            requested = int(value)
        except ValueError:
            raise ValueError(f"{THREADS_VARIABLE}={value!r} is not a whole number of threads") from None
    if requested is not None:
        if requested < 1:
            raise ValueError(f"the number of threads must be >= 1, got {requested}")
        return requested
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average (Windows): trust torch's default
        busy = 0.0
    free = max(1, int(cores - busy + 0.5))
    return max(1, min(free, TORCH_DEFAULT_THREADS, cores))


def use_threads(requested: int | None = None) -> int:
    """Set torch's CPU thread count with `choose_num_threads`; returns the number set."""
    threads = choose_num_threads(requested)
    torch.set_num_threads(threads)
    return threads
