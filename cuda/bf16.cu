// Kernels on the bf16 activations of the mixed-precision path. Elementwise ones take any layout
// (the operands of one call share it): ReLU forward and its backward from the output, the sum
// of two tensors. Per-channel ones take NHWC, an [m][c] matrix of m = n·h·w rows: a channel
// bias added (fp32 bias, fp32 math, one rounding) and the per-channel sum (the bias gradient;
// fp64 partial sums over row chunks folded in a fixed order, so bit-reproducible).
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

__global__ void add_bf16_kernel(const __nv_bfloat16* __restrict__ a,
                                const __nv_bfloat16* __restrict__ b,
                                __nv_bfloat16* __restrict__ y, long long n) {
  const __nv_bfloat162* a2 = reinterpret_cast<const __nv_bfloat162*>(a);
  const __nv_bfloat162* b2 = reinterpret_cast<const __nv_bfloat162*>(b);
  __nv_bfloat162* y2 = reinterpret_cast<__nv_bfloat162*>(y);
  MG_GRID_STRIDE(i, n / 2) {
    const float2 u = __bfloat1622float2(a2[i]);
    const float2 v = __bfloat1622float2(b2[i]);
    y2[i] = __floats2bfloat162_rn(u.x + v.x, u.y + v.y);
  }
  if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
    y[n - 1] = __float2bfloat16_rn(__bfloat162float(a[n - 1]) + __bfloat162float(b[n - 1]));
  }
}

// Channel pairs (even c): one 32-bit access per pair, the channel from a 32-bit remainder.
// x and y may be the same buffer (the bias added in place), hence no __restrict__ on them.
__global__ void add_channel_bias_pairs_kernel(const __nv_bfloat162* x,
                                              const float* __restrict__ bias,
                                              __nv_bfloat162* y, long long pairs,
                                              int half_c) {
  MG_GRID_STRIDE(i, pairs) {
    const int ch = 2 * (int)(pairs <= 0xffffffffLL ? (unsigned)i % (unsigned)half_c : i % half_c);
    const float2 v = __bfloat1622float2(x[i]);
    y[i] = __floats2bfloat162_rn(v.x + bias[ch], v.y + bias[ch + 1]);
  }
}

__global__ void add_channel_bias_nhwc_kernel(const __nv_bfloat16* x,
                                             const float* __restrict__ bias,
                                             __nv_bfloat16* y, long long total,
                                             long long c) {
  MG_GRID_STRIDE(i, total) {
    y[i] = __float2bfloat16_rn(__bfloat162float(x[i]) + bias[i % c]);
  }
}

constexpr int kSumChannels = 32;  // channels per block (threadIdx.x)
constexpr int kSumLanes = 8;      // row lanes per block (threadIdx.y)

// partial[chunk][ch] = Σ x[r][ch] over the chunk's rows.
__global__ void channel_partials_nhwc_kernel(const __nv_bfloat16* __restrict__ x, long long m,
                                             long long c, long long rows_per_chunk,
                                             double* __restrict__ partial) {
  __shared__ double lanes[kSumLanes][kSumChannels];
  const long long ch = (long long)blockIdx.y * kSumChannels + threadIdx.x;
  const long long r0 = (long long)blockIdx.x * rows_per_chunk;
  const long long r1 = min(m, r0 + rows_per_chunk);
  double acc = 0.0;
  if (ch < c) {
    for (long long r = r0 + threadIdx.y; r < r1; r += kSumLanes) {
      acc += (double)__bfloat162float(x[r * c + ch]);
    }
  }
  lanes[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    double t = 0.0;
    for (int l = 0; l < kSumLanes; ++l) t += lanes[l][threadIdx.x];
    partial[(long long)blockIdx.x * c + ch] = t;
  }
}

// out[ch] = Σ_k partial[k][ch], one thread per channel, k in order.
__global__ void channel_fold_kernel(const double* __restrict__ partial, long long chunks,
                                    long long c, float* __restrict__ out) {
  MG_GRID_STRIDE(ch, c) {
    double t = 0.0;
    for (long long k = 0; k < chunks; ++k) t += partial[k * c + ch];
    out[ch] = (float)t;
  }
}

// Row chunks of the per-channel sum: a function of m only.
long long sum_chunks(long long m) {
  long long chunks = (m + 2047) / 2048;
  if (chunks < 1) chunks = 1;
  if (chunks > 256) chunks = 256;
  return chunks;
}

}  // namespace

MG_EXPORT int mg_add_bf16(const __nv_bfloat16* a, const __nv_bfloat16* b, __nv_bfloat16* y,
                          long long n, cudaStream_t stream) {
  if (n == 0) return 0;
  add_bf16_kernel<<<mg::blocks_for(n / 2 + 1), mg::kThreads, 0, stream>>>(a, b, y, n);
  return mg::launch_status();
}

MG_EXPORT int mg_add_channel_bias_nhwc_bf16(const __nv_bfloat16* x, const float* bias,
                                            __nv_bfloat16* y, long long m, long long c,
                                            cudaStream_t stream) {
  const long long total = m * c;
  if (total == 0) return 0;
  if (c % 2 == 0 && c / 2 <= 2147483647LL) {
    add_channel_bias_pairs_kernel<<<mg::blocks_for(total / 2), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const __nv_bfloat162*>(x), bias, reinterpret_cast<__nv_bfloat162*>(y),
        total / 2, (int)(c / 2));
    return mg::launch_status();
  }
  add_channel_bias_nhwc_kernel<<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(x, bias, y,
                                                                                   total, c);
  return mg::launch_status();
}

// The fp64 partials `mg_sum_per_channel_nhwc_bf16` needs room for.
MG_EXPORT long long mg_sum_per_channel_nhwc_partials(long long m, long long c) {
  return sum_chunks(m) * c;
}

MG_EXPORT int mg_sum_per_channel_nhwc_bf16(const __nv_bfloat16* x, float* out, double* partial,
                                           long long m, long long c, cudaStream_t stream) {
  if (c == 0) return 0;
  const long long chunks = sum_chunks(m);
  const long long rows = (m + chunks - 1) / chunks;
  const dim3 grid((unsigned)chunks, (unsigned)((c + kSumChannels - 1) / kSumChannels));
  channel_partials_nhwc_kernel<<<grid, dim3(kSumChannels, kSumLanes), 0, stream>>>(x, m, c, rows,
                                                                                   partial);
  const int status = mg::launch_status();
  if (status != 0) return status;
  channel_fold_kernel<<<mg::blocks_for(c), mg::kThreads, 0, stream>>>(partial, chunks, c, out);
  return mg::launch_status();
}

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
