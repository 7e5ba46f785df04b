"""benchmarks/bench_ssd300.py runs end to end (--device cpu --tiny), and the GPU scripts fail clearly
without a GPU. The GPU figures themselves come from a run on a GPU (see the README)."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    """The benchmark module, loaded once: it builds each SSD300 once (torchvision's takes ~3 s)."""
    return _load("bench_ssd300")


def test_tiny_cpu_run_prints_the_table_and_writes_json(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--tiny", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "SSD300 (300x300, 21 classes, random weights) on CPU" in printed and torch.__version__ in printed
    assert "ours / torchvision" in printed and "59 FPS" in printed
    rows = json.loads(out.read_text())["rows"]
    # Training at batch 1, detection at batches 1 and 2, each for both models; float32 only on the CPU.
    assert [(row["model"], row["task"], row["batch"]) for row in rows] == [
        ("ours", "train", 1), ("torchvision", "train", 1),
        ("ours", "detect", 1), ("torchvision", "detect", 1), ("ours", "detect", 2), ("torchvision", "detect", 2)]
    assert {row["precision"] for row in rows} == {"fp32"}
    for row in rows:
        assert math.isfinite(row["images_per_s"]) and row["images_per_s"] > 0 and row["peak_mib"] is None


def test_both_models_detect_in_the_same_format(bench):
    """Ours and torchvision's give each image's detections as CPU tensors with the same keys, at most
    200 per image (random weights: every class of every box passes the 0.01 threshold)."""
    cpu = torch.device("cpu")
    images, _ = bench.make_batch(2, cpu)
    settings = bench.autocast_settings(cpu, amp=False)
    for name, (_, _, detect) in bench.MODELS.items():
        detections = detect(bench.on_device(name, cpu).eval(), settings, images)
        assert len(detections) == 2, name
        for found in detections:
            assert set(found) == {"boxes", "scores", "labels"} and found["boxes"].device.type == "cpu"
            assert 0 < len(found["scores"]) <= bench.DETECTIONS_PER_IMAGE


@needs_no_cuda
def test_bench_without_cuda_says_how_to_run_on_the_cpu(bench, capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main([])
    assert stop.value.code == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


@needs_no_cuda
def test_check_cuda_without_cuda_fails_clearly(capsys):
    check_cuda = _load("check_cuda")
    with pytest.raises(SystemExit) as stop:
        check_cuda.main()
    assert stop.value.code == 1
    printed = capsys.readouterr()
    assert "FAIL" in printed.out and "torch sees no CUDA GPU" in printed.out
