"""PyTorch peer of `cargo xtask train-unet` for the acceptance recipe of the segmentation issue.

Same architecture as ../shared/reference/pytorch-unet/peer_pytorch_unet.py (3×3 conv-BN-ReLU ×2 per
level, 2×2 max-pool, 2×2 stride-2 transposed conv, skip concat, 1×1 head), same data handling as
magma-dnn (resize to SIZE×SIZE: image area/bilinear, trimap nearest, class = trimap − 1, ImageNet
normalisation, horizontal flips), same optimiser (Adam), same metrics (confusion matrix over the
whole test split: pixel accuracy, per-class IoU, mIoU, fg IoU = pet ∪ border vs background).

    python peers/pytorch/unet_pets.py --data ../shared/data/oxford-pet-sample --seeds 0,1,2 --threads 2

Prints one JSON line per seed and a summary line.
"""
import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


class Block(nn.Module):
    def __init__(s, i, o):
        super().__init__()
        s.c1 = nn.Conv2d(i, o, 3, padding=1, bias=False); s.b1 = nn.BatchNorm2d(o)
        s.c2 = nn.Conv2d(o, o, 3, padding=1, bias=False); s.b2 = nn.BatchNorm2d(o)

    def forward(s, x):
        return F.relu(s.b2(s.c2(F.relu(s.b1(s.c1(x))))))


class UNet(nn.Module):
    def __init__(s, cin=3, ncls=3, base=16, depth=4):
        super().__init__()
        ch = [base * 2 ** i for i in range(depth + 1)]
        s.downs = nn.ModuleList([Block(cin if i == 0 else ch[i - 1], ch[i]) for i in range(depth)])
        s.mid = Block(ch[depth - 1], ch[depth])
        s.ups = nn.ModuleList([nn.ConvTranspose2d(ch[i + 1], ch[i], 2, stride=2) for i in reversed(range(depth))])
        s.upb = nn.ModuleList([Block(2 * ch[i], ch[i]) for i in reversed(range(depth))])
        s.head = nn.Conv2d(ch[0], ncls, 1)

    def forward(s, x):
        skips = []
        for d in s.downs:
            x = d(x); skips.append(x); x = F.max_pool2d(x, 2)
        x = s.mid(x)
        for up, b, sk in zip(s.ups, s.upb, reversed(skips)):
            x = b(torch.cat([sk, up(x)], 1))
        return s.head(x)


def read_list(root, split):
    names = []
    with open(os.path.join(root, "annotations", f"{split}.txt")) as f:
        for line in f:
            if line.strip() and not line.startswith("#"):
                names.append(line.split()[0])
    return names


def load_split(root, split, size):
    xs, ys = [], []
    for name in read_list(root, split):
        img = Image.open(os.path.join(root, "images", name + ".jpg")).convert("RGB")
        tri = Image.open(os.path.join(root, "annotations", "trimaps", name + ".png"))
        resample = Image.BOX if img.width > 2 * size else Image.BILINEAR
        img = np.asarray(img.resize((size, size), resample), dtype=np.float32) / 255.0
        tri = np.asarray(tri.resize((size, size), Image.NEAREST), dtype=np.int64) - 1
        xs.append(((img - MEAN) / STD).transpose(2, 0, 1))
        ys.append(tri)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


@torch.no_grad()
def evaluate(net, x, y, classes=3):
    net.eval()
    cm = np.zeros((classes, classes), dtype=np.int64)
    for i in range(0, len(x), 16):
        pred = net(x[i:i + 16]).argmax(1).numpy().ravel()
        truth = y[i:i + 16].numpy().ravel()
        cm += np.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    fg = [0, 2]
    fg_tp = cm[np.ix_(fg, fg)].sum()
    fg_union = fg_tp + cm[np.ix_([1], fg)].sum() + cm[np.ix_(fg, [1])].sum()
    return dict(pixel_acc=float(tp.sum() / cm.sum()), iou=[float(v) for v in iou],
                miou=float(np.nanmean(iou)), fg_iou=float(fg_tp / fg_union))


def run(seed, xtr, ytr, xte, yte, args):
    torch.manual_seed(seed)
    np.random.seed(seed)
    net = UNet(base=args.base, depth=args.depth)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    started = time.time()
    for epoch in range(args.epochs):
        net.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), args.batch):
            idx = perm[i:i + args.batch]
            x, y = xtr[idx].clone(), ytr[idx].clone()
            flip = torch.rand(len(idx)) < 0.5
            x[flip] = x[flip].flip(-1)
            y[flip] = y[flip].flip(-1)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    train_s = time.time() - started
    res = evaluate(net, xte, yte)
    res.update(seed=seed, train_seconds=round(train_s, 1),
               train_img_s=round(len(xtr) * args.epochs / train_s, 2), framework=f"torch {torch.__version__}")
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/oxford-pet-sample")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    xtr, ytr = load_split(args.data, "trainval", args.size)
    xte, yte = load_split(args.data, "test", args.size)
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        r = run(seed, xtr, ytr, xte, yte, args)
        results.append(r)
        print(json.dumps(r), flush=True)
    m = np.array([r["miou"] for r in results])
    print(json.dumps(dict(summary="pytorch", seeds=len(m), miou_mean=float(m.mean()), miou_std=float(m.std()))))


if __name__ == "__main__":
    main()
