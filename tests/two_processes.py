"""Run a test's worker in 2 spawned processes (a CPU 'gloo' group) and collect what each one saved."""
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port nothing listens on now, for the processes' rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_in_two_processes(worker, args: tuple, out_path, what: str, weights_only: bool = True,
                         timeout_s: float = 180) -> list:
    """worker(rank, *args) runs in 2 processes and saves its results to f"{out_path}.{rank}".

    Returns [results of rank 0, results of rank 1]. A failed worker raises here with its traceback; a
    pair that has not finished after timeout_s (a deadlock) is killed and the test fails, naming `what`.
    """
    context = mp.start_processes(worker, args=args, nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=1):  # raises, with the worker's traceback, if a worker failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the 2 {what} processes did not finish within {timeout_s:g} s (a deadlock?)")
    return [torch.load(f"{out_path}.{rank}", weights_only=weights_only) for rank in range(2)]
