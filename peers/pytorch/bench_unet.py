"""PyTorch peer of `cargo xtask bench-unet`: the same U-Net (unet_pets.UNet: 3×3 conv-BN-ReLU ×2 per
level, 2×2 max-pool, 2×2 stride-2 transposed conv, skip concat, 1×1 head), the same training step
(forward, pixel-wise cross-entropy, backward, Adam 1e-3) on one random batch, and forward-only
inference in eval mode. Prints one JSON line per configuration and mode.

Modes as in issue #11: fp32 (TF32 off, NCHW), tf32 (TF32 on, channels-last) and bf16
(torch.autocast bfloat16, channels-last, fp32 master weights). `--compile MODES` also measures
torch.compile (default options) for those modes, as extra lines with "compiled": true.

    python3 peers/pytorch/bench_unet.py --dev cuda --configs 64:256:16 --modes fp32,tf32,bf16 \
        --compile bf16
"""
import contextlib
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


def setup(dev, base, size, batch, mode, compiled=False, deterministic=False):
    """The model, its training step and its inference pass on one random batch, as measured
    (also used by profile_step.py)."""
    torch.manual_seed(0)
    tf32 = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = dev == "cuda"
    # PyTorch's default is False (the fastest algorithms); --deterministic matches our
    # `bench-unet --deterministic`.
    torch.backends.cudnn.deterministic = deterministic
    channels_last = dev == "cuda" and mode in ("tf32", "bf16")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = UNet(base=base, depth=4).to(dev).to(memory_format=fmt)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size, device=dev).to(memory_format=fmt)
    y = torch.randint(0, 3, (batch, size, size), device=dev)
    if mode == "bf16":
        amp = lambda: torch.autocast(dev, dtype=torch.bfloat16)  # noqa: E731
    elif mode in ("fp32", "tf32"):
        amp = contextlib.nullcontext
    else:
        raise SystemExit(f"unknown mode {mode!r} (fp32, tf32, bf16)")
    net = torch.compile(m) if compiled else m

    def step():
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()
        return loss

    def infer():
        with amp():
            return net(x)

    return m, step, infer, channels_last


def measure(dev, base, size, batch, mode, iters, warm, compiled=False, deterministic=False):
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    m, step, infer, channels_last = setup(dev, base, size, batch, mode, compiled, deterministic)
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
            infer()
        sync(dev)
        t = time.perf_counter()
        for _ in range(iters):
            infer()
        sync(dev)
    infer_rate = batch * iters / (time.perf_counter() - t)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return dict(side="pytorch", device=dev, mode=mode, base=base, size=size, batch=batch,
                train_img_s=train, infer_img_s=infer_rate, peak_gib=peak, loss=float(loss),
                channels_last=channels_last, compiled=compiled, deterministic=deterministic,
                torch=torch.__version__)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", default="cuda")
    ap.add_argument("--configs", default="16:128:8")
    ap.add_argument("--modes", default="fp32")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warm", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", default="", help="modes also measured under torch.compile")
    ap.add_argument("--deterministic", action="store_true",
                    help="torch.backends.cudnn.deterministic = True")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    for c in a.configs.split(","):
        base, size, batch = map(int, c.split(":"))
        compile_modes = [c.strip() for c in a.compile.split(",") if c.strip()]
        for mode in a.modes.split(","):
            mode = mode.strip()
            r = measure(a.dev, base, size, batch, mode, a.iters, a.warm,
                        deterministic=a.deterministic)
            print(json.dumps(r), flush=True)
            if mode in compile_modes:
                r = measure(a.dev, base, size, batch, mode, a.iters, max(a.warm, 3), compiled=True,
                            deterministic=a.deterministic)
                print(json.dumps(r), flush=True)
