"""The machinery behind ssd_lite.exercises: run a reader's function on cases, compare, print a verdict.

`_run_checks` calls the reader's function on every case with fresh copies of the inputs, compares each
answer with the reference's, and prints one short verdict. Whatever the reader's code does, the checker
itself never raises (only a KeyboardInterrupt, the notebook's stop button, goes through):

- an exception, `sys.exit()` or `raise SystemExit` is reported in a line or two, with the line of the
  reader's function where it happened;
- a case that runs longer than TIME_LIMIT_S seconds is stopped and named (a loop that never ends);
- what the function prints is captured, and only its first lines are shown, under the failing case;
- a right answer that changed an input in place (a tensor, a list, anything nested) is wrong;
- a wrong type, shape or dtype, a None, a NaN are described rather than compared.

The time limit uses SIGALRM, which interrupts a pure-Python loop between two steps. It is only
available on POSIX systems (Linux, macOS), in the main thread, which is where Jupyter runs a cell;
elsewhere (Windows, a worker thread) the cases run without a limit. It cannot interrupt one long call
into torch's C++ code, which ends on its own anyway.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import signal
import threading
import time
import traceback
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ssd_lite.boxes import box_iou, cxcywh_to_xyxy

# Tolerance for float answers: float32 arithmetic done in another order differs by ~1e-6.
ATOL = 1e-4
RTOL = 1e-4
# Seconds one case may take (0: no limit). Every reference answer takes milliseconds, so 10 s only
# stops a loop that never ends; tests lower it.
TIME_LIMIT_S = 10.0
# Lines of the reader's printed output shown under a failing case.
PRINTED_LINES_SHOWN = 5


class Case(NamedTuple):
    """One input to try: positional arguments for the reader's function, and what the case is about."""
    args: tuple
    note: str = ""


class CheckResult:
    """What a checker returns: true if every case passed, so `assert check_iou(my_iou)` works.

    A notebook shows nothing for it (the printed verdict already said everything), where a plain
    True or False would be echoed under the verdict when the check is a cell's last line.
    """

    def __init__(self, passed: bool):
        self.passed = passed

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"CheckResult(passed={self.passed})"

    def _ipython_display_(self) -> None:
        """IPython calls this instead of echoing the repr: display nothing."""


# A comparison returns None when the answer is right, else a message, or (message, expected_part,
# received_part) to show only the wrong part of a composite answer.
Compare = Callable[[Any, Any], "str | tuple[str, Any, Any] | None"]


_RAISED = object()  # stands for "no answer received: the function raised"


class _TookTooLong(BaseException):
    """Raised into the reader's code when its time is up. A BaseException, so that an `except Exception`
    in the reader's loop does not swallow it."""


# ---------------------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------------------

