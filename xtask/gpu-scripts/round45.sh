#!/usr/bin/env bash
# Round 45 (issue #11), on the H100: the clean-up after re-reading the session's change (one
# guard-shape check, one wait for a queued read in QueuedRead, the batch-norm buffers taken and
# set by one pair of helpers in train.rs, the loader's panic message shared, a test helper for
# Adam's operands); behaviour unchanged. All GPU tests, and train-unet from gpu-data/pets128.h5
# in bf16 for 4 epochs (its losses must equal rounds 39-44's).
source "$(dirname "$0")/common.sh"
grep -hE "test result|FAILED|panicked" "$OUT/tests.log" | grep -v " 0 passed" | head -24
common="--device cuda --data gpu-data/pets128.h5 --split trainval --val-split test --size 256 --base 64 --depth 4 --batch 16 --epochs 4 --augment hflip --loss ce --quiet --workers 8"
timeout 120 "$bin" train-unet $common --precision bf16 --out runs/data-bf16 > "$OUT/train-bf16.log" 2>&1
echo "== bf16: exit $?"
grep -E "^ +[0-9]+ |training:" "$OUT/train-bf16.log" | tail -8
