// Elementwise kernels on the bf16 activations of the mixed-precision path (any layout: the
// operands of one call share it): ReLU forward, and its backward from the output.
#include <cuda_bf16.h>

#include "common.cuh"

namespace {

// Pairs of elements per 32-bit access; the odd last element (odd n) by the kernel's thread 0.
__global__ void relu_bf16_kernel(const __nv_bfloat16* __restrict__ x,
                                 __nv_bfloat16* __restrict__ y, long long n) {
  const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(x);
  __nv_bfloat162* y2 = reinterpret_cast<__nv_bfloat162*>(y);
  // NaN propagates (as cuDNN's ReLU does): only values below zero become zero.
  MG_GRID_STRIDE(i, n / 2) {
    const float2 v = __bfloat1622float2(x2[i]);
    y2[i] = __floats2bfloat162_rn(v.x < 0.0f ? 0.0f : v.x, v.y < 0.0f ? 0.0f : v.y);
  }
  if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
    const float v = __bfloat162float(x[n - 1]);
    y[n - 1] = __float2bfloat16(v < 0.0f ? 0.0f : v);
  }
}

__global__ void relu_backward_bf16_kernel(const __nv_bfloat16* __restrict__ y,
                                          const __nv_bfloat16* __restrict__ dy,
                                          __nv_bfloat16* __restrict__ dx, long long n) {
  const __nv_bfloat162* y2 = reinterpret_cast<const __nv_bfloat162*>(y);
  const __nv_bfloat162* dy2 = reinterpret_cast<const __nv_bfloat162*>(dy);
  __nv_bfloat162* dx2 = reinterpret_cast<__nv_bfloat162*>(dx);
  MG_GRID_STRIDE(i, n / 2) {
    const float2 v = __bfloat1622float2(y2[i]);
    const float2 g = __bfloat1622float2(dy2[i]);
    dx2[i] = __floats2bfloat162_rn(v.x > 0.0f ? g.x : 0.0f, v.y > 0.0f ? g.y : 0.0f);
  }
  if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
    dx[n - 1] = __bfloat162float(y[n - 1]) > 0.0f ? dy[n - 1] : __float2bfloat16(0.0f);
  }
}

}  // namespace

MG_EXPORT int mg_relu_bf16(const __nv_bfloat16* x, __nv_bfloat16* y, long long n,
                           cudaStream_t stream) {
  if (n == 0) return 0;
  relu_bf16_kernel<<<mg::blocks_for(n / 2 + 1), mg::kThreads, 0, stream>>>(x, y, n);
  return mg::launch_status();
}

MG_EXPORT int mg_relu_backward_bf16(const __nv_bfloat16* y, const __nv_bfloat16* dy,
                                    __nv_bfloat16* dx, long long n, cudaStream_t stream) {
  if (n == 0) return 0;
  relu_backward_bf16_kernel<<<mg::blocks_for(n / 2 + 1), mg::kThreads, 0, stream>>>(y, dy, dx, n);
  return mg::launch_status();
}
