// Batch-norm pieces cuDNN does not provide: the inverse deviation of the running variance (the
// `saved` of evaluation mode) and the backward pass with frozen statistics (mean and inverse
// deviation constants: dx = gamma·inv_std·dy), with per-channel sums in double like the CPU.
#include "common.cuh"

namespace {

constexpr int kBnThreads = 256;

// Sum over the block of kBnThreads threads, in a fixed order; valid in thread 0.
__device__ inline double bn_block_sum(double v, double* scratch) {
  scratch[threadIdx.x] = v;
  __syncthreads();
  for (int half = kBnThreads / 2; half > 0; half >>= 1) {
    if (threadIdx.x < half) scratch[threadIdx.x] += scratch[threadIdx.x + half];
    __syncthreads();
  }
  double r = scratch[0];
  __syncthreads();
  return r;
}

__global__ void bn_inv_std_kernel(const float* __restrict__ var, float* __restrict__ inv_std,
                                  long long c, float eps) {
  MG_GRID_STRIDE(i, c) { inv_std[i] = 1.0f / sqrtf(__fadd_rn(var[i], eps)); }
}

// One block per channel: dbeta = Σ dy, dgamma = Σ dy·x̂ with x̂ = (x − mean)·inv_std.
__global__ void bn_frozen_sums_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                      const float* __restrict__ mean,
                                      const float* __restrict__ inv_std,
                                      float* __restrict__ dgamma, float* __restrict__ dbeta,
                                      long long outer, long long c, long long inner) {
  __shared__ double scratch[kBnThreads];
  const long long ch = blockIdx.x;
  const float m = mean[ch], s = inv_std[ch];
  const long long count = outer * inner;
  double sdy = 0.0, sdyx = 0.0;
  for (long long j = threadIdx.x; j < count; j += kBnThreads) {
    long long n = j / inner, i = j % inner;
    long long at = (n * c + ch) * inner + i;
    float d = dy[at];
    float xhat = __fmul_rn(__fsub_rn(x[at], m), s);
    sdy += (double)d;
    sdyx += (double)d * (double)xhat;
  }
  sdy = bn_block_sum(sdy, scratch);
  sdyx = bn_block_sum(sdyx, scratch);
  if (threadIdx.x == 0) {
    dbeta[ch] = (float)sdy;
    dgamma[ch] = (float)sdyx;
  }
}

__global__ void bn_frozen_dx_kernel(const float* __restrict__ dy, const float* __restrict__ gamma,
                                    const float* __restrict__ inv_std, float* __restrict__ dx,
                                    long long total, long long c, long long inner) {
  MG_GRID_STRIDE(i, total) {
    long long ch = (i / inner) % c;
    dx[i] = __fmul_rn(__fmul_rn(gamma[ch], inv_std[ch]), dy[i]);
  }
}

}  // namespace

MG_EXPORT int mg_bn_inv_std(const float* var, float* inv_std, long long c, float eps,
                            cudaStream_t stream) {
  if (c == 0) return 0;
  bn_inv_std_kernel<<<mg::blocks_for(c), mg::kThreads, 0, stream>>>(var, inv_std, c, eps);
  return mg::launch_status();
}

MG_EXPORT int mg_bn_frozen_backward(const float* x, const float* dy, const float* mean,
                                    const float* inv_std, const float* gamma, float* dx,
                                    float* dgamma, float* dbeta, long long outer, long long c,
                                    long long inner, cudaStream_t stream) {
  if (c == 0) return 0;
  if (c > 2147483647LL) return (int)cudaErrorInvalidConfiguration;
  bn_frozen_sums_kernel<<<(unsigned int)c, kBnThreads, 0, stream>>>(x, dy, mean, inv_std, dgamma,
                                                                    dbeta, outer, c, inner);
  int status = mg::launch_status();
  if (status != 0) return status;
  const long long total = outer * c * inner;
  if (total == 0) return 0;
  bn_frozen_dx_kernel<<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(dy, gamma, inv_std, dx,
                                                                          total, c, inner);
  return mg::launch_status();
}
