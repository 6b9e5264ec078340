// Shared by every kernel file: the launcher convention and grid helpers.
//
// Each kernel has an `extern "C"` launcher `mg_<name>(..., cudaStream_t stream)` that queues the
// kernel on the caller's stream and returns the launch status (a cudaError_t as int, 0 = success).
// Launchers never synchronise; sizes are `long long` element counts.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#define MG_EXPORT extern "C"

namespace mg {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements (capped; kernels loop over the rest).
inline unsigned int blocks_for(long long n) {
  long long b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  if (b > 65535LL * 8) b = 65535LL * 8;
  return (unsigned int)b;
}

inline int launch_status() { return (int)cudaGetLastError(); }

}  // namespace mg

#define MG_GRID_STRIDE(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)
