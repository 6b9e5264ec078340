#!/usr/bin/env bash
# Sorts the crash and out-of-memory artifacts of one fuzz target by where they crash: replays the
# newest N (written after an optional time) one by one through the target's fuzz binary and
# counts the (error kind, first frames outside the sanitizer runtime) pairs. Frames named H5*
# are libhdf5's own; anything else deserves a look (see docs/reliability.md).
#
#   fuzz/triage.sh hdf5_dataset 80 "2026-11-25 19:22"
set -u
cd "$(dirname "$0")"
t=${1:?target}; n=${2:-60}; since=$(date -d "${3:-1970-01-01}" +%s)
bin=target/x86_64-unknown-linux-gnu/release/$t
[ -x "$bin" ] || { echo "build it first: cargo +nightly fuzz build -O $t" >&2; exit 2; }
for f in $(ls -t artifacts/"$t"/crash-* artifacts/"$t"/oom-* 2>/dev/null | head -"$n"); do
  [ "$(stat -c %Y "$f")" -lt "$since" ] && continue
  out=$(ASAN_OPTIONS=detect_leaks=0 timeout 20 "$bin" -rss_limit_mb=2048 "$f" 2>&1)
  kind=$(echo "$out" | grep -m1 -oE 'ERROR: (AddressSanitizer: [A-Za-z-]+|libFuzzer: [a-z-]+)|panicked at [^ ]+')
  frames=$(echo "$out" | grep -E '^ +#[0-9]+ ' \
    | grep -vE '__asan|__interceptor|__sanitizer|asan_|libc\.so|compiler-rt|fuzzer::|__libc_start|_start$|memcpy|memmove|malloc|calloc|realloc' \
    | head -3 | sed -E 's/.* in ([^ ]+).*/\1/' | tr '\n' ' ')
  echo "${kind:-no crash when replayed alone} | $frames"
done | sort | uniq -c | sort -rn
