"""Checkpoints: no code runs on load, saves are atomic, nothing that is not a checkpoint is overwritten."""
import os

import pytest
import torch

from ssd_lite.checkpoint import (CheckpointError, check_output_path, is_checkpoint, load_checkpoint,
                                 read_checkpoint, save_checkpoint)
from ssd_lite.model import small_ssd
from ssd_lite.shapes import SHAPE_CLASS_NAMES

CLASS_NAMES = ("background", *SHAPE_CLASS_NAMES)


def _model(seed=0):
    torch.manual_seed(seed)
    return small_ssd(len(CLASS_NAMES), image_size=64).eval()


def _booby_trapped_checkpoint(path, marker):
    """A real checkpoint's content plus an object whose unpickling writes `marker`: arbitrary code on load."""
    class WritesAFile:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('the payload ran')",))

    checkpoint = {"model_state": _model().state_dict(), "model_config": dict(_model().config),
                  "class_names": CLASS_NAMES, "image_size": 64, "extra": WritesAFile()}
    torch.save(checkpoint, path)


def test_round_trip_and_wrong_classes(tmp_path):
    model = _model()
    path = tmp_path / "model.pt"
    save_checkpoint(path, model, CLASS_NAMES, epochs=3, data={"kind": "shapes", "seed": 0}, history={"loss": [1.0]})
    loaded, checkpoint = load_checkpoint(path, class_names=CLASS_NAMES)
    assert checkpoint["class_names"] == CLASS_NAMES and checkpoint["epochs"] == 3 and checkpoint["image_size"] == 64
    images = torch.rand(2, 3, 64, 64)
    for a, b in zip(model(images), loaded(images)):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match="trained for the classes"):
        load_checkpoint(path, class_names=("background", "cat", "dog"))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_booby_trapped_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    path, marker = tmp_path / "stranger.pt", tmp_path / "payload_ran.txt"
    _booby_trapped_checkpoint(path, marker)
    with pytest.raises(CheckpointError, match="could run code: refused"):
        load_checkpoint(path)
    assert not is_checkpoint(path)
    assert not marker.exists()
    # The file really is dangerous: the unsafe loader runs the payload.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "the payload ran"


@pytest.mark.parametrize("content, reason", [(b"hello, I am a text file\n", "not a readable checkpoint"),
                                             (b"", "not a readable checkpoint")])
def test_unreadable_files_are_named(tmp_path, content, reason):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"{path}.*{reason}"):
        load_checkpoint(path)


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, _model(), CLASS_NAMES)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=f"{path} is not a readable checkpoint"):
        load_checkpoint(path)


def test_a_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(_model().state_dict(), path)
    with pytest.raises(CheckpointError, match="not an ssd_lite checkpoint.*lacks model_state"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_the_model_are_named(tmp_path):
    path = tmp_path / "model.pt"
    checkpoint = save_checkpoint(path, _model(), CLASS_NAMES)
    checkpoint["model_config"]["num_classes"] = 3
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="do not fit the model"):
        load_checkpoint(path)


def test_only_checkpoints_are_overwritten(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a week of lab notes")
    with pytest.raises(FileExistsError, match="not an ssd_lite checkpoint: refusing to overwrite"):
        save_checkpoint(notes, _model(), CLASS_NAMES)
    assert notes.read_text() == "a week of lab notes"

    path = tmp_path / "model.pt"
    assert check_output_path(path) is False  # nothing there yet
    save_checkpoint(path, _model(0), CLASS_NAMES)
    assert check_output_path(path) is True  # an earlier checkpoint: replaced, and the caller can say so
    save_checkpoint(path, _model(1), CLASS_NAMES)
    assert torch.equal(load_checkpoint(path)[0].conf_heads[0].weight, _model(1).conf_heads[0].weight)


def test_output_paths_that_cannot_work_fail_before_any_work(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        check_output_path(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot create the folder"):
        check_output_path(blocker / "sub" / "model.pt")
    nested = tmp_path / "new" / "folder" / "model.pt"
    assert check_output_path(nested) is False and nested.parent.is_dir()


def test_saving_is_atomic(tmp_path, monkeypatch):
    """A save killed half-way leaves the previous checkpoint intact and no temporary file behind."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, _model(0), CLASS_NAMES)
    good = path.read_bytes()

    def dies_half_way(obj, file, *args, **kwargs):
        file.write(good[: len(good) // 2])
        raise KeyboardInterrupt  # the user's Ctrl-C, or a kill, in the middle of writing

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _model(1), CLASS_NAMES)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.pt"]
    load_checkpoint(path)  # still loads


def test_settings_may_be_called_model_or_path_and_read_checkpoint_builds_nothing(tmp_path):
    """Training runs record settings such as "model" (--model): they must not clash with the arguments."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, _model(), CLASS_NAMES, model="default", path="elsewhere", class_scores="softmax")
    checkpoint = read_checkpoint(path)
    assert checkpoint["model"] == "default" and checkpoint["path"] == "elsewhere"
    assert checkpoint["class_names"] == CLASS_NAMES
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.pt")


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Not mkstemp's private 0600: a checkpoint is shared like any file the user writes."""
    path = tmp_path / "model.pt"
    save_checkpoint(path, _model(), CLASS_NAMES)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
