"""Exercise checkers for the lessons, and the tool that writes the student copies of the notebooks.

In a lesson, each code exercise is followed by a check cell such as `check_iou(my_iou)`. The checker
runs the reader's function on hand-picked edge cases and on seeded random ones, compares every answer
with ssd_lite's own function, prints a short verdict and returns True or False. A wrong answer never
makes it raise: an exception in the reader's code, a None, a wrong type, shape or dtype are reported
in a few lines, with the smallest input that fails, the expected and the received value.

    python -m ssd_lite.exercises student [--notebooks notebooks] [--out notebooks/student] [--check]

writes the student copies: every lesson notebooks/NN_*.ipynb with each solution region (the lines from
`### BEGIN SOLUTION` to `### END SOLUTION`, nbgrader's markers) replaced by a placeholder that raises
NotImplementedError, and every output cleared. `--check` writes nothing and exits with status 1 if
the committed copies differ from what would be written.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from ssd_lite.boxes import box_iou, cxcywh_to_xyxy, encode, xyxy_to_cxcywh
from ssd_lite.matching import match
from ssd_lite.priors import cell_default_boxes, default_boxes, prior_scales

# Tolerance for float answers: float32 arithmetic done in another order differs by ~1e-6.
ATOL = 1e-4
RTOL = 1e-4


# ---------------------------------------------------------------------------------------------------
# The shared runner
# ---------------------------------------------------------------------------------------------------

class Case(NamedTuple):
    """One input to try: positional arguments for the reader's function, and what the case is about."""
    args: tuple
    note: str = ""


# A comparison returns None when the answer is right, else a message, or (message, expected_part,
# received_part) to show only the wrong part of a composite answer.
Compare = Callable[[Any, Any], "str | tuple[str, Any, Any] | None"]


_RAISED = object()  # stands for "no answer received: the function raised"


def _run_checks(name: str, fn: Callable, cases: Sequence[Case], reference: Callable, compare: Compare,
                arg_names: Sequence[str] = ()) -> bool:
    """Run `fn` and `reference` on every case, print a verdict, return True if every answer is right.

    Every case gets fresh copies of its inputs (so one case cannot spoil the next), and an answer that
    is right but changed its input in place is wrong: the caller's tensors would be corrupted.
    """
    if not callable(fn):
        print(f"✗ {name} needs your function itself, e.g. {name}(my_function), not its result "
              f"(got a {type(fn).__name__}).")
        return False
    fn_name = getattr(fn, "__name__", "your function")
    failures = []  # (case, message, expected, received)
    for case in cases:
        expected = reference(*copy.deepcopy(case.args))
        args = copy.deepcopy(case.args)
        try:
            received = fn(*args)
        except NotImplementedError:
            print(f"Not attempted yet: replace `raise NotImplementedError` in {fn_name} with your code.")
            return False
        except Exception as error:  # the reader's bug, reported below without a traceback
            failures.append((case, _describe_error(error, fn), expected, _RAISED))
            continue
        result = compare(expected, received)
        if result is None:
            result = _input_changed(case.args, args, arg_names)
        if result is not None:
            if isinstance(result, str):
                result = (result, expected, received)
            failures.append((case, *result))

    if not failures:
        print(f"✓ Correct: passed all {len(cases)} cases.")
        return True
    case, message, expected, received = min(failures, key=lambda failure: _size(failure[0].args))
    about = f" ({case.note})" if case.note else ""
    print(f"✗ Not yet: {len(failures)} of {len(cases)} cases failed. The smallest failing case{about}:")
    names = list(arg_names) + [f"argument {i + 1}" for i in range(len(arg_names), len(case.args))]
    for arg_name, value in zip(names, case.args):
        print(f"    {arg_name} = {_show(value, indent=len(arg_name) + 7)}")
    print(f"  {fn_name} {message}")
    print(f"  expected: {_show(expected, indent=12)}")
    if received is not _RAISED:
        print(f"  received: {_show(received, indent=12)}")
    return False


def _describe_error(error: Exception, fn: Callable) -> str:
    """'raised IndexError: ...' plus the line of the reader's function where it happened, if known."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if len(text) > 160:
        text = text[:157] + "..."
    message = f"raised {type(error).__name__}" + (f": {text}" if text else "")
    code = getattr(fn, "__code__", None)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if code is not None and (frame.filename, frame.name) == (code.co_filename, code.co_name)]
    if frames and frames[-1].line:
        line_number = frames[-1].lineno - code.co_firstlineno + 1  # counted from the `def` line
        message += f"\n  at line {line_number} of {fn.__name__}: {frames[-1].line.strip()}"
    return message


def _input_changed(original: tuple, after: tuple, arg_names: Sequence[str]) -> str | None:
    """A message if the reader's function changed one of its input tensors, else None."""
    for i, (before, now) in enumerate(zip(original, after)):
        if isinstance(before, Tensor) and isinstance(now, Tensor):
            changed = before.shape != now.shape or not torch.equal(before, now)
        else:
            changed = False
        if changed:
            arg_name = arg_names[i] if i < len(arg_names) else f"argument {i + 1}"
            return (f"gave the right answer but changed its input `{arg_name}` in place: work on a copy "
                    f"(e.g. `{arg_name}.clone()`), or build a new tensor, so the caller's data stays intact")
    return None


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
    return repr(value)


# ---------------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------------

_KINDS = {"float": "a float tensor", "int": "an integer tensor (int64)", "bool": "a bool tensor (a mask)"}


