#!/usr/bin/env python3
"""Decode + resize throughput with PIL on one core: the peer of
crates/dnn-data/examples/bench_decode.rs (same files, same work, same output format).

Each Oxford-IIIT Pet pair: the JPEG decoded (with ``Image.draft`` -- PIL's reduced JPEG decoding --
or in full), converted to RGB and resized to 128x128 (bilinear, PIL's antialiased one, or box =
area), the trimap PNG decoded and resized nearest.

    python3 peers/python/bench_decode_pil.py [PET_ROOT] [ROUNDS]      (run under taskset -c 0)
"""

import os
import sys
import time

from PIL import Image

TARGET = (128, 128)


def pairs(root):
    with open(os.path.join(root, "annotations", "list.txt")) as f:
        names = [l.split()[0] for l in f if l.strip() and not l.startswith("#")]
    return [
        (os.path.join(root, "images", n + ".jpg"), os.path.join(root, "annotations", "trimaps", n + ".png"))
        for n in names
    ]


def one_pass(items, draft, resample):
    total = 0
    for image_path, mask_path in items:
        with Image.open(image_path) as im:
            if draft:
                im.draft("RGB", TARGET)  # reduced decoding: the smallest scale still >= TARGET
            small = im.convert("RGB").resize(TARGET, resample)
        with Image.open(mask_path) as m:
            mask = m.resize(TARGET, Image.NEAREST)
        total += small.getpixel((64, 64))[0] + mask.getpixel((64, 64))
    return total


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "..", "shared", "data", "oxford-pet-sample")
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    items = pairs(root)
    print(f"# bench_decode_pil: {len(items)} pairs, PIL {Image.__version__}, target 128x128, best of {rounds} rounds")
    variants = [
        ("draft decode + bilinear", True, Image.BILINEAR),
        ("draft decode + box (area)", True, Image.BOX),
        ("full decode + bilinear", False, Image.BILINEAR),
    ]
    for label, draft, resample in variants:
        one_pass(items, draft, resample)
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            one_pass(items, draft, resample)
            best = min(best, time.perf_counter() - start)
        print(f"pil   {label:<28} {len(items) / best:8.1f} pairs/s  {best * 1e3 / len(items):6.3f} ms/pair")


if __name__ == "__main__":
    main()
