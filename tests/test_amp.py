"""Tests of ssd_lite.amp: which mixed precision --amp picks (the GPU's capabilities are faked, so these run
without a GPU), and its clear refusal on the CPU. benchmarks/check_cuda.py trains with both recipes on a GPU."""
import pytest
import torch

from ssd_lite.amp import AmpSettings, autocast, autocast_settings, grad_scaler


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA GPU of the given compute capability, as far as ssd_lite.amp can tell."""
    def install(capability):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    return install


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (9, 0), (10, 0)])
def test_bf16_without_a_scaler_on_ampere_and_later(fake_gpu, capability):
    fake_gpu(capability)
    assert autocast_settings("cuda", amp=True) == AmpSettings("cuda", torch.bfloat16, False)
    assert autocast_settings(torch.device("cuda", 0), amp=True).dtype == torch.bfloat16


@pytest.mark.parametrize("capability", [(7, 0), (7, 5), (6, 1)])
def test_fp16_with_a_scaler_on_older_gpus(fake_gpu, capability):
    fake_gpu(capability)
    assert autocast_settings("cuda", amp=True) == AmpSettings("cuda", torch.float16, True)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_without_amp_float32_everywhere(device):
    settings = autocast_settings(device, amp=False)
    assert settings == AmpSettings(torch.device(device).type, None, False)


def test_amp_on_the_cpu_is_refused_with_an_explanation():
    with pytest.raises(ValueError) as error:
        autocast_settings("cpu", amp=True)
    message = str(error.value)
    assert "--amp (mixed precision) is for CUDA GPUs" in message and "Drop --amp" in message


def test_amp_on_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
        autocast_settings("cuda", amp=True)


def test_float32_settings_leave_a_training_step_unchanged():
    """With amp=False, the AMP recipe's lines (autocast, scaler) train exactly as the plain ones."""
    weights = []
    for use_recipe in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
        inputs = torch.arange(6.0).view(2, 3)
        if use_recipe:
            settings = autocast_settings("cpu", amp=False)
            scaler = grad_scaler(settings)
            with autocast(settings):
                loss = model(inputs).pow(2).sum()
            assert loss.dtype == torch.float32 and not scaler.is_enabled()
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
        else:
            model(inputs).pow(2).sum().backward()
            optimiser.step()
        weights.append(model.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_autocast_runs_in_the_chosen_precision():
    """The context really switches precision (shown with CPU bfloat16, the one autocast there is here)."""
    settings = AmpSettings("cpu", torch.bfloat16, False)
    with autocast(settings):
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == torch.bfloat16