def _kind(tensor: Tensor) -> str:
    if tensor.dtype == torch.bool:
        return "bool"
    return "float" if tensor.is_floating_point() else "int"


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
    received, expected = received.double(), expected.double()
    if torch.isnan(received).any() and not torch.isnan(expected).any():
        return f"returned {label} containing NaN"
    if torch.allclose(received, expected, rtol=RTOL, atol=ATOL, equal_nan=True):
        return None
    difference = (received - expected).abs().nan_to_num(nan=math.inf)
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


# ---------------------------------------------------------------------------------------------------
# Random inputs (seeded; a generator of their own, so the checkers never touch the global RNG)
# ---------------------------------------------------------------------------------------------------

def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_boxes(n: int, generator: torch.Generator, min_size: float = 0.05) -> Tensor:
    """(n, 4) valid normalised xyxy boxes, rounded to 2 decimals so a failing case is easy to read."""
    corner = torch.rand(n, 2, generator=generator) * (1 - min_size)
    size = min_size + torch.rand(n, 2, generator=generator) * (1 - min_size - corner)
    boxes = torch.cat([corner, corner + size], dim=1)
    return (boxes * 100).round() / 100


def _boxes(rows: list[list[float]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.float32).reshape(-1, 4)


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """A random int in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


# ---------------------------------------------------------------------------------------------------
# Lesson 00-02: box geometry, default boxes, matching
# ---------------------------------------------------------------------------------------------------

def check_iou(fn: Callable) -> bool:
    """fn(boxes1 (N, 4) xyxy, boxes2 (M, 4) xyxy) -> (N, M) IoU of every pair; reference: box_iou."""
    cases = [
        Case((_boxes([[0.1, 0.1, 0.5, 0.5]]), _boxes([[0.1, 0.1, 0.5, 0.5]])), "identical boxes"),
        Case((_boxes([[0.0, 0.0, 0.2, 0.2]]), _boxes([[0.5, 0.5, 1.0, 1.0]])),
             "boxes apart in x and in y: no overlap"),
        Case((_boxes([[0.0, 0.0, 0.4, 0.5]]), _boxes([[0.6, 0.0, 1.0, 0.5]])), "boxes apart in x only"),
        Case((_boxes([[0.0, 0.0, 0.5, 0.5]]), _boxes([[0.5, 0.0, 1.0, 0.5]])), "boxes touching along an edge"),
        Case((_boxes([[0.0, 0.0, 1.0, 1.0]]), _boxes([[0.25, 0.25, 0.75, 0.75]])), "one box inside the other"),
        Case((_boxes([]), _boxes([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.9, 0.9]])), "no boxes in boxes1 (N = 0)"),
    ]
    generator = _generator(0)
    for n, m in [(2, 3), (3, 1), (1, 4), (4, 4), (5, 2), (6, 6)]:
        cases.append(Case((_random_boxes(n, generator), _random_boxes(m, generator)), f"{n} by {m} random boxes"))
    return _run_checks("check_iou", fn, cases, box_iou, _compare_tensors, ("boxes1", "boxes2"))


def check_xyxy_to_cxcywh(fn: Callable) -> bool:
    """fn(boxes (N, 4) xyxy) -> (N, 4) cxcywh; reference: boxes.xyxy_to_cxcywh."""
    cases = [
        Case((_boxes([[0.0, 0.0, 1.0, 1.0]]),), "the whole image"),
        Case((_boxes([[0.1, 0.2, 0.5, 0.9]]),), "a tall box"),
        Case((_boxes([[0.3, 0.4, 0.9, 0.6]]),), "a wide box"),
        Case((_boxes([]),), "no boxes (N = 0)"),
    ]
    generator = _generator(1)
    for n in [2, 3, 5, 8]:
        cases.append(Case((_random_boxes(n, generator),), f"{n} random boxes"))
    return _run_checks("check_xyxy_to_cxcywh", fn, cases, xyxy_to_cxcywh, _compare_tensors, ("boxes",))


def check_prior_scales(fn: Callable) -> bool:
    """fn(num_feature_maps, s_min, s_max) -> list of m + 1 scales; reference: priors.prior_scales."""
    cases = [
        Case((1, 0.3, 0.9), "one feature map: the step is s_max - s_min"),
        Case((2, 0.2, 0.9), "two feature maps"),
        Case((3, 0.5, 0.5), "s_min = s_max: every map the same scale"),
        Case((6, 0.2, 0.9), "the paper's six maps"),
        Case((4, 0.1, 0.95), "four maps"),
    ]
    generator = _generator(2)
    for _ in range(4):
        m = _randint(2, 8, generator)
        s_min = round(0.1 + 0.2 * float(torch.rand(1, generator=generator)), 2)
        s_max = round(0.6 + 0.35 * float(torch.rand(1, generator=generator)), 2)
        cases.append(Case((m, s_min, s_max), f"{m} maps"))
    return _run_checks("check_prior_scales", fn, cases, prior_scales, _compare_floats,
                       ("num_feature_maps", "s_min", "s_max"))


def _compare_cell_boxes(expected: Tensor, received: Any):
    problem = _compare_tensors(expected, received)
    if problem is None or "wrong values" not in problem:
        return problem
    def rows(boxes: Tensor) -> list[tuple[float, ...]]:
        return sorted(map(tuple, boxes.detach().cpu().double().round(decimals=4).tolist()))

    if rows(received) == rows(expected):  # the same boxes, listed in another order
        return ("returned the right boxes in a different order: ssd_lite's order is ratio 1 at scale s, "
                "ratio 1 at scale sqrt(s * s_next), then r and 1/r for each aspect ratio r")
    return problem


def check_cell_default_boxes(fn: Callable) -> bool:
    """fn(cx, cy, scale, next_scale, aspect_ratios) -> (A, 4) cxcywh; reference: priors.cell_default_boxes."""
    cases = [
        Case((0.5, 0.5, 0.2, 0.35, ()), "no extra aspect ratios: the two square boxes only"),
        Case((0.5, 0.5, 0.2, 0.37, (2,)), "aspect ratio 2"),
        Case((0.25, 0.75, 0.3, 0.5, (2, 3)), "aspect ratios 2 and 3, an off-centre cell"),
    ]
    generator = _generator(3)
    for ratios in [(2,), (3,), (2, 3), (1.5, 4)]:
        cx, cy = (round(float(v), 2) for v in torch.rand(2, generator=generator))
        scale = round(0.1 + 0.6 * float(torch.rand(1, generator=generator)), 2)
        next_scale = round(scale + 0.17, 2)
        cases.append(Case((cx, cy, scale, next_scale, ratios), f"aspect ratios {ratios}"))
    return _run_checks("check_cell_default_boxes", fn, cases, cell_default_boxes, _compare_cell_boxes,
                       ("cx", "cy", "scale", "next_scale", "aspect_ratios"))


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


def check_match(fn: Callable) -> bool:
    """fn(gt_boxes, gt_labels, priors, iou_threshold=0.5) -> (loc_targets (P, 4), labels (P,)); reference: match."""
    far_prior = [0.8, 0.8, 0.2, 0.2]
    cases = [
        Case((_boxes([]), torch.zeros(0, dtype=torch.long), _boxes([[0.25, 0.25, 0.5, 0.5], far_prior]), 0.5),
             "no objects (G = 0): every prior is background"),
        Case((_boxes([[0.0, 0.0, 0.5, 0.5]]), torch.tensor([3]), _boxes([[0.25, 0.25, 0.5, 0.5], far_prior]), 0.5),
             "one object exactly on a prior"),
        Case((_boxes([[0.4, 0.4, 0.5, 0.5]]), torch.tensor([1]), _boxes([[0.5, 0.5, 0.5, 0.5], far_prior]), 0.5),
             "a small object no prior overlaps by 0.5 still gets its best prior"),
        Case((_boxes([[0.0, 0.0, 0.25, 0.5]]), torch.tensor([2]),
              _boxes([[0.125, 0.25, 0.25, 0.5], [0.25, 0.25, 0.5, 0.5], far_prior]), 0.5),
             "a prior with IoU exactly 0.5 is a positive (IoU >= threshold)"),
        Case((_boxes([[0.0, 0.0, 0.5, 0.5], [0.55, 0.6, 0.95, 0.95]]), torch.tensor([1, 4]),
              _boxes([[0.25, 0.25, 0.5, 0.5], [0.3, 0.3, 0.4, 0.4], [0.75, 0.75, 0.4, 0.4], [0.7, 0.8, 0.3, 0.3]]),
              0.5), "two objects"),
    ]
    generator = _generator(4)
    small_grid = default_boxes([2], [0.35, 0.6], [(2,)])  # 16 priors
    finer_grid = default_boxes([3, 1], [0.3, 0.7, 0.9], [(), (2,)])  # 24 priors
    for priors, iou_threshold in [(small_grid, 0.5), (small_grid, 0.3), (finer_grid, 0.5),
                                  (finer_grid, 0.4), (small_grid, 0.5), (finer_grid, 0.5)]:
        gt_boxes, gt_labels, priors, iou_threshold = _untied_match_case(generator, priors, iou_threshold)
        cases.append(Case((gt_boxes, gt_labels, priors, iou_threshold),
                          f"{len(gt_boxes)} random objects, {len(priors)} priors, threshold {iou_threshold}"))
    return _run_checks("check_match", fn, cases, match, _compare_pair(("loc_targets", "labels")),
                       ("gt_boxes", "gt_labels", "priors", "iou_threshold"))


def check_encode(fn: Callable) -> bool:
    """fn(boxes_xyxy (P, 4), priors_cxcywh (P, 4)) -> (P, 4) offsets; reference: boxes.encode."""
    cases = [
        Case((_boxes([[0.2, 0.2, 0.6, 0.6]]), _boxes([[0.4, 0.4, 0.4, 0.4]])),
             "a box equal to its prior: zero offsets"),
        Case((_boxes([[0.4, 0.2, 0.8, 0.6]]), _boxes([[0.4, 0.4, 0.4, 0.4]])),
             "a box shifted right by half its prior's width"),
        Case((_boxes([[0.1, 0.3, 0.9, 0.5]]), _boxes([[0.5, 0.4, 0.4, 0.4]])),
             "a box wider and flatter than its prior"),
        Case((_boxes([]), _boxes([])), "no boxes (P = 0)"),
    ]
    generator = _generator(5)
    for n in [2, 3, 5, 8]:
        priors = xyxy_to_cxcywh(_random_boxes(n, generator, min_size=0.1))
        cases.append(Case((_random_boxes(n, generator), priors), f"{n} random boxes and priors"))
    return _run_checks("check_encode", fn, cases, encode, _compare_tensors, ("boxes_xyxy", "priors_cxcywh"))


# ---------------------------------------------------------------------------------------------------
# Lessons 03-05: loss, hard negative mining, NMS
# ---------------------------------------------------------------------------------------------------

def check_smooth_l1(fn: Callable) -> bool:
    """fn(input, target, beta=1.0) -> elementwise loss, same shape; reference: loss.smooth_l1."""
    from ssd_lite.loss import smooth_l1

    def with_beta(input, target, beta=None):  # the default beta is the reader's own
        return smooth_l1(input, target) if beta is None else smooth_l1(input, target, beta)

    cases = [
        Case((torch.tensor([0.0]), torch.tensor([0.0])), "no error: zero loss"),
        Case((torch.tensor([0.5]), torch.tensor([0.0])), "a small error: the quadratic part"),
        Case((torch.tensor([-3.0]), torch.tensor([0.0])), "a large negative error: the linear part"),
        Case((torch.tensor([1.0, -1.0]), torch.tensor([0.0, 0.0])), "errors of exactly beta = 1"),
        Case((torch.tensor([0.2, 1.5, -0.4]), torch.tensor([0.0, 0.0, 0.0]), 0.5), "beta = 0.5"),
        Case((torch.tensor([[0.5, -2.0], [3.0, 0.25]]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]), 2.0),
             "a (2, 2) tensor, beta = 2"),
    ]
    generator = _generator(6)
    for shape, beta in [((5,), None), ((3, 4), 1.0), ((2, 3, 4), 1 / 9), ((8, 4), 0.5)]:
        input = (torch.randn(shape, generator=generator) * 2).round(decimals=2)
        target = (torch.randn(shape, generator=generator)).round(decimals=2)
        args = (input, target) if beta is None else (input, target, beta)
        note = f"random {tuple(shape)} tensors" + ("" if beta is None else f", beta = {beta:.3g}")
        cases.append(Case(args, note))
    return _run_checks("check_smooth_l1", fn, cases, with_beta, _compare_tensors, ("input", "target", "beta"))


def _compare_mining(expected: Tensor, received: Any, conf_loss: Tensor, labels: Tensor) -> str | None:
    """Exact mask, or any mask an equally valid tie-break gives: per image the same number of negatives,
    only negatives, and none left behind with a higher loss than one picked."""
    problem = _compare_tensors(expected, received)
    if problem is None or "wrong values" not in problem:
        return problem
    received = received.detach().cpu()
    if (received & (labels > 0)).any():
        return "picked a positive: the mask must hold negatives (label 0) only"
    if not torch.equal(received.sum(dim=1), expected.sum(dim=1)):
        return (f"picked the wrong number of negatives per image ({received.sum(dim=1).tolist()} "
                f"instead of {expected.sum(dim=1).tolist()})")
    for b in range(len(labels)):
        picked, left = conf_loss[b][received[b]], conf_loss[b][(labels[b] == 0) & ~received[b]]
        if len(picked) and len(left) and picked.min() < left.max():
            return f"did not pick the hardest negatives of image {b} (those with the highest loss)"
    return None


def check_hard_negative_mining(fn: Callable) -> bool:
    """fn(conf_loss (B, P), labels (B, P), neg_pos_ratio=3) -> (B, P) bool mask of the mined negatives.

    Reference: loss.hard_negative_mining. Cases avoid ties in the loss, and any tie-break is accepted.
    """
    from ssd_lite.loss import hard_negative_mining

    def reference(conf_loss, labels, neg_pos_ratio=None):
        if neg_pos_ratio is None:
            return hard_negative_mining(conf_loss, labels)
        return hard_negative_mining(conf_loss, labels, neg_pos_ratio)

    cases = [
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]]), torch.tensor([[1, 0, 0, 0, 0]]), 1),
             "one positive, ratio 1: the single hardest negative"),
        Case((torch.tensor([[0.2, 0.8, 0.4, 0.6]]), torch.tensor([[0, 0, 0, 0]])),
             "no positives: no negatives either (ratio times 0)"),
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7, 0.2]]), torch.tensor([[1, 0, 0, 0, 0, 2]])),
             "two positives, ratio 3: the 4 hardest negatives, out of 4"),
        Case((torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.7]]), torch.tensor([[1, 2, 0, 0, 3]])),
             "more negatives wanted (9) than there are (2): take them all"),
        Case((torch.tensor([[0.3, 0.9, 0.1, 0.4, 0.2, 0.8], [0.5, 0.6, 0.7, 0.1, 0.2, 0.3]]),
              torch.tensor([[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]), 2),
             "two images: mining is per image (the second has no positives)"),
    ]
    generator = _generator(7)
    for batch_size, num_priors, ratio in [(1, 12, 3), (2, 10, 2), (3, 16, 3), (2, 30, 3), (4, 20, None)]:
        num_boxes = batch_size * num_priors  # distinct losses, so there are no ties to break
        conf_loss = torch.randperm(num_boxes, generator=generator).add(1).div(num_boxes).round(decimals=4)
        conf_loss = conf_loss.reshape(batch_size, num_priors)
        labels = torch.randint(1, 4, (batch_size, num_priors), generator=generator)
        labels[torch.rand(batch_size, num_priors, generator=generator) < 0.8] = 0  # mostly background
        args = (conf_loss, labels) if ratio is None else (conf_loss, labels, ratio)
        cases.append(Case(args, f"{batch_size} random images of {num_priors} priors"))

    def mask_and_inputs(conf_loss, labels, *ratio):
        # The comparison needs the inputs too, to accept any valid tie-break.
        return reference(conf_loss, labels, *ratio), conf_loss, labels

    def compare(expected, received):
        mask, conf_loss, labels = expected
        problem = _compare_mining(mask, received, conf_loss, labels)
        return None if problem is None else (problem, mask, received)
    return _run_checks("check_hard_negative_mining", fn, cases, mask_and_inputs, compare,
                       ("conf_loss", "labels", "neg_pos_ratio"))


def check_nms(fn: Callable) -> bool:
    """fn(boxes (K, 4) xyxy, scores (K,), iou_threshold) -> kept indices, by decreasing score; reference: nms.nms."""
    from ssd_lite.nms import nms

    cases = [
        Case((_boxes([[0.1, 0.1, 0.5, 0.5]]), torch.tensor([0.9]), 0.5), "one box: keep it"),
        Case((_boxes([[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.5, 0.5]]), torch.tensor([0.6, 0.9]), 0.5),
             "two identical boxes: keep the higher score only"),
        Case((_boxes([[0.0, 0.0, 0.3, 0.3], [0.6, 0.6, 0.9, 0.9]]), torch.tensor([0.8, 0.7]), 0.5),
             "two separate boxes: keep both"),
        Case((_boxes([[0.0, 0.0, 0.25, 0.5], [0.0, 0.0, 0.5, 0.5]]), torch.tensor([0.9, 0.8]), 0.5),
             "IoU exactly 0.5 with threshold 0.5: keep both (suppress only IoU > threshold)"),
        Case((_boxes([[0.0, 0.0, 0.4, 0.4], [0.1, 0.0, 0.5, 0.4], [0.2, 0.0, 0.6, 0.4]]),
              torch.tensor([0.9, 0.8, 0.7]), 0.5),
             "a chain: box 1 is suppressed by box 0, so it cannot suppress box 2"),
        Case((_boxes([]), torch.zeros(0), 0.5), "no boxes"),
    ]
    generator = _generator(8)
    for n, iou_threshold in [(4, 0.5), (6, 0.3), (8, 0.45), (12, 0.5), (20, 0.6)]:
        while True:  # crowded boxes, so that many overlap; none with an IoU too close to the threshold to call
            boxes = _random_boxes(n, generator, min_size=0.2) * 0.6 + 0.2 * torch.rand(1, generator=generator)
            boxes = (boxes * 100).round() / 100
            if ((box_iou(boxes, boxes) - iou_threshold).abs() > 1e-4).all():
                break
        scores = torch.randperm(n, generator=generator).float().add(1).div(n + 1).round(decimals=3)  # distinct
        cases.append(Case((boxes, scores, iou_threshold), f"{n} random boxes, threshold {iou_threshold}"))

    return _run_checks("check_nms", fn, cases, nms, _compare_indices, ("boxes", "scores", "iou_threshold"))


def _compare_indices(expected: Tensor, received: Any) -> str | None:
    """Kept indices of NMS: the same boxes, in the same order (decreasing score)."""
    problem = _compare_tensors(expected, received)
    if problem is None or not isinstance(received, Tensor) or received.dim() != 1 or _kind(received) != "int":
        return problem
    if sorted(received.tolist()) == sorted(expected.tolist()):
        return "kept the right boxes in a different order: return them by decreasing score"
    return f"kept boxes {received.tolist()}, expected {expected.tolist()}"


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


def _as_float(reference: Callable) -> Callable:
    return lambda *args: float(reference(*args))


def check_localization_loss(fn: Callable) -> bool:
    """fn(loc_pred (B, P, 4), loc_targets (B, P, 4), labels (B, P)) -> scalar L_loc / N.

    Smooth L1 summed over the positives' offsets, divided by N, the number of positives in the batch
    (by 1 when N = 0). Reference: the loc_loss of loss.multibox_loss.
    """
    from ssd_lite.loss import multibox_loss

    def reference(loc_pred, loc_targets, labels):
        num_classes = max(int(labels.max()) + 1, 2) if labels.numel() else 2
        conf_pred = torch.zeros(*labels.shape, num_classes)  # the confidence part is not checked here
        return multibox_loss(loc_pred, conf_pred, loc_targets, labels)[0]

    cases = [
        Case((torch.tensor([[[0.5, 0.0, 0.0, 0.0], [3.0, 3.0, 3.0, 3.0]]]), torch.zeros(1, 2, 4),
              torch.tensor([[1, 0]])), "one positive, and a background box whose prediction is ignored"),
        Case((torch.tensor([[[0.5, -2.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]]), torch.zeros(1, 2, 4),
              torch.tensor([[2, 1]])), "two positives: the sum divided by N = 2"),
        Case((torch.ones(1, 3, 4), torch.zeros(1, 3, 4), torch.tensor([[0, 0, 0]])),
             "no positives (N = 0): the loss is 0, not NaN"),
        Case((torch.tensor([[[1.0, 0, 0, 0], [0, 0, 0, 0]], [[0, 0, 0, 0], [2.0, 0, 0, 0]]]), torch.zeros(2, 2, 4),
              torch.tensor([[1, 0], [0, 0]])), "two images: N counts the positives of the whole batch"),
    ]
    generator = _generator(13)
    for batch_size, num_priors in [(1, 6), (2, 8), (3, 10), (4, 16)]:
        loc_pred, _, loc_targets, labels = _loss_case(generator, batch_size, num_priors)
        cases.append(Case((loc_pred, loc_targets, labels), f"{batch_size} random images of {num_priors} priors"))
    return _run_checks("check_localization_loss", fn, cases, _as_float(reference), _compare_float,
                       ("loc_pred", "loc_targets", "labels"))


def check_confidence_loss(fn: Callable) -> bool:
    """fn(conf_pred (B, P, C), labels (B, P), neg_pos_ratio=3) -> scalar L_conf / N.

    Cross-entropy summed over the positives and the hard negatives mined per image, divided by N, the
    number of positives in the batch (by 1 when N = 0). Reference: the conf_loss of loss.multibox_loss.
    """
    from ssd_lite.loss import multibox_loss

    def reference(conf_pred, labels, *neg_pos_ratio):
        zeros = torch.zeros(*labels.shape, 4)  # the localisation part is not checked here
        return multibox_loss(zeros, conf_pred, zeros, labels, *neg_pos_ratio)[1]

    cases = [
        Case((torch.tensor([[[0.0, 2.0], [1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[1, 0, 0]]), 1),
             "one positive, ratio 1: its loss plus the hardest negative's"),
        Case((torch.tensor([[[2.0, 0.0], [0.0, 1.0]]]), torch.tensor([[0, 0]])),
             "no positives (N = 0): no negatives either, the loss is 0"),
        Case((torch.tensor([[[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 0.5], [1.0, 1.0, 0.0], [0.0, 2.0, 0.0]]]),
              torch.tensor([[2, 0, 0, 0, 0]])), "ratio 3: three of the four negatives"),
        Case((torch.tensor([[[0.0, 1.0], [0.0, 2.0]], [[0.0, 3.0], [0.0, 1.5]]]), torch.tensor([[1, 0], [0, 0]])),
             "two images: mining is per image, N counts the whole batch"),
    ]
    generator = _generator(14)
    for batch_size, num_priors, num_classes, ratio in [(1, 8, 3, 3), (2, 10, 4, 2), (3, 12, 5, 3), (2, 20, 3, None)]:
        _, conf_pred, _, labels = _loss_case(generator, batch_size, num_priors, num_classes, 0.2)
        args = (conf_pred, labels) if ratio is None else (conf_pred, labels, ratio)
        cases.append(Case(args, f"{batch_size} random images of {num_priors} priors, {num_classes} classes"))
    return _run_checks("check_confidence_loss", fn, cases, _as_float(reference), _compare_float,
                       ("conf_pred", "labels", "neg_pos_ratio"))


def check_batched_nms(fn: Callable) -> bool:
    """fn(boxes (K, 4), scores (K,), labels (K,), iou_threshold) -> kept indices, by decreasing score.

    NMS within each label: boxes of different labels never suppress each other. Reference: nms.batched_nms.
    """
    from ssd_lite.nms import batched_nms

    same = [[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.52, 0.5]]  # IoU about 0.9
    cases = [
        Case((_boxes(same), torch.tensor([0.9, 0.8]), torch.tensor([1, 2]), 0.5),
             "two overlapping boxes of different classes: keep both"),
        Case((_boxes(same), torch.tensor([0.9, 0.8]), torch.tensor([3, 3]), 0.5),
             "two overlapping boxes of the same class: keep the better one"),
        Case((_boxes(same + [[0.6, 0.6, 0.9, 0.9]]), torch.tensor([0.7, 0.8, 0.9]), torch.tensor([1, 2, 1]), 0.5),
             "kept boxes of several classes come out by decreasing score"),
        Case((_boxes([]), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5), "no boxes"),
    ]
    generator = _generator(15)
    for n, iou_threshold in [(5, 0.5), (8, 0.45), (12, 0.3), (20, 0.5)]:
        while True:  # crowded boxes, none with an IoU too close to the threshold to call
            boxes = _random_boxes(n, generator, min_size=0.2) * 0.6 + 0.2 * torch.rand(1, generator=generator)
            boxes = (boxes * 100).round() / 100
            if ((box_iou(boxes, boxes) - iou_threshold).abs() > 1e-4).all():
                break
        scores = torch.randperm(n, generator=generator).float().add(1).div(n + 1).round(decimals=3)  # distinct
        labels = torch.randint(1, 4, (n,), generator=generator)
        cases.append(Case((boxes, scores, labels, iou_threshold), f"{n} random boxes of 3 classes"))
    return _run_checks("check_batched_nms", fn, cases, batched_nms, _compare_indices,
                       ("boxes", "scores", "labels", "iou_threshold"))


# ---------------------------------------------------------------------------------------------------
# Lessons 06-07: augmentation, counting boxes, evaluation
# ---------------------------------------------------------------------------------------------------

def _hflip_boxes(boxes: Tensor) -> Tensor:
    """Mirroring the image left-right sends x to 1 - x, and the left edge becomes the right one."""
    x_min, y_min, x_max, y_max = boxes.unbind(-1)
    return torch.stack([1 - x_max, y_min, 1 - x_min, y_max], dim=-1)


def check_hflip_boxes(fn: Callable) -> bool:
    """fn(boxes (N, 4) normalised xyxy) -> (N, 4) the boxes in the left-right mirrored image."""
    cases = [
        Case((_boxes([[0.0, 0.0, 1.0, 1.0]]),), "the whole image: unchanged"),
        Case((_boxes([[0.1, 0.2, 0.4, 0.6]]),), "a box on the left moves to the right"),
        Case((_boxes([[0.3, 0.1, 0.7, 0.9]]),), "a centred box stays in place"),
        Case((_boxes([]),), "no boxes (N = 0)"),
    ]
    generator = _generator(9)
    for n in [2, 3, 5, 8]:
        cases.append(Case((_random_boxes(n, generator),), f"{n} random boxes"))
    return _run_checks("check_hflip_boxes", fn, cases, _hflip_boxes, _compare_tensors, ("boxes",))


def _num_default_boxes(feature_map_sizes: Sequence[int], boxes_per_location: Sequence[int]) -> int:
    """A map of f x f cells with b boxes per cell holds f * f * b default boxes."""
    return sum(f * f * b for f, b in zip(feature_map_sizes, boxes_per_location))


def check_num_default_boxes(fn: Callable) -> bool:
    """fn(feature_map_sizes, boxes_per_location) -> int, the total number of default boxes."""
    cases = [
        Case(([1], [4]), "one 1 x 1 map"),
        Case(([3], [6]), "one 3 x 3 map"),
        Case(([2, 1], [6, 4]), "two maps"),
        Case(([38, 19, 10, 5, 3, 1], [4, 6, 6, 6, 4, 4]), "SSD300: 8732"),
    ]
    generator = _generator(10)
    for _ in range(4):
        m = _randint(1, 6, generator)
        sizes = sorted((_randint(1, 40, generator) for _ in range(m)), reverse=True)
        per_location = [4 if float(torch.rand(1, generator=generator)) < 0.5 else 6 for _ in range(m)]
        cases.append(Case((sizes, per_location), f"{m} random maps"))
    return _run_checks("check_num_default_boxes", fn, cases, _num_default_boxes, _compare_int,
                       ("feature_map_sizes", "boxes_per_location"))


def check_precision_recall(fn: Callable) -> bool:
    """fn(scores (K,), is_true_positive (K,) bool, num_ground_truth) -> (precision (K,), recall (K,)).

    Both in order of decreasing score; reference: evaluate.precision_recall.
    """
    from ssd_lite.evaluate import precision_recall

    cases = [
        Case((torch.tensor([0.9]), torch.tensor([True]), 1), "one right detection of one object"),
        Case((torch.tensor([0.9]), torch.tensor([False]), 2), "one wrong detection"),
        Case((torch.tensor([0.3, 0.9]), torch.tensor([True, False]), 1),
             "unsorted scores: the higher-scored wrong detection comes first"),
        Case((torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([True, False, True, True]), 5),
             "four detections, five objects: recall stays below 1"),
        Case((torch.zeros(0), torch.zeros(0, dtype=torch.bool), 3), "no detections (K = 0)"),
    ]
    generator = _generator(11)
    for k in [3, 6, 10, 20]:
        scores = torch.randperm(k, generator=generator).float().add(1).div(k + 1).round(decimals=3)  # distinct
        is_true_positive = torch.rand(k, generator=generator) < 0.6
        num_ground_truth = int(is_true_positive.sum()) + _randint(0, 3, generator)
        cases.append(Case((scores, is_true_positive, max(num_ground_truth, 1)), f"{k} random detections"))
    return _run_checks("check_precision_recall", fn, cases, precision_recall,
                       _compare_pair(("precision", "recall")), ("scores", "is_true_positive", "num_ground_truth"))


def _curve(is_true_positive: list[bool], num_ground_truth: int, note: str) -> tuple[Tensor, Tensor, str]:
    """(precision, recall, note) of detections already in order of decreasing score."""
    true_positives = torch.tensor(is_true_positive, dtype=torch.float64).cumsum(0)
    precision = true_positives / torch.arange(1, len(is_true_positive) + 1, dtype=torch.float64)
    return precision, true_positives / num_ground_truth, note


def check_average_precision(fn: Callable, interpolations: Sequence[str] = ("all", "11point", "101point")) -> bool:
    """fn(precision (K,), recall (K,), interpolation) -> float AP; reference: evaluate.average_precision.

    `interpolations` limits the check to the rules an exercise asks for, e.g. ("11point",).
    """
    from ssd_lite.evaluate import average_precision

    # Object counts are 1 or primes other than 2 and 5, so no recall k / n lands on a sample point
    # k / 10 or k / 100 (other than 0 and 1), where float rounding (0.3 is 0.30000000000000004 in
    # np.linspace) would make a correct answer depend on how the reader builds the points.
    curves = [
        _curve([True], 1, "one right detection: AP 1"),
        _curve([False], 3, "one wrong detection: AP 0"),
        _curve([True, False], 3, "a right then a wrong detection, 3 objects"),
        _curve([False, True, True], 3, "precision rises after a miss: take the best precision to the right"),
        _curve([True, True, False, True, False], 7, "five detections, seven objects: recall stops below 1"),
    ]
    generator = _generator(12)
    for k in [6, 10, 25]:
        is_true_positive = (torch.rand(k, generator=generator) < 0.6).tolist()
        num_ground_truth = next(n for n in (3, 7, 11, 13, 17, 19, 23, 29, 31) if n >= sum(is_true_positive) + 1)
        curves.append(_curve(is_true_positive, num_ground_truth, f"a random curve of {k} detections"))
    cases = [Case((precision, recall, interpolation), f"{note}, {interpolation}")
             for interpolation in interpolations for precision, recall, note in curves]
    return _run_checks("check_average_precision", fn, cases, average_precision, _compare_float,
                       ("precision", "recall", "interpolation"))


# ---------------------------------------------------------------------------------------------------
# Student copies
# ---------------------------------------------------------------------------------------------------

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
PLACEHOLDER = ['# YOUR CODE HERE', 'raise NotImplementedError("Exercise: write your code here")']
# Cell metadata that only records one run (timings), not the lesson.
_TRANSIENT_CELL_METADATA = ("execution", "ExecuteTime")


class SolutionFormatError(ValueError):
    """A lesson's solution region or its nbgrader metadata is malformed."""


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _check_marker_mentions(source: str, where: str) -> None:
    """Refuse a line that mentions a marker without being one: nbgrader (0.9) takes every line containing
    "BEGIN SOLUTION" or "END SOLUTION", in any cell, even quoted in a sentence, for a marker."""
    for number, line in enumerate(source.split("\n"), start=1):
        mentions = "BEGIN SOLUTION" in line or "END SOLUTION" in line
        if mentions and line.strip() not in (BEGIN_SOLUTION, END_SOLUTION):
            raise SolutionFormatError(
                f"{where}: line {number} mentions a solution marker without being one ({line.strip()[:60]!r}); "
                f"nbgrader reads every line containing 'BEGIN SOLUTION' or 'END SOLUTION' as a marker: reword it, "
                f"or write the marker alone on its line")


def _has_markers(source: str) -> bool:
    """Whether a line holds a solution marker alone (a marker quoted in a sentence does not count)."""
    return any(line.strip() in (BEGIN_SOLUTION, END_SOLUTION) for line in source.split("\n"))


def strip_solutions(source: str, where: str) -> str:
    """Replace every `### BEGIN SOLUTION` ... `### END SOLUTION` region (markers included) by the
    placeholder, at the BEGIN marker's indentation. `where` names the cell in error messages."""
    lines = source.split("\n")
    result, begin = [], None
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped == BEGIN_SOLUTION:
            if begin is not None:
                raise SolutionFormatError(f"{where}: line {number} opens a second {BEGIN_SOLUTION} before "
                                          f"{END_SOLUTION} closes the one on line {begin}")
            indent = line[:len(line) - len(line.lstrip())]
            if not indent:
                raise SolutionFormatError(f"{where}: the solution region on line {number} is not indented; it "
                                          f"must sit inside a function body, or the student copy's placeholder "
                                          f"would raise when the cell runs")
            begin = number
            result += [indent + placeholder for placeholder in PLACEHOLDER]
        elif stripped == END_SOLUTION:
            if begin is None:
                raise SolutionFormatError(f"{where}: line {number} has {END_SOLUTION} without {BEGIN_SOLUTION}")
            begin = None
        elif begin is None:
            result.append(line)
    if begin is not None:
        raise SolutionFormatError(f"{where}: {BEGIN_SOLUTION} on line {begin} has no {END_SOLUTION}")
    return "\n".join(result)


def _split_lines(text: str) -> list[str]:
    """How nbformat stores a multi-line string: a list of lines, each with its newline but the last."""
    return text.splitlines(keepends=True)


def student_notebook(notebook: dict, name: str) -> dict:
    """The student copy of one lesson (a notebook as parsed JSON): solutions out, outputs cleared."""
    student = copy.deepcopy(notebook)
    student.get("metadata", {}).pop("widgets", None)
    for index, cell in enumerate(student["cells"]):
        nbgrader = cell.get("metadata", {}).get("nbgrader", {})
        where = f"{name}, cell {index}" + (f" ({nbgrader['grade_id']})" if "grade_id" in nbgrader else "")
        source = _source(cell)
        _check_marker_mentions(source, where)
        has_markers = _has_markers(source)
        if has_markers and cell["cell_type"] != "code":
            raise SolutionFormatError(f"{where}: solution markers are only supported in code cells")
        if has_markers and not nbgrader.get("solution"):
            raise SolutionFormatError(f'{where}: has a solution region but no nbgrader metadata with '
                                      f'"solution": true (see the exercise cell format in the contract)')
        if nbgrader.get("solution") and cell["cell_type"] == "code" and not has_markers:
            raise SolutionFormatError(f"{where}: is marked as an nbgrader solution cell but has no "
                                      f"{BEGIN_SOLUTION} ... {END_SOLUTION} region")
        for key in _TRANSIENT_CELL_METADATA:
            cell.get("metadata", {}).pop(key, None)
        if has_markers:
            cell["source"] = _split_lines(strip_solutions(source, where))
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return student


def _notebook_text(notebook: dict) -> str:
    """Serialise like nbformat (sorted keys, one-space indent, sources as lists of lines), so a copy
    reads the same in git diffs as a notebook saved by Jupyter, and the same input gives the same bytes."""
    notebook = copy.deepcopy(notebook)
    for cell in notebook["cells"]:
        if isinstance(cell.get("source"), str):
            cell["source"] = _split_lines(cell["source"])
    return json.dumps(notebook, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def lesson_paths(notebooks_dir: Path) -> list[Path]:
    """The lessons: notebooks/NN_name.ipynb, in course order."""
    return sorted(path for path in Path(notebooks_dir).glob("*.ipynb") if re.match(r"\d\d_", path.name))


def student_copies(notebooks_dir: Path) -> dict[str, str]:
    """{file name: text of its student copy} for every lesson in `notebooks_dir`."""
    copies = {}
    for path in lesson_paths(notebooks_dir):
        notebook = json.loads(path.read_text(encoding="utf-8"))
        copies[path.name] = _notebook_text(student_notebook(notebook, str(path)))
    return copies


def write_student_copies(notebooks_dir: Path, out_dir: Path) -> list[Path]:
    """Write every lesson's student copy into `out_dir`; returns the paths written."""
    copies = student_copies(notebooks_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in copies.items():
        path = out_dir / name
        path.write_bytes(text.encode("utf-8"))
        written.append(path)
    return written


def stale_student_copies(notebooks_dir: Path, out_dir: Path) -> list[str]:
    """What differs between `out_dir` and fresh student copies: missing, outdated or orphaned files."""
    copies = student_copies(notebooks_dir)
    problems = []
    for name, text in copies.items():
        path = Path(out_dir) / name
        if not path.exists():
            problems.append(f"{path} is missing")
        elif path.read_bytes() != text.encode("utf-8"):
            problems.append(f"{path} is out of date")
    for path in sorted(Path(out_dir).glob("*.ipynb")):
        if path.name not in copies:
            problems.append(f"{path} has no lesson in {notebooks_dir} (delete it)")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssd_lite.exercises",
                                     description="Tools for the lessons' exercises.")
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student copies of the lessons (solutions removed)")
    student.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="folder of the lessons")
    student.add_argument("--out", type=Path, default=None, help="where to write (default: NOTEBOOKS/student)")
    student.add_argument("--check", action="store_true",
                         help="write nothing; exit with status 1 if the copies in --out are out of date")
    args = parser.parse_args(argv)
    out_dir = args.out if args.out is not None else args.notebooks / "student"
    if not lesson_paths(args.notebooks):
        print(f"error: no lessons (NN_name.ipynb) in {args.notebooks}", file=sys.stderr)
        return 1
    try:
        if args.check:
            problems = stale_student_copies(args.notebooks, out_dir)
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print(f"Regenerate them: python -m ssd_lite.exercises student --notebooks {args.notebooks} "
                      f"--out {out_dir}", file=sys.stderr)
                return 1
            print(f"Student copies in {out_dir} are up to date.")
            return 0
        written = write_student_copies(args.notebooks, out_dir)
    except SolutionFormatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {len(written)} student copies to {out_dir}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
