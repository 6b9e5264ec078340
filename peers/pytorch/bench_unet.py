"""PyTorch peer of `cargo xtask bench-unet`: the same U-Net (unet_pets.UNet: 3×3 conv-BN-ReLU ×2 per
level, 2×2 max-pool, 2×2 stride-2 transposed conv, skip concat, 1×1 head), the same training step
(forward, pixel-wise cross-entropy, backward, Adam 1e-3) on one random batch, and forward-only
inference in eval mode. Prints one JSON line per configuration and mode.

    python3 peers/pytorch/bench_unet.py --dev cuda --configs 64:256:16 --modes fp32,tf32
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unet_pets import UNet  # noqa: E402


def sync(dev):
    if dev == "cuda":
        torch.cuda.synchronize()


def measure(dev, base, size, batch, mode, iters, warm):
    torch.manual_seed(0)
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = dev == "cuda"
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    m = UNet(base=base, depth=4).to(dev)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 3, (batch, size, size), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x), y)
        loss.backward()
        opt.step()
        return loss

    m.train()
    for _ in range(warm):
        step()
    sync(dev)
    t = time.perf_counter()
    for _ in range(iters):
        loss = step()
    sync(dev)
    train = batch * iters / (time.perf_counter() - t)
    m.eval()
    with torch.no_grad():
        for _ in range(warm):
            m(x)
        sync(dev)
        t = time.perf_counter()
        for _ in range(iters):
            m(x)
        sync(dev)
    infer = batch * iters / (time.perf_counter() - t)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(side="pytorch", device=dev, mode=mode, base=base, size=size, batch=batch,
                train_img_s=train, infer_img_s=infer, peak_gib=peak, loss=float(loss),
                torch=torch.__version__)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", default="cuda")
    ap.add_argument("--configs", default="16:128:8")
    ap.add_argument("--modes", default="fp32")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    for c in a.configs.split(","):
        base, size, batch = map(int, c.split(":"))
        for mode in a.modes.split(","):
            print(json.dumps(measure(a.dev, base, size, batch, mode.strip(), a.iters, a.warm)), flush=True)
