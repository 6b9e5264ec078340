// Kernels on the NHWC activations of the bf16 and TF32 modes (element type T: bf16 or fp32; see
// act.cuh). Elementwise ones take any layout (the operands of one call share it): ReLU forward
// and its backward from the output, the sum of two tensors. Per-channel ones take NHWC, an
// [m][c] matrix of m = n·h·w rows: a channel bias added (fp32 bias, fp32 math, one rounding) and
// the per-channel sum (the bias gradient; fp64 partial sums over row chunks folded in a fixed
// order, so bit-reproducible).
#include "act.cuh"
#include "common.cuh"

namespace {

using mg::Act;
using mg::Vec16;

// Pairs of elements per access; the odd last element (odd n) by the kernel's thread 0.
template <typename T>
__global__ void relu_kernel(const T* __restrict__ x, T* __restrict__ y, long long n) {
  using P = typename Act<T>::Pair;
  const P* x2 = reinterpret_cast<const P*>(x);
  P* y2 = reinterpret_cast<P*>(y);
  // NaN propagates (as cuDNN's ReLU does): only values below zero become zero.
  MG_GRID_STRIDE(i, n / 2) {
    const float2 v = Act<T>::get2(x2[i]);
    y2[i] = Act<T>::make2(v.x < 0.0f ? 0.0f : v.x, v.y < 0.0f ? 0.0f : v.y);
  }
  if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
    const float v = Act<T>::get(x[n - 1]);
    y[n - 1] = Act<T>::make(v < 0.0f ? 0.0f : v);
  }
}

template <typename T>
__global__ void relu_backward_kernel(const T* __restrict__ y, const T* __restrict__ dy,
                                     T* __restrict__ dx, long long n) {
  using P = typename Act<T>::Pair;
  const P* y2 = reinterpret_cast<const P*>(y);
  const P* dy2 = reinterpret_cast<const P*>(dy);
  P* dx2 = reinterpret_cast<P*>(dx);
  MG_GRID_STRIDE(i, n / 2) {
    const float2 v = Act<T>::get2(y2[i]);
    const float2 g = Act<T>::get2(dy2[i]);
    dx2[i] = Act<T>::make2(v.x > 0.0f ? g.x : 0.0f, v.y > 0.0f ? g.y : 0.0f);
  }
  if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
    dx[n - 1] = Act<T>::make(Act<T>::get(y[n - 1]) > 0.0f ? Act<T>::get(dy[n - 1]) : 0.0f);
  }
}

template <typename T>
__global__ void add_kernel(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ y,
                           long long n) {
  using P = typename Act<T>::Pair;
  const P* a2 = reinterpret_cast<const P*>(a);
  const P* b2 = reinterpret_cast<const P*>(b);
  P* y2 = reinterpret_cast<P*>(y);
  MG_GRID_STRIDE(i, n / 2) {
    const float2 u = Act<T>::get2(a2[i]);
    const float2 v = Act<T>::get2(b2[i]);
    y2[i] = Act<T>::make2(u.x + v.x, u.y + v.y);
  }
  if ((n & 1) && blockIdx.x == 0 && threadIdx.x == 0) {
    y[n - 1] = Act<T>::make(Act<T>::get(a[n - 1]) + Act<T>::get(b[n - 1]));
  }
}

// Channel pairs (even c): one access per pair, the channel from a 32-bit remainder. x and y may
// be the same buffer (the bias added in place), hence no __restrict__ on them.
template <typename T>
__global__ void add_channel_bias_pairs_kernel(const typename Act<T>::Pair* x,
                                              const float* __restrict__ bias,
                                              typename Act<T>::Pair* y, long long pairs,
                                              int half_c) {
  MG_GRID_STRIDE(i, pairs) {
    const int ch = 2 * (int)(pairs <= 0xffffffffLL ? (unsigned)i % (unsigned)half_c : i % half_c);
    const float2 v = Act<T>::get2(x[i]);
    y[i] = Act<T>::make2(v.x + bias[ch], v.y + bias[ch + 1]);
  }
}

template <typename T>
__global__ void add_channel_bias_nhwc_kernel(const T* x, const float* __restrict__ bias, T* y,
                                             long long total, long long c) {
  MG_GRID_STRIDE(i, total) { y[i] = Act<T>::make(Act<T>::get(x[i]) + bias[i % c]); }
}

