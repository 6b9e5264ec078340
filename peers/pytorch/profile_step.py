"""Kernel time of one PyTorch training step of the bench-unet peer (same U-Net, same step), by
torch.profiler: CUDA time summed per kernel name, largest first — the PyTorch side of
`xtask/gpu-scripts/profile.sh`.

    python3 peers/pytorch/profile_step.py --mode tf32 --config 64:256:16
"""
import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_unet import setup  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="tf32")
    ap.add_argument("--config", default="64:256:16")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    base, size, batch = map(int, a.config.split(":"))
    _, step, _, _ = setup("cuda", base, size, batch, a.mode)
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    by, count = collections.Counter(), collections.Counter()
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            by[e.name[:90]] += e.device_time
            count[e.name[:90]] += 1
    total = sum(by.values())
    print(f"pytorch {a.mode}: kernels {sum(count.values())}, total {total / 1e3:.2f} ms")
    for k, v in by.most_common(a.top):
        print(f"{v / 1e3:8.3f} ms {100 * v / total:5.1f}% x{count[k]:4d} {k}")


if __name__ == "__main__":
    main()
