"""Checkpoints: a trained model saved with everything needed to rebuild and use it, safely.

Three promises, because a checkpoint is hours of someone's work or a file from a stranger:
- Loading never runs code: `torch.load(..., weights_only=True)` accepts only tensors, numbers, strings,
  lists, tuples and dicts, and a file holding anything else is refused with a clear message.
- Saving is atomic: the checkpoint is written to a temporary file in the same folder, then renamed over
  the target, so a run killed mid-save leaves the old file (or none), never a truncated one.
- An existing file is replaced only if it is itself an ssd_lite checkpoint; anything else is refused.

A checkpoint written by ssd_lite.train also holds what it takes to continue the run exactly (`--resume`):
the optimiser's state, the step, and the states of the random generators (`rng_states`), all as tensors,
lists and numbers, so the second promise holds for them too.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

import numpy as np
import torch

from ssd_lite.device import pick_device
from ssd_lite.model import SSD, build_model

REQUIRED_KEYS = ("model_state", "model_config", "class_names")


class CheckpointError(ValueError):
    """A file that is not a usable ssd_lite checkpoint (unreadable, unsafe, or for another model)."""


def _read(path: Path) -> dict:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike: the file is not what it should be
        reason = _short_reason(error)
        # The safe unpickler names the first Python object it refuses as an "Unsupported global".
        if "Unsupported global" in str(error):
            raise CheckpointError(
                f"{path} holds Python objects other than tensors, numbers, strings, lists and dicts, so "
                "loading it could run code: refused. ssd_lite checkpoints never hold such objects; if this "
                "file comes from elsewhere, load it yourself only if you trust its source") from None
        raise CheckpointError(f"{path} is not a readable checkpoint (damaged, truncated, or another kind of "
                              f"file): {reason}") from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(checkpoint, dict) or key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is not an ssd_lite checkpoint (made by ssd_lite.checkpoint."
                              f"save_checkpoint): it lacks {', '.join(missing)}")
    return checkpoint


def _short_reason(error: Exception) -> str:
    """The informative line of a loading error (torch's weights-only errors open with a long preamble)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if line.startswith(("Unsupported", "invalid load key", "PytorchStreamReader"))]
    return (specific or lines or [type(error).__name__])[0]


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a file that loads as an ssd_lite checkpoint."""
    try:
        _read(Path(path))
        return True
    except CheckpointError:
        return False


def check_output_path(path: str | Path) -> bool:
    """Make sure a checkpoint can be saved at `path`, before any training starts.

    Creates the parent folder if needed. Raises IsADirectoryError, PermissionError or FileExistsError (an
    existing file that is not an ssd_lite checkpoint: it is never overwritten). Returns True when an
    existing checkpoint will be replaced, so the caller can say so.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder: give a file name for the checkpoint, e.g. {path / 'model.pt'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"cannot create the folder {path.parent} for {path}: {error.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(f"cannot write to the folder {path.parent}: choose another place for {path.name}")
    if not path.exists():
        return False
    if not is_checkpoint(path):
        raise FileExistsError(f"{path} exists and is not an ssd_lite checkpoint: refusing to overwrite it. "
                              "Choose another file name, or move that file away first")
    if not os.access(path, os.W_OK):
        raise PermissionError(f"{path} exists and is read-only")
    return True


def save_checkpoint(path: str | Path, model: SSD, class_names: Sequence[str], /, **settings) -> dict:
    """Save the weights with everything needed to rebuild the model and use it, atomically.

    The file holds "model_state", "model_config" (model.config, for ssd_lite.model.build_model),
    "class_names", "image_size" and any `settings` given (training options, data description, history):
    plain values only, so that it loads with weights_only=True (a setting may be called "model" or
    "path": the first three arguments are positional only). Returns the dict saved.
    """
    class_names = tuple(class_names)
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model of {model.num_classes} classes")
    check_output_path(path)
    checkpoint = {"model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                  "model_config": dict(model.config), "class_names": class_names,
                  "image_size": model.image_size, **settings}
    write_atomically(Path(path), lambda file: torch.save(checkpoint, file))
    return checkpoint


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call write(file) on a temporary file beside `path`, then rename it to `path`: a reader (or a run
    killed half-way) sees the old file or the new one, never half of one. The new file gets the usual
    permissions (0666 minus the umask), not mkstemp's private 0600."""
    # The temporary file lives in the target's folder: a rename within one file system is atomic.
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict saved at `path`, checked to be a safe ssd_lite checkpoint; builds no model."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a checkpoint file")
    return _read(path)


def load_checkpoint(path: str | Path, class_names: Sequence[str] | None = None,
                    device: str | torch.device | None = None) -> tuple[SSD, dict]:
    """Rebuild the model saved by save_checkpoint: returns (model in eval mode on `device`, checkpoint dict).

    class_names: if given, the checkpoint must have been trained for exactly these classes (in this
    order); a CheckpointError (a ValueError) says what differs otherwise.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    saved_names = tuple(checkpoint["class_names"])
    if class_names is not None and tuple(class_names) != saved_names:
        raise CheckpointError(f"{path} was trained for the classes {saved_names}, not {tuple(class_names)}: "
                              "its class scores would be read as the wrong objects. Train a model for your "
                              "classes, or pass the checkpoint's own class names.")
    try:
        model = build_model(**checkpoint["model_config"])
        model.load_state_dict(checkpoint["model_state"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: its weights do not fit the model it describes "
                              f"({str(error).splitlines()[0]})") from None
    return model.to(pick_device(device)).eval(), checkpoint


# ---------------------------------------------------------------------------------------------------
# Random generators: what a resumed run must restore to draw the same augmentations as an unbroken one.

def rng_states() -> dict:
    """The states of the global random generators a training step may draw from: torch's (CPU, and each
    CUDA device's), Python's `random` and NumPy's. Torch's as uint8 tensors, the others as lists and
    numbers, so that they save and load with weights_only=True."""
    python_version, python_internal, python_gauss = random.getstate()
    numpy_name, numpy_keys, numpy_position, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": [python_version, list(python_internal), python_gauss],
            "numpy": [numpy_name, numpy_keys.tolist(), int(numpy_position), int(numpy_has_gauss),
                      float(numpy_gauss)]}


def restore_rng_states(states: dict) -> None:
    """Set the generators back to `states` (from rng_states). CUDA states are restored only on a machine
    with as many CUDA devices: a run saved on a GPU may continue on the CPU, and the reverse."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gauss))
