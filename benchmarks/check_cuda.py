"""Prove the CUDA path: run each piece of ssd_lite on the GPU and compare with the CPU, then time the models.

    python benchmarks/check_cuda.py        (needs a CUDA GPU; prints a PASS or FAIL line per check and a timing table)

Results on the GPU must equal the CPU's up to float rounding; mixed precision (ssd_lite.amp) must train
to a finite, falling loss with both of its recipes (bfloat16, and float16 with a grad scaler); a
one-process DistributedDataParallel group over NCCL (ssd_lite.distributed, with SyncBatchNorm and the
global-N loss) must give the gradients of plain training. The timings are for information.
Exit status: 0 when every check passed, 1 otherwise (also on a machine without CUDA).
"""
import os
import socket
import sys
import time
import traceback

import torch
import torchvision

from ssd_lite import distributed
from ssd_lite.amp import AmpSettings, autocast, autocast_settings, grad_scaler
from ssd_lite.boxes import box_iou
from ssd_lite.checkpoint import load_checkpoint, save_checkpoint
from ssd_lite.data import CachedDataset, collate
from ssd_lite.detect import predict_dataset
from ssd_lite.device import pick_device
from ssd_lite.evaluate import mean_average_precision
from ssd_lite.loss import multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import small_ssd, ssd300_vgg16
from ssd_lite.nms import batched_nms, nms, postprocess
from ssd_lite.priors import ssd300_default_boxes
from ssd_lite.shapes import ShapesDataset
from ssd_lite.train import train

FAILURES = []


def check(name, ok, detail=""):
    """Print one PASS/FAIL line and remember failures; the remaining checks still run."""
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else ""), flush=True)
    if not ok:
        FAILURES.append(name)


def timed(fn, repeats=20):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1000


# ---------------------------------------------------------------------------------------------------
# Each part of the check; an exception inside one is a FAIL line, and the next part runs.

def check_pieces(cuda):
    check("pick_device() chooses CUDA", pick_device().type == "cuda")
    g = torch.Generator().manual_seed(0)
    priors = ssd300_default_boxes()
    corner = torch.rand(6, 2, generator=g) * 0.6
    gt = torch.cat([corner, corner + 0.05 + torch.rand(6, 2, generator=g) * 0.3], 1)
    gt_labels = torch.randint(1, 21, (6,), generator=g)
    check("box_iou on CUDA = torchvision on CUDA",
          torch.allclose(box_iou(gt.to(cuda), gt.to(cuda)), torchvision.ops.box_iou(gt.to(cuda), gt.to(cuda))))
    loc_cpu, lab_cpu = match(gt, gt_labels, priors)
    loc_gpu, lab_gpu = match(gt.to(cuda), gt_labels.to(cuda), priors.to(cuda))
    check("match on CUDA = match on CPU", torch.equal(lab_gpu.cpu(), lab_cpu) and
          torch.allclose(loc_gpu.cpu(), loc_cpu, atol=1e-4))

    B, P, C = 4, priors.shape[0], 21
    loc_pred = torch.randn(B, P, 4, generator=g)
    conf_pred = torch.randn(B, P, C, generator=g)
    loc_t, lab_t = loc_cpu.expand(B, P, 4).clone(), lab_cpu.expand(B, P).clone()
    lab_t[1] = 0  # one image without objects
    cpu_losses = multibox_loss(loc_pred, conf_pred, loc_t, lab_t)
    lp, cp = loc_pred.to(cuda).requires_grad_(), conf_pred.to(cuda).requires_grad_()
    gpu_losses = multibox_loss(lp, cp, loc_t.to(cuda), lab_t.to(cuda))
    sum(gpu_losses).backward()
    check("multibox_loss on CUDA = CPU, finite gradients",
          all(torch.allclose(a.cpu(), b, rtol=1e-4) for a, b in zip(gpu_losses, cpu_losses))
          and torch.isfinite(lp.grad).all() and torch.isfinite(cp.grad).all())

    corner = torch.rand(500, 2, generator=g) * 0.8
    boxes = torch.cat([corner, corner + 0.02 + torch.rand(500, 2, generator=g) * 0.2], 1)
    scores, labels = torch.rand(500, generator=g), torch.randint(0, 5, (500,), generator=g)
    bc, sc, lc = boxes.to(cuda), scores.to(cuda), labels.to(cuda)
    check("nms on CUDA = torchvision.ops.nms",
          torch.equal(nms(bc, sc, 0.45).cpu(), torchvision.ops.nms(bc, sc, 0.45).cpu()))
    check("batched_nms on CUDA = torchvision.ops.batched_nms",
          torch.equal(batched_nms(bc, sc, lc, 0.45).cpu(), torchvision.ops.batched_nms(bc, sc, lc, 0.45).cpu()))
    det_cpu = postprocess(loc_pred * 0.1, conf_pred, priors)
    det_gpu = postprocess((loc_pred * 0.1).to(cuda), conf_pred.to(cuda), priors.to(cuda))
    check("postprocess on CUDA = postprocess on CPU", all(
        d["boxes"].device.type == "cuda" and len(d["scores"]) == len(c["scores"]) and
        torch.allclose(d["scores"].cpu(), c["scores"], atol=1e-5) for d, c in zip(det_gpu, det_cpu)))


