"""Where does a briefly trained network's hard negative mining pick its negatives? (lesson 04's claim)

Trains the course's default_model for 300 steps on 320 cached shapes images, then, on 40 held-out
shapes images, counts the mined negatives by their best IoU with an object. Run from the repository
root: python benchmarks/mined_negatives.py   (about 2 minutes on one busy CPU core)
"""
import time

import torch
import torch.nn.functional as F

from ssd_lite.augment import train_transform
from ssd_lite.boxes import box_iou, cxcywh_to_xyxy
from ssd_lite.data import CachedDataset
from ssd_lite.loss import hard_negative_mining
from ssd_lite.matching import match
from ssd_lite.model import default_model
from ssd_lite.shapes import ShapesDataset
from ssd_lite.train import train

torch.set_num_threads(1)
source = ShapesDataset(320, image_size=128, seed=1)
torch.manual_seed(0)
model = default_model(len(source.class_names), 128)
started = time.perf_counter()
train(model, CachedDataset(source, 128, train_transform(128)), epochs=15, progress=False)  # 20 steps an epoch
print(f"trained 300 steps in {time.perf_counter() - started:.0f} s")
model.eval()
held_out = ShapesDataset(40, image_size=128, seed=99)
edges = torch.tensor([1e-6, 0.2, 0.5])  # bins: no overlap, (0, 0.2), [0.2, 0.5), >= 0.5
mined_count, negative_count = torch.zeros(4), torch.zeros(4)
for index in range(len(held_out)):
    image, target = held_out[index]
    with torch.no_grad():
        _, conf_pred = model(image[None])
    _, labels = match(target["boxes"], target["labels"], model.priors)
    conf_loss = F.cross_entropy(conf_pred[0], labels, reduction="none")
    mined = hard_negative_mining(conf_loss[None], labels[None])[0]
    bins = torch.bucketize(box_iou(target["boxes"], cxcywh_to_xyxy(model.priors)).max(dim=0).values, edges)
    for b in range(4):
        mined_count[b] += (mined & (bins == b)).sum()
        negative_count[b] += ((labels == 0) & (bins == b)).sum()
names = ["IoU 0", "IoU (0, 0.2)", "IoU [0.2, 0.5)", "IoU >= 0.5"]
for name, m, n in zip(names, mined_count.tolist(), negative_count.tolist()):
    print(f"{name:15s} mined {m / mined_count.sum():5.1%} of the mined negatives; {n / negative_count.sum():5.1%} of all negatives")