def _run_checks(name: str, fn: Callable, cases: Sequence[Case], reference: Callable, compare: Compare,
                arg_names: Sequence[str] = ()) -> CheckResult:
    """Run `fn` and `reference` on every case, print a verdict, return a CheckResult (true if all passed).

    Every case gets fresh copies of its inputs (so one case cannot spoil the next), and an answer that
    is right but changed its input in place is wrong: the caller's data would be corrupted.
    """
    if not callable(fn):
        print(f"✗ {name} needs your function itself, e.g. {name}(my_function), not its result "
              f"(got a {type(fn).__name__}).")
        return CheckResult(False)
    fn_name = getattr(fn, "__name__", "your function")
    failures = []  # (case, message, expected, received, printed)
    for number, case in enumerate(cases, start=1):
        expected = reference(*copy.deepcopy(case.args))
        args = copy.deepcopy(case.args)
        received, error, printed = _call(fn, args, TIME_LIMIT_S)
        if isinstance(error, NotImplementedError):
            print(f"Not attempted yet: replace `raise NotImplementedError` in {fn_name} with your code.")
            return CheckResult(False)
        if isinstance(error, _TookTooLong):  # report this case at once: the next ones would loop too
            about = f" ({case.note})" if case.note else ""
            print(f"✗ Not yet: {fn_name} took longer than {TIME_LIMIT_S:g} s on case {number} of "
                  f"{len(cases)}{about} and was stopped:")
            _report(fn_name, case, arg_names, "did not finish: is there a loop that never ends?",
                    expected, _RAISED, printed)
            return CheckResult(False)
        if error is not None:
            failures.append((case, _describe_error(error, fn), expected, _RAISED, printed))
            continue
        result = _compare_safely(compare, expected, received)
        if result is None:
            result = _changed_argument(case.args, args, arg_names)
        if result is not None:
            if isinstance(result, str):
                result = (result, expected, received)
            failures.append((case, *result, printed))

    if not failures:
        print(f"✓ Correct: passed all {len(cases)} cases.")
        return CheckResult(True)
    case, message, expected, received, printed = min(failures, key=lambda failure: _size(failure[0].args))
    about = f" ({case.note})" if case.note else ""
    print(f"✗ Not yet: {len(failures)} of {len(cases)} cases failed. The smallest failing case{about}:")
    _report(fn_name, case, arg_names, message, expected, received, printed)
    return CheckResult(False)


def _call(fn: Callable, args: tuple, time_limit: float) -> tuple[Any, BaseException | None, _Printed]:
    """(answer, None, printed) or (_RAISED, the exception, printed): fn(*args) with its output captured,
    stopped after `time_limit` seconds. Only a KeyboardInterrupt (the stop button) gets through."""
    printed = _Printed()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), _time_limit(time_limit):
            return fn(*args), None, printed
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as error:  # the reader's bug, SystemExit or a time-out: reported, never raised
        return _RAISED, error, printed


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise _TookTooLong in the code run under this block once `seconds` have passed.

    SIGALRM only exists on POSIX, and Python only lets the main thread handle signals: elsewhere the
    block runs without a limit. The previous SIGALRM handler and timer are put back afterwards.
    """
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum, frame):
        raise _TookTooLong

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_delay, previous_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        except _TookTooLong:  # the alarm went off just as the block ended; it is disarmed now
            pass
        # getsignal gives None for a handler not set from Python; the default is the closest we can restore.
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous_handler is None else previous_handler)
        if previous_delay:  # someone else's timer was running: let it go off when it would have
            remaining = max(previous_delay - (time.monotonic() - started), 1e-6)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_interval)


class _Printed(io.TextIOBase):
    """Stands in for stdout and stderr during a call: keeps the start of what is printed, counts lines.

    A function that prints in a loop can print millions of lines; keeping only the start bounds memory.
    """
    KEEP_CHARS = 4000

    def __init__(self):
        super().__init__()
        self.start = ""
        self.line_breaks = 0
        self.ends_with_newline = True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        self.start += text[:max(self.KEEP_CHARS - len(self.start), 0)]
        self.line_breaks += text.count("\n")
        if text:
            self.ends_with_newline = text.endswith("\n")
        return len(text)

    def excerpt(self, lines_shown: int = PRINTED_LINES_SHOWN) -> list[str]:
        """The first lines printed, each cut to 120 characters, then '... N more lines'."""
        total = self.line_breaks + (0 if self.ends_with_newline else 1)
        lines = [line if len(line) <= 120 else line[:117] + "..."
                 for line in self.start.splitlines()[:lines_shown]]
        if total > len(lines):
            lines.append(f"... {total - len(lines)} more lines")
        return lines


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------

def _report(fn_name: str, case: Case, arg_names: Sequence[str], message: str, expected: Any, received: Any,
            printed: _Printed) -> None:
    """Print the inputs of the failing case, what went wrong, the expected and received answers, and
    the start of what the function printed, if it printed anything."""
    names = list(arg_names) + [f"argument {i + 1}" for i in range(len(arg_names), len(case.args))]
    for arg_name, value in zip(names, case.args):
        print(f"    {arg_name} = {_show(value, indent=len(arg_name) + 7)}")
    print(f"  {fn_name} {message}")
    print(f"  expected: {_show(expected, indent=12)}")
    if received is not _RAISED:
        print(f"  received: {_show(received, indent=12)}")
    excerpt = printed.excerpt()
    if excerpt:
        print(f"  {fn_name} printed, on this case:")
        for line in excerpt:
            print(f"    {line}")


def _safe_str(value: Any, function: Callable[[Any], str] = str) -> str:
    """str(value), or a note if the reader's __str__ or __repr__ itself raises."""
    try:
        return function(value)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as error:
        return f"<{type(value).__name__} object; its {function.__name__}() raised {type(error).__name__}>"