def check_training(cuda):
    """A short real training run on the GPU, the checkpoint reloaded on the CPU."""
    data = ShapesDataset(512, image_size=128, seed=0)
    model = small_ssd(len(data.class_names), image_size=128)
    history = train(model, CachedDataset(data, 128), epochs=2, device=cuda, progress=False)
    check("training on CUDA: finite loss that falls",
          all(map(torch.isfinite, map(torch.tensor, history["loss"]))) and history["loss"][-1] < history["loss"][0])
    check("model left on CUDA", next(model.parameters()).device.type == "cuda" and model.priors.device.type == "cuda")
    detections, targets = predict_dataset(model, ShapesDataset(64, image_size=128, seed=1000))
    mean_ap = mean_average_precision(detections, targets)["map"]
    print(f"      mAP after 2 short epochs on CUDA (not a target): {mean_ap:.3f}")
    save_checkpoint("/tmp/cuda_model.pt", model, data.class_names)
    cpu_model, _ = load_checkpoint("/tmp/cuda_model.pt", device="cpu")
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        same = [torch.allclose(a, b.cpu(), atol=1e-3) for a, b in zip(cpu_model.eval()(x), model.eval()(x.to(cuda)))]
    check("checkpoint saved on CUDA loads on CPU with the same outputs", all(same))


def _amp_losses(cuda, settings, steps=60):
    """Train small_ssd for `steps` steps with `settings` (ssd_lite.amp's recipe); the loss per step."""
    torch.manual_seed(0)
    shapes = ShapesDataset(512, image_size=128, seed=0)
    data = CachedDataset(shapes, 128)
    model = small_ssd(len(shapes.class_names), image_size=128)
    model.to(cuda, memory_format=torch.channels_last).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scaler = grad_scaler(settings)
    loader = torch.utils.data.DataLoader(data, batch_size=32, shuffle=True, collate_fn=collate, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    losses = []
    while len(losses) < steps:
        for images, targets in loader:
            images = images.to(cuda, memory_format=torch.channels_last)
            matched = [match(t["boxes"].to(cuda), t["labels"].to(cuda), model.priors) for t in targets]
            loc_targets, labels = torch.stack([m[0] for m in matched]), torch.stack([m[1] for m in matched])
            with autocast(settings):
                loc_pred, conf_pred = model(images)
            loc_loss, conf_loss = multibox_loss(loc_pred.float(), conf_pred.float(), loc_targets, labels)
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loc_loss + conf_loss).backward()
            scaler.step(optimiser)
            scaler.update()
            losses.append((loc_loss + conf_loss).item())
            if len(losses) == steps:
                break
    return losses


def check_amp(cuda):
    settings = autocast_settings(cuda, amp=True)
    print(f"      --amp on {torch.cuda.get_device_name(cuda)} chooses {settings.dtype}, "
          f"grad scaler: {settings.grad_scaler}")
    check("autocast_settings: bfloat16 without a scaler on compute capability >= 8, else float16 with one",
          settings == ((AmpSettings("cuda", torch.bfloat16, False)) if torch.cuda.get_device_capability(cuda)[0] >= 8
                       else AmpSettings("cuda", torch.float16, True)))
    torch.manual_seed(0)
    model = small_ssd(6, image_size=128).to(cuda).eval()
    images = torch.rand(8, 3, 128, 128, device=cuda)
    with torch.no_grad():
        reference = model(images)
        with autocast(settings):
            mixed = model(images)
    relative = max(((m.float() - r).norm() / r.norm()).item() for m, r in zip(mixed, reference))
    check(f"autocast forward ({settings.dtype}) close to float32", relative < 0.05, f"relative error {relative:.4f}")
    for recipe in {settings, AmpSettings("cuda", torch.float16, True)}:
        losses = _amp_losses(cuda, recipe)
        finite = all(map(lambda v: v == v and abs(v) != float("inf"), losses))
        falls = sum(losses[-10:]) < sum(losses[:10])
        check(f"AMP training ({recipe.dtype}, grad scaler {recipe.grad_scaler}): finite loss that falls",
              finite and falls, f"first 10 mean {sum(losses[:10]) / 10:.3f}, last 10 mean {sum(losses[-10:]) / 10:.3f}")