// y = a + b over whole 16-byte vectors (the caller adds the tail); the same rounding as the pair
// kernel, so the same bits.
template <typename T>
__global__ void add_vec_kernel(const uint4* __restrict__ a, const uint4* __restrict__ b,
                               uint4* __restrict__ y, long long vecs) {
  constexpr int N = Vec16<T>::kN;
  MG_GRID_STRIDE(i, vecs) {
    float u[N], v[N];
    Vec16<T>::get(a[i], u);
    Vec16<T>::get(b[i], v);
#pragma unroll
    for (int k = 0; k < N; ++k) u[k] += v[k];
    y[i] = Vec16<T>::make(u);
  }
}

// The channel bias over whole 16-byte vectors of rows whose channel count is a multiple of the
// vector (x and y may be the same buffer).
template <typename T>
__global__ void add_channel_bias_vec_kernel(const uint4* x, const float* __restrict__ bias,
                                            uint4* y, long long vecs, int vecs_per_row) {
  constexpr int N = Vec16<T>::kN;
  MG_GRID_STRIDE(i, vecs) {
    const int ch =
        N * (int)(vecs <= 0xffffffffLL ? (unsigned)i % (unsigned)vecs_per_row : i % vecs_per_row);
    float v[N];
    Vec16<T>::get(x[i], v);
#pragma unroll
    for (int k = 0; k < N; ++k) v[k] += bias[ch + k];
    y[i] = Vec16<T>::make(v);
  }
}

constexpr int kSumChannels = 32;  // channels per block (threadIdx.x)
constexpr int kSumLanes = 8;      // row lanes per block (threadIdx.y)

// partial[chunk][ch] = Σ x[r][ch] over the chunk's rows.
template <typename T>
__global__ void channel_partials_nhwc_kernel(const T* __restrict__ x, long long m, long long c,
                                             long long rows_per_chunk,
                                             double* __restrict__ partial) {
  __shared__ double lanes[kSumLanes][kSumChannels];
  const long long ch = (long long)blockIdx.y * kSumChannels + threadIdx.x;
  const long long r0 = (long long)blockIdx.x * rows_per_chunk;
  const long long r1 = min(m, r0 + rows_per_chunk);
  double acc = 0.0;
  if (ch < c) {
    for (long long r = r0 + threadIdx.y; r < r1; r += kSumLanes) {
      acc += (double)Act<T>::get(x[r * c + ch]);
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

// out[ch] = Σ_k partial[k][ch], one warp per channel: lanes stride the chunks, a fixed shuffle
// tree combines them (the same order every run; one thread per channel walking 256 chunks in a
// row took ~13 µs a call).
__global__ void channel_fold_kernel(const double* __restrict__ partial, long long chunks,
                                    long long c, float* __restrict__ out) {
  const long long ch = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (ch >= c) return;
  const double t = mg::warp_strided_sum(partial + ch, chunks, c);
  if ((threadIdx.x & 31) == 0) out[ch] = (float)t;
}

// Row chunks of the per-channel sum: a function of m only.
long long sum_chunks(long long m) {
  long long chunks = (m + 2047) / 2048;
  if (chunks < 1) chunks = 1;
  if (chunks > 256) chunks = 256;
  return chunks;
}

template <typename T>
int add(const T* a, const T* b, T* y, long long n, cudaStream_t stream) {
  if (n == 0) return 0;
  constexpr int N = Vec16<T>::kN;
  if (n >= N && mg::aligned16({a, b, y})) {
    // Whole vectors, then the tail (< N elements) by the pair kernel.
    const long long vecs = n / N, done = vecs * N;
    add_vec_kernel<T><<<mg::blocks_for(vecs), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(a), reinterpret_cast<const uint4*>(b),
        reinterpret_cast<uint4*>(y), vecs);
    if (done < n) {
      add_kernel<T><<<1, mg::kThreads, 0, stream>>>(a + done, b + done, y + done, n - done);
    }
    return mg::launch_status();
  }
  add_kernel<T><<<mg::blocks_for(n / 2 + 1), mg::kThreads, 0, stream>>>(a, b, y, n);
  return mg::launch_status();
}

template <typename T>
int add_channel_bias(const T* x, const float* bias, T* y, long long m, long long c,
                     cudaStream_t stream) {
  using P = typename Act<T>::Pair;
  const long long total = m * c;
  if (total == 0) return 0;
  constexpr int N = Vec16<T>::kN;
  if (c % N == 0 && c / N <= 2147483647LL && mg::aligned16({x, y})) {
    add_channel_bias_vec_kernel<T><<<mg::blocks_for(total / N), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const uint4*>(x), bias, reinterpret_cast<uint4*>(y), total / N,
        (int)(c / N));
    return mg::launch_status();
  }
  if (c % 2 == 0 && c / 2 <= 2147483647LL) {
    add_channel_bias_pairs_kernel<T><<<mg::blocks_for(total / 2), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const P*>(x), bias, reinterpret_cast<P*>(y), total / 2, (int)(c / 2));
    return mg::launch_status();
  }
  add_channel_bias_nhwc_kernel<T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(
      x, bias, y, total, c);
  return mg::launch_status();
}

