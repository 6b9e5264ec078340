"""PyTorch peer of `cargo xtask train-classifier`: the same LeNet-5-style network, data, optimizer,
schedule and epochs, so the two can be compared on the same machine and thread count.

    python peers/pytorch/lenet_classifier.py --threads 2 --epochs 5

Reads Fashion-MNIST IDX files (Debian's dataset-fashion-mnist by default). Prints one line per
epoch and a final line in the same format as the Rust runner.
"""
import argparse
import gzip
import math
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic, = struct.unpack(">I", raw[:4])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(folder, split):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(f"{folder}/{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(f"{folder}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class LeNet5(nn.Module):
    """conv 5×5 (32, pad 2)-BN-ReLU-pool, conv 5×5 (64)-BN-ReLU-pool, fc 120, 84, classes."""

    def __init__(self, channels=1, size=28, classes=10, dropout=0.3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 32, 5, padding=2)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 5)
        self.bn2 = nn.BatchNorm2d(64)
        after = (size // 2 - 4) // 2
        self.fc1 = nn.Linear(64 * after * after, 120)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = self.drop(F.relu(self.fc1(x.flatten(1))))
        return self.fc3(F.relu(self.fc2(x)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr = load(args.data, "train")
    xte, yte = load(args.data, "test")
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs, eta_min=args.lr * 0.01)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(xtr)} train / {len(xte)} test")
    started = time.time()
    for epoch in range(1, args.epochs + 1):
        t0 = time.time()
        net.train()
        perm = torch.randperm(len(xtr))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xtr), args.batch):
            idx = perm[i:i + args.batch]
            x, y = xtr[idx], ytr[idx]
            out = net(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y).sum().item()
            total += len(idx)
        sched.step()
        acc, tl = evaluate(net, xte, yte)
        print(f"epoch {epoch:>3}/{args.epochs}  loss {loss_sum / total:.4f}  acc {correct / total:.4f}  "
              f"val_loss {tl:.4f}  val_acc {acc:.4f}  {time.time() - t0:.1f} s", flush=True)
    wall = time.time() - started
    acc, tl = evaluate(net, xte, yte)
    print(f"final: test_accuracy={acc:.4f} test_loss={tl:.4f} wall_time={wall:.1f}s "
          f"({len(xtr) * args.epochs / wall:.0f} train img/s) parameters={sum(p.numel() for p in net.parameters())}")


@torch.no_grad()
def evaluate(net, x, y):
    net.eval()
    correct, loss_sum = 0, 0.0
    for i in range(0, len(x), 256):
        out = net(x[i:i + 256])
        loss_sum += F.cross_entropy(out, y[i:i + 256], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + 256]).sum().item()
    return correct / len(x), loss_sum / len(x)


if __name__ == "__main__":
    main()