def check_ddp(cuda):
    """A one-process DDP group over NCCL, as `torchrun --nproc_per_node=1` would make: SyncBatchNorm and
    the global-N loss must give the gradients of plain training on the same batch."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    saved = {name: os.environ.get(name) for name in distributed.LAUNCH_VARIABLES}
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        device = distributed.init()
        check("distributed.init under a torchrun environment: NCCL on cuda:0",
              distributed.is_distributed() and torch.distributed.get_backend() == "nccl"
              and device == torch.device("cuda", 0))
        torch.manual_seed(0)
        plain = small_ssd(6, image_size=128).to(device).train()
        ddp = distributed.wrap_model(small_ssd(6, image_size=128).to(device).train(), device, sync_bn=True)
        ddp.module.load_state_dict(plain.state_dict())
        check("wrap_model: DistributedDataParallel with SyncBatchNorm",
              isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
              and any(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.modules()))
        data = ShapesDataset(8, image_size=128, seed=0)
        images, targets = collate([data[i] for i in range(8)])
        images = images.to(device)
        gradients = []
        for model, objective in ((plain, multibox_loss), (ddp, distributed.with_global_n(multibox_loss))):
            priors = distributed.unwrap(model).priors
            matched = [match(t["boxes"].to(device), t["labels"].to(device), priors) for t in targets]
            loc_targets, labels = torch.stack([m[0] for m in matched]), torch.stack([m[1] for m in matched])
            loc_pred, conf_pred = model(images)
            sum(objective(loc_pred, conf_pred, loc_targets, labels)).backward()
            gradients.append([p.grad for p in distributed.unwrap(model).parameters()])
        worst = max((a - b).abs().max().item() for a, b in zip(*gradients))
        check("1-GPU DDP (NCCL, SyncBatchNorm, global N) gradients = plain training",
              all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(*gradients)),
              f"largest difference {worst:.2e}")
        check("all_reduce_sum, any_rank and gather_in_order over NCCL",
              distributed.all_reduce_sum(torch.tensor(3, device=device)).item() == 3
              and distributed.any_rank(True, device) and not distributed.any_rank(False, device)
              and distributed.gather_in_order(["b", "a"], [1, 0]) == ["a", "b"])
    finally:
        distributed.cleanup()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def print_timings(cuda):
    print("\nTimings on", torch.cuda.get_device_name(), "(median ms, fp32)")
    small = small_ssd(6, image_size=128).to(cuda).eval()
    vgg = ssd300_vgg16(21).to(cuda).eval()
    images128, images300 = torch.rand(256, 3, 128, 128, device=cuda), torch.rand(32, 3, 300, 300, device=cuda)
    with torch.no_grad():
        print(f"  small_ssd forward, batch 256 at 128x128: {timed(lambda: small(images128)):8.2f}")
        print(f"  ssd300_vgg16 forward, batch 32 at 300x300: {timed(lambda: vgg(images300)):8.2f}")
        loc, conf = vgg(images300)
        milliseconds = timed(lambda: postprocess(loc, conf, vgg.priors), repeats=5)
        print(f"  postprocess, batch 32 of SSD300 outputs: {milliseconds:8.2f}")
        # About 1% positives with random classes, like a matched batch.
        labels = ((torch.rand(loc.shape[:2], device=cuda) < 0.01)
                  * torch.randint(1, 21, loc.shape[:2], device=cuda))
        loc_targets = torch.zeros_like(loc)
        print(f"  multibox_loss, batch 32 x 8732 x 21: {timed(lambda: multibox_loss(loc, conf, loc_targets, labels)):8.2f}")


def main():
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}", flush=True)
    if not torch.cuda.is_available():
        check("a CUDA GPU", False, "torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False), "
              "so none of these checks can run. Run this script on a machine with an NVIDIA GPU and a CUDA build of "
              "torch; on the CPU, `python -m pytest` tests everything else.")
        sys.exit(1)
    cuda = torch.device("cuda")
    print(torch.cuda.get_device_name(cuda))
    for part in (check_pieces, check_training, check_amp, check_ddp, print_timings):
        try:
            part(cuda)
        except Exception as error:  # one broken part must not hide the results of the others
            traceback.print_exc()
            check(f"{part.__name__} ran to the end", False, f"{type(error).__name__}: {error}")
    if FAILURES:
        print(f"\n{len(FAILURES)} CUDA check(s) FAILED: {', '.join(FAILURES)}")
        sys.exit(1)
    print("\nAll CUDA checks passed.")


if __name__ == "__main__":
    main()
