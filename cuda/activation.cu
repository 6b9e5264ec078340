// Leaky ReLU (cuDNN has no such activation mode), with the CPU's semantics: `x > 0 ? x :
// slope·x` and the derivative `x > 0 ? 1 : slope` (so the kink at 0 takes the slope).
#include "common.cuh"

namespace {

__global__ void leaky_relu_forward_kernel(const float* __restrict__ x, float* __restrict__ y,
                                          long long n, float slope) {
  MG_GRID_STRIDE(i, n) {
    float v = x[i];
    y[i] = v > 0.0f ? v : v * slope;
  }
}

__global__ void leaky_relu_backward_kernel(const float* __restrict__ x,
                                           const float* __restrict__ dy, float* __restrict__ dx,
                                           long long n, float slope) {
  MG_GRID_STRIDE(i, n) { dx[i] = dy[i] * (x[i] > 0.0f ? 1.0f : slope); }
}

}  // namespace

MG_EXPORT int mg_leaky_relu_forward(const float* x, float* y, long long n, float slope,
                                    cudaStream_t stream) {
  if (n == 0) return 0;
  leaky_relu_forward_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(x, y, n, slope);
  return mg::launch_status();
}

MG_EXPORT int mg_leaky_relu_backward(const float* x, const float* dy, float* dx, long long n,
                                     float slope, cudaStream_t stream) {
  if (n == 0) return 0;
  leaky_relu_backward_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(x, dy, dx, n,
                                                                             slope);
  return mg::launch_status();
}