template <typename T>
int sum_per_channel(const T* x, float* out, double* partial, long long m, long long c,
                    cudaStream_t stream) {
  if (c == 0) return 0;
  const long long chunks = sum_chunks(m);
  const long long rows = (m + chunks - 1) / chunks;
  const dim3 grid((unsigned)chunks, (unsigned)((c + kSumChannels - 1) / kSumChannels));
  channel_partials_nhwc_kernel<T><<<grid, dim3(kSumChannels, kSumLanes), 0, stream>>>(
      x, m, c, rows, partial);
  const int status = mg::launch_status();
  if (status != 0) return status;
  channel_fold_kernel<<<(unsigned)((c * 32 + mg::kThreads - 1) / mg::kThreads), mg::kThreads, 0,
                        stream>>>(partial, chunks, c, out);
  return mg::launch_status();
}

template <typename T>
int relu(const T* x, T* y, long long n, cudaStream_t stream) {
  if (n == 0) return 0;
  relu_kernel<T><<<mg::blocks_for(n / 2 + 1), mg::kThreads, 0, stream>>>(x, y, n);
  return mg::launch_status();
}

template <typename T>
int relu_backward(const T* y, const T* dy, T* dx, long long n, cudaStream_t stream) {
  if (n == 0) return 0;
  relu_backward_kernel<T><<<mg::blocks_for(n / 2 + 1), mg::kThreads, 0, stream>>>(y, dy, dx, n);
  return mg::launch_status();
}

}  // namespace

// The fp64 partials `mg_sum_per_channel_nhwc_*` needs room for.
MG_EXPORT long long mg_sum_per_channel_nhwc_partials(long long m, long long c) {
  return sum_chunks(m) * c;
}

// One launcher per element type: `_bf16` takes __nv_bfloat16 activations, `_f32` float ones.
#define MG_NHWC_LAUNCHERS(SUFFIX, T)                                                            \
  MG_EXPORT int mg_add_##SUFFIX(const T* a, const T* b, T* y, long long n,                      \
                                cudaStream_t stream) {                                          \
    return add<T>(a, b, y, n, stream);                                                          \
  }                                                                                             \
  MG_EXPORT int mg_add_channel_bias_nhwc_##SUFFIX(const T* x, const float* bias, T* y,          \
                                                  long long m, long long c,                     \
                                                  cudaStream_t stream) {                        \
    return add_channel_bias<T>(x, bias, y, m, c, stream);                                       \
  }                                                                                             \
  MG_EXPORT int mg_sum_per_channel_nhwc_##SUFFIX(const T* x, float* out, double* partial,       \
                                                 long long m, long long c,                      \
                                                 cudaStream_t stream) {                         \
    return sum_per_channel<T>(x, out, partial, m, c, stream);                                   \
  }                                                                                             \
  MG_EXPORT int mg_relu_##SUFFIX(const T* x, T* y, long long n, cudaStream_t stream) {          \
    return relu<T>(x, y, n, stream);                                                            \
  }                                                                                             \
  MG_EXPORT int mg_relu_backward_##SUFFIX(const T* y, const T* dy, T* dx, long long n,          \
                                          cudaStream_t stream) {                                \
    return relu_backward<T>(y, dy, dx, n, stream);                                              \
  }

MG_NHWC_LAUNCHERS(bf16, __nv_bfloat16)
MG_NHWC_LAUNCHERS(f32, float)
