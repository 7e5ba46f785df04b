"""Prove the CUDA path: run each piece of ssd_lite on the GPU and compare with the CPU, then time the models.

    python benchmarks/check_cuda.py        (needs a CUDA GPU; prints a line per check and a timing table)

Results on the GPU must equal the CPU's up to float rounding; the timings are for information.
"""
import time

import torch
import torchvision

from ssd_lite.boxes import box_iou
from ssd_lite.data import ShapesDataset
from ssd_lite.detect import predict_dataset
from ssd_lite.evaluate import mean_average_precision
from ssd_lite.loss import multibox_loss
from ssd_lite.matching import match
from ssd_lite.model import small_ssd, ssd300_vgg16
from ssd_lite.nms import batched_nms, detect, nms
from ssd_lite.priors import ssd300_default_boxes
from ssd_lite.train import CachedDataset, load_checkpoint, pick_device, save_checkpoint, train


def check(name, ok):
    print(f"{'PASS' if ok else 'FAIL'}  {name}")
    assert ok, name


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


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    cuda = torch.device("cuda")
    print(torch.__version__, torchvision.__version__, torch.cuda.get_device_name())
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

    boxes = torch.cat([corner := torch.rand(500, 2, generator=g) * 0.8, corner + 0.02 + torch.rand(500, 2, generator=g) * 0.2], 1)
    scores, labels = torch.rand(500, generator=g), torch.randint(0, 5, (500,), generator=g)
    bc, sc, lc = boxes.to(cuda), scores.to(cuda), labels.to(cuda)
    check("nms on CUDA = torchvision.ops.nms", torch.equal(nms(bc, sc, 0.45).cpu(), torchvision.ops.nms(bc, sc, 0.45).cpu()))
    check("batched_nms on CUDA = torchvision.ops.batched_nms",
          torch.equal(batched_nms(bc, sc, lc, 0.45).cpu(), torchvision.ops.batched_nms(bc, sc, lc, 0.45).cpu()))
    det_cpu = detect(loc_pred * 0.1, conf_pred, priors)
    det_gpu = detect((loc_pred * 0.1).to(cuda), conf_pred.to(cuda), priors.to(cuda))
    check("detect on CUDA = detect on CPU", all(
        d["boxes"].device.type == "cuda" and len(d["scores"]) == len(c["scores"]) and
        torch.allclose(d["scores"].cpu(), c["scores"], atol=1e-5) for d, c in zip(det_gpu, det_cpu)))

    # A short real training run on the GPU, the checkpoint reloaded on the CPU.
    data = ShapesDataset(512, image_size=128, seed=0)
    model = small_ssd(len(data.class_names), image_size=128)
    history = train(model, CachedDataset(data, 128), epochs=2, device=cuda, progress=False)
    check("training on CUDA: finite loss that falls",
          all(map(torch.isfinite, map(torch.tensor, history["loss"]))) and history["loss"][-1] < history["loss"][0])
    check("model left on CUDA", next(model.parameters()).device.type == "cuda" and model.priors.device.type == "cuda")
    detections, targets = predict_dataset(model, ShapesDataset(64, image_size=128, seed=1000))
    print(f"      mAP after 2 short epochs on CUDA (not a target): {mean_average_precision(detections, targets)['map']:.3f}")
    save_checkpoint("/tmp/cuda_model.pt", model, data.class_names)
    cpu_model, _ = load_checkpoint("/tmp/cuda_model.pt", device="cpu")
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        same = [torch.allclose(a, b.cpu(), atol=1e-3) for a, b in zip(cpu_model.eval()(x), model.eval()(x.to(cuda)))]
    check("checkpoint saved on CUDA loads on CPU with the same outputs", all(same))

    print("\nTimings on", torch.cuda.get_device_name(), "(median ms, fp32)")
    small = small_ssd(6, image_size=128).to(cuda).eval()
    vgg = ssd300_vgg16(21).to(cuda).eval()
    images128, images300 = torch.rand(256, 3, 128, 128, device=cuda), torch.rand(32, 3, 300, 300, device=cuda)
    with torch.no_grad():
        print(f"  small_ssd forward, batch 256 at 128x128: {timed(lambda: small(images128)):8.2f}")
        print(f"  ssd300_vgg16 forward, batch 32 at 300x300: {timed(lambda: vgg(images300)):8.2f}")
        loc, conf = vgg(images300)
        print(f"  detect, batch 32 of SSD300 outputs: {timed(lambda: detect(loc, conf, vgg.priors), repeats=5):8.2f}")
    batch_loc = loc_t.to(cuda).repeat(8, 1, 1)
    batch_lab = lab_t.to(cuda).repeat(8, 1)
    loc32, conf32 = loc_pred.to(cuda).repeat(8, 1, 1), conf_pred.to(cuda).repeat(8, 1, 1)
    print(f"  multibox_loss, batch 32 x 8732 x 21: {timed(lambda: multibox_loss(loc32, conf32, batch_loc, batch_lab)):8.2f}")
    print("\nAll CUDA checks passed.")


if __name__ == "__main__":
    main()
