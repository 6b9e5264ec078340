// The confusion matrix: one thread per pixel, prediction = first maximum over the channels (as
// the CPU: a later channel wins only when strictly greater), counts by integer atomics (exact).
// Labels were validated on the host.
#include "common.cuh"

namespace {

__global__ void confusion_kernel(const float* __restrict__ logits, const float* __restrict__ labels,
                                 unsigned long long* __restrict__ counts, long long outer,
                                 long long c, long long inner, int has_ignore,
                                 long long ignore_index) {
  MG_GRID_STRIDE(pix, outer * inner) {
    const float v = labels[pix];
    if (mg::is_ignored(v, has_ignore, ignore_index)) continue;
    const long long n = pix / inner, i = pix - n * inner;
    const float* z = logits + n * c * inner + i;
    long long best = 0;
    float best_v = z[0];
    for (long long ch = 1; ch < c; ++ch) {
      const float x = z[ch * inner];
      if (x > best_v) {
        best = ch;
        best_v = x;
      }
    }
    atomicAdd(&counts[(long long)v * c + best], 1ULL);
  }
}

}  // namespace

// `counts` holds c·c zeroed u64.
MG_EXPORT int mg_confusion_matrix(const float* logits, const float* labels,
                                  unsigned long long* counts, long long outer, long long c,
                                  long long inner, int has_ignore, long long ignore_index,
                                  cudaStream_t stream) {
  confusion_kernel<<<mg::blocks_for(outer * inner), mg::kThreads, 0, stream>>>(
      logits, labels, counts, outer, c, inner, has_ignore, ignore_index);
  return mg::launch_status();
}