def _describe_error(error: BaseException, fn: Callable) -> str:
    """'raised IndexError: ...' plus the line of the reader's function where it happened, if known."""
    text = _safe_str(error).strip()
    text = text.splitlines()[0] if text else ""
    if len(text) > 160:
        text = text[:157] + "..."
    message = f"raised {type(error).__name__}" + (f": {text}" if text else "")
    if isinstance(error, SystemExit):
        message += " (sys.exit() or exit() would end the whole program: return the answer instead)"
    code = getattr(fn, "__code__", None)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if code is not None and (frame.filename, frame.name) == (code.co_filename, code.co_name)]
    if frames and frames[-1].line:
        line_number = frames[-1].lineno - code.co_firstlineno + 1  # counted from the `def` line
        message += f"\n  at line {line_number} of {fn.__name__}: {frames[-1].line.strip()}"
    return message


def _compare_safely(compare: Compare, expected: Any, received: Any):
    """The comparison's verdict; a received object so odd that comparing it raises is a wrong answer."""
    try:
        return compare(expected, received)
    except (KeyboardInterrupt, GeneratorExit):
        raise
    except BaseException as error:
        return f"returned a {type(received).__name__} that cannot be compared ({type(error).__name__})"


def _changed_argument(original: tuple, after: tuple, arg_names: Sequence[str]) -> str | None:
    """A message if the reader's function changed one of its inputs (at any depth), else None."""
    for i, (before, now) in enumerate(zip(original, after)):
        if not _same(before, now):
            name = arg_names[i] if i < len(arg_names) else f"argument {i + 1}"
            fresh = {Tensor: f"{name}.clone()", list: f"list({name})"}.get(type(before), f"copy.deepcopy({name})")
            return (f"gave the right answer but changed its input argument `{name}` in place: work on a copy "
                    f"(e.g. `{fresh}`), or build a new one, so the caller's data stays intact")
    return None


def _same(before: Any, now: Any) -> bool:
    """Whether `now` still equals `before`: tensors element by element, containers item by item."""
    if isinstance(before, Tensor):
        return (isinstance(now, Tensor) and before.shape == now.shape and before.dtype == now.dtype
                and bool(((before == now) | (before.isnan() & now.isnan())).all()))
    if isinstance(before, (list, tuple)):
        return (type(before) is type(now) and len(before) == len(now)
                and all(_same(b, n) for b, n in zip(before, now)))
    if isinstance(before, dict):
        return (isinstance(now, dict) and before.keys() == now.keys()
                and all(_same(before[key], now[key]) for key in before))
    if isinstance(before, np.ndarray):
        return isinstance(now, np.ndarray) and np.array_equal(before, now, equal_nan=before.dtype.kind in "fc")
    try:
        return type(before) is type(now) and bool(before == now)
    except Exception:  # an object the reader put there, which cannot even be compared
        return False


def _size(value: Any) -> int:
    """How big an input is, to pick the smallest failing case: elements of tensors, items of lists."""
    if isinstance(value, Tensor):
        return value.numel()
    if isinstance(value, (list, tuple)):
        return sum(_size(item) for item in value) + 1
    return 1


