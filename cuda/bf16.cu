// Elementwise kernels on the bf16 activations of the mixed-precision path (any layout: the
// operands of one call share it): ReLU forward, and its backward from the output.
#include <cuda_bf16.h>

#include "common.cuh"

namespace {

__global__ void relu_bf16_kernel(const __nv_bfloat16* __restrict__ x,
                                 __nv_bfloat16* __restrict__ y, long long n) {
  const __nv_bfloat16 zero = __float2bfloat16(0.0f);
  MG_GRID_STRIDE(i, n) {
    const __nv_bfloat16 v = x[i];
    // NaN propagates (as cuDNN's and the CPU's max(x, 0) with NaN input).
    y[i] = (__bfloat162float(v) < 0.0f) ? zero : v;
  }
}

__global__ void relu_backward_bf16_kernel(const __nv_bfloat16* __restrict__ y,
                                          const __nv_bfloat16* __restrict__ dy,
                                          __nv_bfloat16* __restrict__ dx, long long n) {
  const __nv_bfloat16 zero = __float2bfloat16(0.0f);
  MG_GRID_STRIDE(i, n) { dx[i] = (__bfloat162float(y[i]) > 0.0f) ? dy[i] : zero; }
}

}  // namespace

MG_EXPORT int mg_relu_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, long long n,
                           cudaStream_t stream) {
  if (n == 0) return 0;
  relu_bf16_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(x, y, n);
  return mg::launch_status();
}

MG_EXPORT int mg_relu_backward_bf16(const __nv_bfloat16* y, const __nv_bfloat16* dy,
                                    __nv_bfloat16* dx, long long n, cudaStream_t stream) {
  if (n == 0) return 0;
  relu_backward_bf16_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(y, dy, dx, n);
  return mg::launch_status();
}
