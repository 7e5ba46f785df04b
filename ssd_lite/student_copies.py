"""The student copies of the lessons: every solution replaced by a placeholder, every output cleared.

    python -m ssd_lite.student_copies [--notebooks notebooks] [--out notebooks/student] [--check]

writes, for every lesson notebooks/NN_*.ipynb, a copy into notebooks/student/ in which each solution
region (the lines from `### BEGIN SOLUTION` to `### END SOLUTION`, nbgrader's markers) is replaced by
a placeholder that raises NotImplementedError, and every output is cleared. `--check` writes nothing
and exits with status 1 if the committed copies differ from what would be written. The output is
deterministic: the same lessons give byte-identical copies. (`python -m ssd_lite.exercises student`
is an older spelling of the same command.)
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path
from typing import Sequence

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
    """The lessons, in course order: notebooks/NN_name.ipynb, then the appendices notebooks/AN_name.ipynb."""
    return sorted(path for path in Path(notebooks_dir).glob("*.ipynb") if re.match(r"(\d\d|A\d)_", path.name))


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
    parser = argparse.ArgumentParser(prog="python -m ssd_lite.student_copies",
                                     description="Write the student copies of the lessons (solutions removed, "
                                                 "outputs cleared).")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="folder of the lessons")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: NOTEBOOKS/student)")
    parser.add_argument("--check", action="store_true",
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
                print(f"Regenerate them: python -m ssd_lite.student_copies --notebooks {args.notebooks} "
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