def _show(value: Any, indent: int = 0) -> str:
    """A short printout: tensors with 4 decimals, summarised when large; shapes named when empty."""
    if isinstance(value, Tensor):
        array = value.detach().cpu()
        array = (array.double() if array.is_floating_point() else array).numpy()
        text = np.array2string(array, precision=4, suppress_small=True, separator=", ", threshold=48,
                               edgeitems=3, max_line_width=100, prefix=" " * (indent + 7))
        usual = (torch.float32, torch.float64, torch.int64, torch.bool)
        dtype = "" if value.dtype in usual else f", dtype={value.dtype}"
        if value.numel() == 0:
            return f"tensor({text}, shape={tuple(value.shape)}{dtype})"
        return f"tensor({text}{dtype})"
    if isinstance(value, float):
        return repr(round(value, 4))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, float) for v in value):
        inner = ", ".join(repr(round(v, 4)) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    text = _safe_str(value, repr)
    return text if len(text) <= 500 else text[:497] + "..."


# ---------------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------------

_KINDS = {"float": "a float tensor", "int": "an integer tensor (int64)", "bool": "a bool tensor (a mask)"}


def _kind(tensor: Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    return "float" if tensor.is_floating_point() else "int"


def _too_coarse(received: Any, label: str) -> str | None:
    """A message if `received` is a float type with fewer digits than float32 (float16, bfloat16):
    a right answer in it differs from the float32 one by more than the tolerance, so say so rather
    than call its values wrong."""
    if isinstance(received, Tensor) and received.is_floating_point():
        dtype, coarse = received.dtype, torch.finfo(received.dtype).eps > torch.finfo(torch.float32).eps
    elif isinstance(received, (np.floating, np.ndarray)) and np.issubdtype(received.dtype, np.floating):
        dtype, coarse = received.dtype, np.finfo(received.dtype).eps > np.finfo(np.float32).eps
    else:
        return None
    if not coarse:
        return None
    return (f"returned {label} of dtype {dtype}, expected float32 (or float64): {dtype} keeps too few "
            f"digits to check the values, so compute in float32")


def _compare_tensors(expected: Tensor, received: Any, what: str = "") -> str | None:
    """None if `received` is a tensor of the expected shape and kind with (nearly) the same values."""
    label = what or "a tensor"  # what the answer is called in the messages
    if received is None:
        return f"returned None{' for ' + what if what else ''}: did you forget `return`?"
    if not isinstance(received, Tensor):
        return f"returned {what + ' as ' if what else ''}a {type(received).__name__}, expected a torch.Tensor"
    if received.shape != expected.shape:
        hint = ""
        if received.dim() > 1 and sorted(received.shape) == sorted(expected.shape):
            hint = " (are two axes swapped?)"
        return f"returned {label} of shape {tuple(received.shape)}, expected {tuple(expected.shape)}{hint}"
    if _kind(received) != _kind(expected):
        return f"returned {label} of dtype {received.dtype}, expected {_KINDS[_kind(expected)]}"
    received = received.detach().cpu()
    if _kind(expected) != "float":
        received = received.to(expected.dtype)  # int32 labels are as good as int64 ones
        if torch.equal(received, expected):
            return None
        first = tuple(int(i) for i in (received != expected).nonzero()[0])
        return (f"returned {what + ' with ' if what else ''}wrong values (the first at "
                f"{what or 'result'}[{', '.join(map(str, first))}])")
    coarse = _too_coarse(received, label)
    if coarse is not None:
        return coarse
    received, expected = received.double(), expected.double()
    if torch.isnan(received).any() and not torch.isnan(expected).any():
        return f"returned {label} containing NaN"
    if torch.isinf(received).any() and not torch.isinf(expected).any():
        return f"returned {label} containing infinity (a log of 0, or a division by 0?)"
    if torch.allclose(received, expected, rtol=RTOL, atol=ATOL, equal_nan=True):
        return None
    # inf - inf is NaN: count it as the largest difference, and print it as inf, not as the largest float.
    difference = (received - expected).abs().nan_to_num(nan=math.inf, posinf=math.inf)
    index = np.unravel_index(int(difference.argmax()), tuple(difference.shape))
    index = tuple(int(i) for i in index)
    where = f"[{', '.join(map(str, index))}]" if index else ""
    largest = float(difference.max())
    return (f"returned {what + ' with ' if what else ''}wrong values (largest difference {largest:.4g} "
            f"at {what or 'result'}{where})")


def _as_number(received: Any) -> float | None:
    """A Python number from a float, an int, a one-element tensor or a numpy scalar; else None."""
    if isinstance(received, bool):
        return None
    if isinstance(received, (int, float, np.integer, np.floating)):
        return float(received)
    if isinstance(received, Tensor) and received.numel() == 1:
        return float(received)
    return None


def _wrong_number_type(received: Any, wanted: str) -> str:
    if received is None:
        return "returned None: did you forget `return`?"
    if isinstance(received, Tensor):
        return f"returned a tensor of shape {tuple(received.shape)}, expected {wanted}"
    return f"returned a {type(received).__name__}, expected {wanted}"


def _compare_float(expected: float, received: Any) -> str | None:
    value = _as_number(received)
    if value is None:
        return _wrong_number_type(received, "one number")
    coarse = _too_coarse(received, "a number")
    if coarse is not None:
        return coarse
    if math.isclose(value, expected, rel_tol=RTOL, abs_tol=ATOL):
        return None
    return f"returned a wrong value ({value:.4f} instead of {expected:.4f})"


def _compare_int(expected: int, received: Any) -> str | None:
    value = _as_number(received)
    if value is None:
        return _wrong_number_type(received, "a whole number")
    if value != expected:
        return f"returned a wrong number ({value:g} instead of {expected})"
    return None


def _compare_floats(expected: list[float], received: Any) -> str | None:
    """A list (or tuple, or 1-D tensor) of floats."""
    coarse = _too_coarse(received, "numbers")
    if coarse is not None:
        return coarse
    if isinstance(received, Tensor):
        if received.dim() != 1:
            return f"returned a tensor of shape {tuple(received.shape)}, expected a list of {len(expected)} numbers"
        received = received.tolist()
    if received is None:
        return "returned None: did you forget `return`?"
    if not isinstance(received, (list, tuple, np.ndarray)):
        return f"returned a {type(received).__name__}, expected a list of {len(expected)} numbers"
    values = [_as_number(item) for item in received]
    if any(value is None for value in values):
        return "returned a list with something other than numbers in it"
    if len(values) != len(expected):
        return f"returned {len(values)} numbers, expected {len(expected)}"
    if all(math.isclose(v, e, rel_tol=RTOL, abs_tol=ATOL) for v, e in zip(values, expected)):
        return None
    first = next(i for i, (v, e) in enumerate(zip(values, expected))
                 if not math.isclose(v, e, rel_tol=RTOL, abs_tol=ATOL))
    return f"returned wrong values (first at index {first}: {values[first]:.4f} instead of {expected[first]:.4f})"


def _compare_pair(names: tuple[str, str]) -> Compare:
    """Compare a tuple of two tensors, e.g. (loc_targets, labels), naming the part that is wrong."""
    def compare(expected: tuple[Tensor, Tensor], received: Any):
        if received is None:
            return "returned None: did you forget `return`?"
        if not isinstance(received, (tuple, list)) or len(received) != 2:
            what = (f"a {type(received).__name__} of length {len(received)}"
                    if isinstance(received, (tuple, list)) else f"a {type(received).__name__}")
            return f"returned {what}, expected a tuple of two tensors ({names[0]}, {names[1]})"
        for name, expected_part, received_part in zip(names, expected, received):
            problem = _compare_tensors(expected_part, received_part, what=name)
            if problem is not None:
                return problem, expected_part, received_part
        return None
    return compare


def _compare_cell_boxes(expected: Tensor, received: Any) -> str | None:
    """The default boxes of one cell, with a hint when they are right but listed in another order."""
    problem = _compare_tensors(expected, received)
    if problem is None or "wrong values" not in problem:
        return problem

    def rows(boxes: Tensor) -> list[tuple[float, ...]]:
        return sorted(map(tuple, boxes.detach().cpu().double().round(decimals=4).tolist()))

    if rows(received) == rows(expected):  # the same boxes, listed in another order
        return ("returned the right boxes in a different order: ssd_lite's order is ratio 1 at scale s, "
                "ratio 1 at scale sqrt(s * s_next), then r and 1/r for each aspect ratio r")
    return problem


def _compare_indices(expected: Tensor, received: Any) -> str | None:
    """Kept indices of NMS: the same boxes, in the same order (decreasing score)."""
    problem = _compare_tensors(expected, received)
    if problem is None or not isinstance(received, Tensor) or received.dim() != 1 or _kind(received) != "int":
        return problem
    if sorted(received.tolist()) == sorted(expected.tolist()):
        return "kept the right boxes in a different order: return them by decreasing score"
    return f"kept boxes {received.tolist()}, expected {expected.tolist()}"


def _with_inputs(reference: Callable) -> Callable:
    """The reference's answer together with the case's inputs, for a comparison that needs them."""
    return lambda *args: (reference(*args), args)


def _compare_mining(expected: tuple[Tensor, tuple], received: Any):
    """The mask of hard_negative_mining, or any mask an equally valid tie-break gives: per image the same
    number of negatives, only negatives, and none left behind with a higher loss than one picked.
    `expected` is (mask, (conf_loss, labels, ...)), from _with_inputs."""
    mask, (conf_loss, labels, *_) = expected
    problem = _compare_tensors(mask, received)
    if problem is None or "wrong values" not in problem:
        return None if problem is None else (problem, mask, received)
    received = received.detach().cpu()
    if (received & (labels > 0)).any():
        problem = "picked a positive: the mask must hold negatives (label 0) only"
    elif not torch.equal(received.sum(dim=1), mask.sum(dim=1)):
        problem = (f"picked the wrong number of negatives per image ({received.sum(dim=1).tolist()} "
                   f"instead of {mask.sum(dim=1).tolist()})")
    else:
        problem = None
        for b in range(len(labels)):
            picked, left = conf_loss[b][received[b]], conf_loss[b][(labels[b] == 0) & ~received[b]]
            if len(picked) and len(left) and picked.min() < left.max():
                problem = f"did not pick the hardest negatives of image {b} (those with the highest loss)"
                break
    return None if problem is None else (problem, mask, received)


# ---------------------------------------------------------------------------------------------------
# Inputs (seeded; a generator of their own, so the checkers never touch the global RNG)
# ---------------------------------------------------------------------------------------------------

def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _boxes(rows: list[list[float]]) -> Tensor:
    """(N, 4) float32 boxes from a list of rows; [] gives shape (0, 4)."""
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """A random int in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _random_boxes(n: int, generator: torch.Generator, min_size: float = 0.05) -> Tensor:
    """(n, 4) valid normalised xyxy boxes, rounded to 2 decimals so a failing case is easy to read."""
    corner = torch.rand(n, 2, generator=generator) * (1 - min_size)
    size = min_size + torch.rand(n, 2, generator=generator) * (1 - min_size - corner)
    boxes = torch.cat([corner, corner + size], dim=1)
    return (boxes * 100).round() / 100


def _crowded_boxes(n: int, iou_threshold: float, generator: torch.Generator) -> Tensor:
    """(n, 4) boxes packed into the middle of the image, so that many overlap; no two with an IoU too
    close to the threshold to call (a correct answer could go either way there)."""
    while True:
        boxes = _random_boxes(n, generator, min_size=0.2) * 0.6 + 0.2 * torch.rand(1, generator=generator)
        boxes = (boxes * 100).round() / 100
        if ((box_iou(boxes, boxes) - iou_threshold).abs() > 1e-4).all():
            return boxes


def _distinct_scores(n: int, generator: torch.Generator) -> Tensor:
    """(n,) scores in (0, 1), all different, so that sorting them has no ties to break."""
    return torch.randperm(n, generator=generator).float().add(1).div(n + 1).round(decimals=3)


def _untied_match_case(generator: torch.Generator, priors: Tensor, iou_threshold: float) -> tuple:
    """Random objects whose matching has no ties (which any correct tie-break could resolve its own way)."""
    while True:
        num_objects = _randint(1, 3, generator)
        gt_boxes = _random_boxes(num_objects, generator, min_size=0.1)
        gt_labels = torch.randint(1, 6, (num_objects,), generator=generator)
        ious = box_iou(gt_boxes, cxcywh_to_xyxy(priors))  # (G, P)
        top_per_object = ious.topk(2, dim=1).values  # best and second best prior per object
        best_prior_per_object = ious.argmax(dim=1)
        per_prior = ious.topk(min(2, num_objects), dim=0).values
        untied = ((top_per_object[:, 0] - top_per_object[:, 1]).abs() > 1e-4).all()
        untied &= len(set(best_prior_per_object.tolist())) == num_objects
        if num_objects > 1:  # a prior equally good for two objects
            overlapping = per_prior[0] > 0
            untied &= ((per_prior[0] - per_prior[1]).abs()[overlapping] > 1e-4).all()
        untied &= ((ious - iou_threshold).abs() > 1e-4).all()  # not on the threshold, up to rounding
        if untied:
            return gt_boxes, gt_labels, priors, iou_threshold


def _mining_case(generator: torch.Generator, batch_size: int, num_priors: int) -> tuple[Tensor, Tensor]:
    """(conf_loss, labels) of a batch: distinct losses (no ties to break), about 4 in 5 priors background."""
    num_boxes = batch_size * num_priors
    conf_loss = torch.randperm(num_boxes, generator=generator).add(1).div(num_boxes).round(decimals=4)
    conf_loss = conf_loss.reshape(batch_size, num_priors)
    labels = torch.randint(1, 4, (batch_size, num_priors), generator=generator)
    labels[torch.rand(batch_size, num_priors, generator=generator) < 0.8] = 0
    return conf_loss, labels


def _loss_case(generator: torch.Generator, batch_size: int, num_priors: int, num_classes: int = 4,
               positive_fraction: float = 0.25) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random (loc_pred, conf_pred, loc_targets, labels) of a batch, with about 1 positive in 4."""
    loc_pred = torch.randn(batch_size, num_priors, 4, generator=generator).round(decimals=2)
    conf_pred = torch.randn(batch_size, num_priors, num_classes, generator=generator).round(decimals=2)
    loc_targets = torch.randn(batch_size, num_priors, 4, generator=generator).round(decimals=2)
    labels = torch.randint(1, num_classes, (batch_size, num_priors), generator=generator)
    labels[torch.rand(batch_size, num_priors, generator=generator) >= positive_fraction] = 0
    loc_targets[labels == 0] = 0  # as `match` leaves them
    return loc_pred, conf_pred, loc_targets, labels


def _curve(is_true_positive: list[bool], num_ground_truth: int) -> tuple[Tensor, Tensor]:
    """(precision, recall) of detections already in order of decreasing score."""
    true_positives = torch.tensor(is_true_positive, dtype=torch.float64).cumsum(0)
    precision = true_positives / torch.arange(1, len(is_true_positive) + 1, dtype=torch.float64)
    return precision, true_positives / num_ground_truth
