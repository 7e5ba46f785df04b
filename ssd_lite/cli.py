"""What the three command lines (train, detect, evaluate) share: flag checks and one-line errors.

Every flag is checked by argparse before any work starts (a bad --lr is reported in a second, not after
minutes of image generation), and an expected user error (a missing file, a malformed annotation, a
checkpoint for other classes) ends the program with one line naming the problem and exit status 2.
Tracebacks are kept for real bugs, and for everything with --debug.
"""
from __future__ import annotations

import argparse
import math
import sys
import traceback
from typing import Callable, Sequence

import torch

from ssd_lite.device import pick_device

# The errors a user can cause and fix: bad files, bad flags, bad data. Anything else is a bug in
# ssd_lite (or in torch) and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError,
               FileExistsError)


def positive_int(text: str) -> int:
    value = _parse(text, int, "a whole number")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _parse(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _parse(text, float, "a number")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1]: a score or an IoU threshold."""
    value = _parse(text, float, "a number")
    if not 0 <= value <= 1:  # also false for nan
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text}")
    return value


def device(text: str) -> torch.device:
    try:
        return pick_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _parse(text: str, kind: type, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """--device, --threads and --debug, the same for every command line."""
    parser.add_argument("--device", type=device, default=None,
                        help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="CPU threads for torch (default: the free cores, at most one per core; "
                             "or set SSD_LITE_THREADS)")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None,
        prog: str = "ssd_lite") -> int:
    """Call main(argv); turn an expected user error into one line on stderr and exit status 2."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        return main(arguments) or 0
    except USER_ERRORS as error:
        if "--debug" in arguments:
            traceback.print_exc()
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 2
