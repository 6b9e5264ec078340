// Batch normalisation (training) of NHWC activations, bf16 or fp32 (act.cuh): x is an [m][c]
// matrix (m = n·h·w rows of c channels). cuDNN's legacy NHWC batch-norm kernels were ~100x slower than memory speed on
// the H100 for these shapes, so the NHWC paths have their own:
//
//   stats:    per-channel partial sums of x and x² over row chunks (fp64), then one thread per
//             channel folds the partials in a fixed order: mean, biased variance, 1/sqrt(var+eps),
//             the running statistics (unbiased variance, as PyTorch and the CPU), and the affine
//             coefficients scale = gamma·inv_std, shift = beta - mean·scale;
//   apply:    y = x·scale[c] + shift[c] (fp32 math, one rounding to the element type);
//   backward: partial sums of dy and dy·x̂, folded into dbeta, dgamma and the coefficients of
//             dx = gamma·inv_std·(dy - dbeta/m - x̂·dgamma/m).
//
// Fused with a following ReLU (the U-Net's conv → BN → ReLU): the apply writes max(0, ·) (NaN
// passes), and the backward reads dy only where the ReLU passed: where x·scale + shift > 0,
// recomputed with the forward's coefficients when given (fp32), else where its output y > 0.
//
// Grids depend on the sizes only and partials are combined in a fixed order, so results are
// bit-reproducible from run to run.
#include <algorithm>
#include <type_traits>

#include "act.cuh"
#include "common.cuh"

namespace {

constexpr int kChannels = 32;  // channels per block (threadIdx.x)
constexpr int kRowLanes = 8;   // row lanes per block (threadIdx.y)

using mg::Act;

template <typename T>
__device__ inline float ld(const T* p, long long i) { return Act<T>::get(p[i]); }

// Whether the gradient passes a ReLU fused after the norm, at input value `v` of a channel whose
// forward coefficients are `ms`, `mt`: recomputed from the input with the forward apply's own
// arithmetic (`fmaf(v, scale, shift) > 0`) when the coefficients are given (`has_mask`), which
// saves reading the ReLU's output; else from that output `y` (read by the caller when given).
// The recomputed value is rounded to T as the forward rounded its output, so the mask is the
// same as the output's even where bf16 rounds a tiny positive value to zero.
template <typename T>
__device__ inline bool relu_passes(bool has_mask, float v, float ms, float mt, bool has_y,
                                   float y) {
  if (has_mask) return Act<T>::get(Act<T>::make(fmaf(v, ms, mt))) > 0.0f;
  return !has_y || y > 0.0f;
}

// partial_a[chunk][c] = Σ f_a(row, c), partial_b[chunk][c] = Σ f_b(row, c) over the chunk's rows.
// Mode 0: (x, x²). Mode 1: (dy, dy·(x - mean)·inv_std), dy zero where a fused ReLU did not
// pass (`relu_passes`: from the forward's coefficients `mscale`/`mshift`, or its output `relu_y`).
template <typename T, int kMode>
__global__ void partial_sums_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                    const T* __restrict__ relu_y,
                                    const float* __restrict__ mscale,
                                    const float* __restrict__ mshift,
                                    const float* __restrict__ mean,
                                    const float* __restrict__ inv_std, long long m, long long c,
                                    long long rows_per_chunk, double* __restrict__ partial_a,
                                    double* __restrict__ partial_b) {
  __shared__ double sa[kRowLanes][kChannels];
  __shared__ double sb[kRowLanes][kChannels];
  const long long ch = (long long)blockIdx.y * kChannels + threadIdx.x;
  const long long chunk = blockIdx.x;
  const long long r0 = chunk * rows_per_chunk;
  const long long r1 = min(m, r0 + rows_per_chunk);
  double a = 0.0, b = 0.0;
  if (ch < c) {
    float mu = 0.0f, is = 0.0f, ms = 0.0f, mt = 0.0f;
    const bool has_mask = mscale != nullptr;
    if (kMode == 1) {
      mu = mean[ch];
      is = inv_std[ch];
      if (has_mask) {
        ms = mscale[ch];
        mt = mshift[ch];
      }
    }
    for (long long r = r0 + threadIdx.y; r < r1; r += kRowLanes) {
      const float v = ld(x, r * c + ch);
      if (kMode == 0) {
        a += (double)v;
        b += (double)v * (double)v;
      } else {
        const bool has_y = !has_mask && relu_y != nullptr;
        const float y = has_y ? ld(relu_y, r * c + ch) : 0.0f;
        const float g =
            relu_passes<T>(has_mask, v, ms, mt, has_y, y) ? ld(dy, r * c + ch) : 0.0f;
        a += (double)g;
        b += (double)g * (double)((v - mu) * is);
      }
    }
  }
  sa[threadIdx.y][threadIdx.x] = a;
  sb[threadIdx.y][threadIdx.x] = b;
  __syncthreads();
  if (threadIdx.y == 0 && ch < c) {
    double ta = 0.0, tb = 0.0;
    for (int l = 0; l < kRowLanes; ++l) {
      ta += sa[l][threadIdx.x];
      tb += sb[l][threadIdx.x];
    }
    partial_a[chunk * c + ch] = ta;
    partial_b[chunk * c + ch] = tb;
  }
}

// The same sums for an even channel count, a channel pair per thread (one 32-bit bf16 or 64-bit
// fp32 load per row for each operand, so a warp reads 128 or 256 contiguous bytes); each channel's rows are added in the
// same order as above, so the partials are the same bits.
template <typename T, int kMode>
__global__ void partial_sums_pairs_kernel(const typename Act<T>::Pair* __restrict__ x,
                                          const typename Act<T>::Pair* __restrict__ dy,
                                          const typename Act<T>::Pair* __restrict__ relu_y,
                                          const float* __restrict__ mscale,
                                          const float* __restrict__ mshift,
                                          const float* __restrict__ mean,
                                          const float* __restrict__ inv_std, long long m,
                                          long long half_c, long long rows_per_chunk,
                                          double* __restrict__ partial_a,
                                          double* __restrict__ partial_b) {
  __shared__ double sa[kRowLanes][2 * kChannels];
  __shared__ double sb[kRowLanes][2 * kChannels];
  const long long pair = (long long)blockIdx.y * kChannels + threadIdx.x;
  const long long ch = 2 * pair, c = 2 * half_c;
  const long long chunk = blockIdx.x;
  const long long r0 = chunk * rows_per_chunk;
  const long long r1 = min(m, r0 + rows_per_chunk);
  double a0 = 0.0, a1 = 0.0, b0 = 0.0, b1 = 0.0;
  if (pair < half_c) {
    float mu0 = 0.0f, mu1 = 0.0f, is0 = 0.0f, is1 = 0.0f;
    float ms0 = 0.0f, ms1 = 0.0f, mt0 = 0.0f, mt1 = 0.0f;
    const bool has_mask = mscale != nullptr, has_y = !has_mask && relu_y != nullptr;
    if (kMode == 1) {
      mu0 = mean[ch];
      mu1 = mean[ch + 1];
      is0 = inv_std[ch];
      is1 = inv_std[ch + 1];
      if (has_mask) {
        ms0 = mscale[ch];
        ms1 = mscale[ch + 1];
        mt0 = mshift[ch];
        mt1 = mshift[ch + 1];
      }
    }
    // One row's contribution, in row order; the loads of several rows are issued first.
    auto add_row = [&](float2 v, float2 g) {
      if (kMode == 0) {
        a0 += (double)v.x;
        a1 += (double)v.y;
        b0 += (double)v.x * (double)v.x;
        b1 += (double)v.y * (double)v.y;
      } else {
        a0 += (double)g.x;
        a1 += (double)g.y;
        b0 += (double)g.x * (double)((v.x - mu0) * is0);
        b1 += (double)g.y * (double)((v.y - mu1) * is1);
      }
    };
    auto grad = [&](long long at, float2 v) {
      if (kMode == 0) return make_float2(0.0f, 0.0f);
      float2 g = Act<T>::get2(dy[at]);
      const float2 y = has_y ? Act<T>::get2(relu_y[at]) : make_float2(0.0f, 0.0f);
      g.x = relu_passes<T>(has_mask, v.x, ms0, mt0, has_y, y.x) ? g.x : 0.0f;
      g.y = relu_passes<T>(has_mask, v.y, ms1, mt1, has_y, y.y) ? g.y : 0.0f;
      return g;
    };
    long long r = r0 + threadIdx.y;
    // Rows in flight per thread (8 for the statistics was slower in TF32: 0.98 vs 0.80 ms).
    constexpr int kUnroll = 4;
    for (; r + (kUnroll - 1) * kRowLanes < r1; r += kUnroll * kRowLanes) {
      float2 v[kUnroll], g[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const long long at = (r + k * kRowLanes) * half_c + pair;
        v[k] = Act<T>::get2(x[at]);
        g[k] = grad(at, v[k]);
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) add_row(v[k], g[k]);
    }
    for (; r < r1; r += kRowLanes) {
      const long long at = r * half_c + pair;
      const float2 v = Act<T>::get2(x[at]);
      add_row(v, grad(at, v));
    }
  }
  sa[threadIdx.y][2 * threadIdx.x] = a0;
  sa[threadIdx.y][2 * threadIdx.x + 1] = a1;
  sb[threadIdx.y][2 * threadIdx.x] = b0;
  sb[threadIdx.y][2 * threadIdx.x + 1] = b1;
  __syncthreads();
  if (threadIdx.y == 0 && pair < half_c) {
    for (int k = 0; k < 2; ++k) {
      double ta = 0.0, tb = 0.0;
      for (int l = 0; l < kRowLanes; ++l) {
        ta += sa[l][2 * threadIdx.x + k];
        tb += sb[l][2 * threadIdx.x + k];
      }
      partial_a[chunk * c + ch + k] = ta;
      partial_b[chunk * c + ch + k] = tb;
    }
  }
}

// Launches the partial sums: channel pairs when `c` is even.
template <typename T, int kMode>
int launch_partial_sums(const T* x, const T* dy, const T* relu_y, const float* mscale,
                        const float* mshift, const float* mean, const float* inv_std,
                        long long m, long long c, long long chunks, long long rows,
                        double* partial_a, double* partial_b, cudaStream_t stream) {
  if (c % 2 == 0) {
    const dim3 grid((unsigned)chunks, (unsigned)((c / 2 + kChannels - 1) / kChannels));
    if (grid.y > 65535) return (int)cudaErrorInvalidConfiguration;
    partial_sums_pairs_kernel<T, kMode><<<grid, dim3(kChannels, kRowLanes), 0, stream>>>(
        reinterpret_cast<const typename Act<T>::Pair*>(x), reinterpret_cast<const typename Act<T>::Pair*>(dy),
        reinterpret_cast<const typename Act<T>::Pair*>(relu_y), mscale, mshift, mean, inv_std, m,
        c / 2, rows,
        partial_a, partial_b);
  } else {
    const dim3 grid((unsigned)chunks, (unsigned)((c + kChannels - 1) / kChannels));
    if (grid.y > 65535) return (int)cudaErrorInvalidConfiguration;
    partial_sums_kernel<T, kMode><<<grid, dim3(kChannels, kRowLanes), 0, stream>>>(
        x, dy, relu_y, mscale, mshift, mean, inv_std, m, c, rows, partial_a, partial_b);
  }
  return mg::launch_status();
}

// Σ_k partial[k][ch] over `chunks` by one warp, lanes striding the chunks and a fixed shuffle
// tree combining them (the same order every run); valid in lane 0.
__device__ inline void warp_fold(const double* __restrict__ partial_a,
                                 const double* __restrict__ partial_b, long long chunks,
                                 long long c, long long ch, double* a, double* b) {
  *a = mg::warp_strided_sum(partial_a + ch, chunks, c);
  *b = mg::warp_strided_sum(partial_b + ch, chunks, c);
}

// One warp per channel (blockDim.x = 256: 8 channels per block).
__global__ void stats_finalize_kernel(const double* __restrict__ partial_a,
                                      const double* __restrict__ partial_b, long long chunks,
                                      long long m, long long c, float eps, float momentum,
                                      const float* __restrict__ gamma,
                                      const float* __restrict__ beta, float* running_mean,
                                      float* running_var, float* __restrict__ save_mean,
                                      float* __restrict__ save_inv_std, float* __restrict__ scale,
                                      float* __restrict__ shift) {
  const long long ch = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (ch < c) {
    double s, sq;
    warp_fold(partial_a, partial_b, chunks, c, ch, &s, &sq);
    if ((threadIdx.x & 31) != 0) return;
    const double mean = s / (double)m;
    double var = sq / (double)m - mean * mean;
    if (var < 0.0) var = 0.0;
    const float inv_std = (float)(1.0 / sqrt(var + (double)eps));
    save_mean[ch] = (float)mean;
    save_inv_std[ch] = inv_std;
    const double unbias = m > 1 ? (double)m / (double)(m - 1) : 1.0;
    running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * (float)mean;
    running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (float)(var * unbias);
    const float sc = gamma[ch] * inv_std;
    scale[ch] = sc;
    shift[ch] = beta[ch] - (float)mean * sc;
  }
}

// Blocks of 256 threads for one warp per channel.
inline unsigned int warp_blocks(long long c) { return (unsigned int)((c * 32 + 255) / 256); }

// Elementwise kernels walk (row, channel pair): c even, so a pair never straddles two rows and
// one load or store moves two channels (32 bits of bf16, 64 of fp32); the channel is an index
// within the row, no division of the flat index.
// max(0, v) with NaN passing (as the ReLU kernels): only values below zero become zero.
__device__ inline float relu(float v) { return v < 0.0f ? 0.0f : v; }

template <typename T, bool kRelu>
__global__ void apply_kernel(const typename Act<T>::Pair* __restrict__ x,
                             typename Act<T>::Pair* __restrict__ y,
                             const float* __restrict__ scale, const float* __restrict__ shift,
                             long long pairs, int half_c) {
  MG_GRID_STRIDE(i, pairs) {
    const int ch = 2 * (int)(pairs <= 0xffffffffLL ? (unsigned)i % (unsigned)half_c : i % half_c);
    const float2 v = Act<T>::get2(x[i]);
    float a = fmaf(v.x, scale[ch], shift[ch]), b = fmaf(v.y, scale[ch + 1], shift[ch + 1]);
    if (kRelu) {
      a = relu(a);
      b = relu(b);
    }
    y[i] = Act<T>::make2(a, b);
  }
}

template <typename T, bool kRelu>
__global__ void apply_odd_kernel(const T* __restrict__ x, T* __restrict__ y, const float* __restrict__ scale,
                                 const float* __restrict__ shift, long long total, long long c) {
  MG_GRID_STRIDE(i, total) {
    const long long ch = i % c;
    const float v = fmaf(ld(x, i), scale[ch], shift[ch]);
    y[i] = Act<T>::make(kRelu ? relu(v) : v);
  }
}

__global__ void backward_finalize_kernel(const double* __restrict__ partial_a,
                                         const double* __restrict__ partial_b, long long chunks,
                                         long long m, long long c, const float* __restrict__ gamma,
                                         const float* __restrict__ inv_std,
                                         float* __restrict__ dgamma, float* __restrict__ dbeta,
                                         float* __restrict__ k1, float* __restrict__ k2,
                                         float* __restrict__ k3) {
  const long long ch = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (ch < c) {
    double sdy, sdyx;
    warp_fold(partial_a, partial_b, chunks, c, ch, &sdy, &sdyx);
    if ((threadIdx.x & 31) != 0) return;
    dbeta[ch] = (float)sdy;
    dgamma[ch] = (float)sdyx;
    k1[ch] = gamma[ch] * inv_std[ch];
    k2[ch] = (float)(sdy / (double)m);
    k3[ch] = (float)(sdyx / (double)m);
  }
}

template <typename T>
__global__ void backward_apply_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                      const T* __restrict__ relu_y,
                                      const float* __restrict__ mscale,
                                      const float* __restrict__ mshift,
                                      const float* __restrict__ mean,
                                      const float* __restrict__ inv_std,
                                      const float* __restrict__ k1, const float* __restrict__ k2,
                                      const float* __restrict__ k3,
                                      T* __restrict__ dx, long long total,
                                      long long c) {
  MG_GRID_STRIDE(i, total) {
    const long long ch = i % c;
    const float v = ld(x, i);
    const float xhat = (v - mean[ch]) * inv_std[ch];
    const bool has_mask = mscale != nullptr, has_y = !has_mask && relu_y != nullptr;
    const bool on = relu_passes<T>(has_mask, v, has_mask ? mscale[ch] : 0.0f,
                                has_mask ? mshift[ch] : 0.0f, has_y, has_y ? ld(relu_y, i) : 0.0f);
    const float g = on ? ld(dy, i) : 0.0f;
    dx[i] = Act<T>::make(k1[ch] * (g - k2[ch] - xhat * k3[ch]));
  }
}

// Eight channels per thread (c a multiple of 8): one 16-byte access per operand, the same
// arithmetic per element as the pair kernels (so the same bits). (The backward's eight-channel
// twin was slower than its pair kernel, 1.78 vs 1.26 ms a step: five parameter vectors of eight
// channels per thread.)
__device__ inline void unpack8(const uint4& w, float2 (&v)[4]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&w);
#pragma unroll
  for (int k = 0; k < 4; ++k) v[k] = __bfloat1622float2(h[k]);
}

__device__ inline uint4 pack8(const float (&v)[8]) {
  uint4 w;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&w);
#pragma unroll
  for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
  return w;
}

// The first of the eight channels of 16-byte group i of rows of `groups_per_row` groups.
__device__ inline int group_channel(long long i, long long total, int groups_per_row) {
  return 8 * (int)(total <= 0xffffffffLL ? (unsigned)i % (unsigned)groups_per_row
                                        : i % groups_per_row);
}

template <bool kRelu>
__global__ void apply_oct_kernel(const uint4* __restrict__ x, uint4* __restrict__ y,
                                 const float* __restrict__ scale, const float* __restrict__ shift,
                                 long long groups, int groups_per_row) {
  MG_GRID_STRIDE(i, groups) {
    const int ch = group_channel(i, groups, groups_per_row);
    float2 v[4];
    unpack8(x[i], v);
    float out[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      out[2 * k] = fmaf(v[k].x, scale[ch + 2 * k], shift[ch + 2 * k]);
      out[2 * k + 1] = fmaf(v[k].y, scale[ch + 2 * k + 1], shift[ch + 2 * k + 1]);
    }
    if (kRelu) {
#pragma unroll
      for (int k = 0; k < 8; ++k) out[k] = relu(out[k]);
    }
    y[i] = pack8(out);
  }
}

template <typename T>
__global__ void backward_apply_pairs_kernel(
    const typename Act<T>::Pair* __restrict__ x, const typename Act<T>::Pair* __restrict__ dy,
    const typename Act<T>::Pair* __restrict__ relu_y, const float* __restrict__ mscale,
    const float* __restrict__ mshift, const float* __restrict__ mean,
    const float* __restrict__ inv_std,
    const float* __restrict__ k1, const float* __restrict__ k2, const float* __restrict__ k3,
    typename Act<T>::Pair* __restrict__ dx, long long pairs, int half_c) {
  const bool has_mask = mscale != nullptr, has_y = !has_mask && relu_y != nullptr;
  MG_GRID_STRIDE(i, pairs) {
    const int ch = 2 * (int)(pairs <= 0xffffffffLL ? (unsigned)i % (unsigned)half_c : i % half_c);
    const float2 v = Act<T>::get2(x[i]);
    float2 g = Act<T>::get2(dy[i]);
    const float2 r = has_y ? Act<T>::get2(relu_y[i]) : make_float2(0.0f, 0.0f);
    const float ms0 = has_mask ? mscale[ch] : 0.0f, ms1 = has_mask ? mscale[ch + 1] : 0.0f;
    const float mt0 = has_mask ? mshift[ch] : 0.0f, mt1 = has_mask ? mshift[ch + 1] : 0.0f;
    g.x = relu_passes<T>(has_mask, v.x, ms0, mt0, has_y, r.x) ? g.x : 0.0f;
    g.y = relu_passes<T>(has_mask, v.y, ms1, mt1, has_y, r.y) ? g.y : 0.0f;
    const float x0 = (v.x - mean[ch]) * inv_std[ch];
    const float x1 = (v.y - mean[ch + 1]) * inv_std[ch + 1];
    dx[i] = Act<T>::make2(k1[ch] * (g.x - k2[ch] - x0 * k3[ch]),
                                  k1[ch + 1] * (g.y - k2[ch + 1] - x1 * k3[ch + 1]));
  }
}

// bf16 with eight channels per thread (c a multiple of 8): one 16-byte access per operand. The
// per-channel arithmetic is folded into an affine map of (dy passed by the ReLU, x):
// dx = k1·g + (b·x + a) with b = -k1·k3·inv_std and a = k1·(k3·inv_std·mean - k2), computed
// once per thread: with kFixedGroup (the grid's stride a multiple of the row's groups, so a
// thread keeps its eight channels) they stay in registers for the whole loop. (A twin that
// loaded the five parameter vectors per element was slower than the pair kernel: 1.78 vs 1.26
// ms a step.)
struct OctCoefficients {
  float k1[8], b[8], a[8], ms[8], mt[8];
  __device__ void load(int ch, bool has_mask, const float* __restrict__ mscale,
                       const float* __restrict__ mshift, const float* __restrict__ mean,
                       const float* __restrict__ inv_std, const float* __restrict__ k1v,
                       const float* __restrict__ k2v, const float* __restrict__ k3v) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float s = k3v[ch + k] * inv_std[ch + k];
      k1[k] = k1v[ch + k];
      b[k] = -k1[k] * s;
      a[k] = k1[k] * (s * mean[ch + k] - k2v[ch + k]);
      ms[k] = has_mask ? mscale[ch + k] : 0.0f;
      mt[k] = has_mask ? mshift[ch + k] : 0.0f;
    }
  }
};

template <bool kFixedGroup>
__global__ void __launch_bounds__(256, 3) backward_apply_oct_kernel(const uint4* __restrict__ x,
                                          const uint4* __restrict__ dy,
                                          const uint4* __restrict__ relu_y,
                                          const float* __restrict__ mscale,
                                          const float* __restrict__ mshift,
                                          const float* __restrict__ mean,
                                          const float* __restrict__ inv_std,
                                          const float* __restrict__ k1,
                                          const float* __restrict__ k2,
                                          const float* __restrict__ k3, uint4* __restrict__ dx,
                                          long long groups, int groups_per_row) {
  using T = __nv_bfloat16;
  const bool has_mask = mscale != nullptr, has_y = !has_mask && relu_y != nullptr;
  OctCoefficients cf;
  const long long first = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  if (kFixedGroup && first < groups) {
    cf.load(group_channel(first, groups, groups_per_row), has_mask, mscale, mshift, mean,
            inv_std, k1, k2, k3);
  }
  auto one = [&](const uint4& xv, const uint4& gv, const uint4& rv) {
    float2 v[4], g[4], r[4];
    unpack8(xv, v);
    unpack8(gv, g);
    unpack8(rv, r);
    float out[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int e = 2 * k, o = 2 * k + 1;
      const bool on_e = relu_passes<T>(has_mask, v[k].x, cf.ms[e], cf.mt[e], has_y, r[k].x);
      const bool on_o = relu_passes<T>(has_mask, v[k].y, cf.ms[o], cf.mt[o], has_y, r[k].y);
      out[e] = fmaf(cf.k1[e], on_e ? g[k].x : 0.0f, fmaf(cf.b[e], v[k].x, cf.a[e]));
      out[o] = fmaf(cf.k1[o], on_o ? g[k].y : 0.0f, fmaf(cf.b[o], v[k].y, cf.a[o]));
    }
    return pack8(out);
  };
  const uint4 none = make_uint4(0u, 0u, 0u, 0u);
  const long long stride = (long long)blockDim.x * gridDim.x;
  long long i = first;
  if (kFixedGroup) {
    // Two groups in flight per thread (the same channels: the stride keeps them).
    for (; i + stride < groups; i += 2 * stride) {
      const uint4 x0 = x[i], x1 = x[i + stride], g0 = dy[i], g1 = dy[i + stride];
      const uint4 r0 = has_y ? relu_y[i] : none, r1 = has_y ? relu_y[i + stride] : none;
      dx[i] = one(x0, g0, r0);
      dx[i + stride] = one(x1, g1, r1);
    }
  }
  for (; i < groups; i += stride) {
    if (!kFixedGroup) {
      cf.load(group_channel(i, groups, groups_per_row), has_mask, mscale, mshift, mean, inv_std,
              k1, k2, k3);
    }
    dx[i] = one(x[i], dy[i], has_y ? relu_y[i] : none);
  }
}

// fp32 with four channels per thread (c a multiple of 4): one 16-byte access per operand and per
// parameter vector, the same arithmetic per element as the pair kernels (so the same bits).
__device__ inline int quad_index(long long i, long long total, int quads_per_row) {
  return (int)(total <= 0xffffffffLL ? (unsigned)i % (unsigned)quads_per_row : i % quads_per_row);
}

template <bool kRelu>
__global__ void apply_quad_kernel(const float4* __restrict__ x, float4* __restrict__ y,
                                  const float4* __restrict__ scale,
                                  const float4* __restrict__ shift, long long quads,
                                  int quads_per_row) {
  MG_GRID_STRIDE(i, quads) {
    const int q = quad_index(i, quads, quads_per_row);
    const float4 v = x[i], s = scale[q], t = shift[q];
    float4 o = make_float4(fmaf(v.x, s.x, t.x), fmaf(v.y, s.y, t.y), fmaf(v.z, s.z, t.z),
                           fmaf(v.w, s.w, t.w));
    if (kRelu) o = make_float4(relu(o.x), relu(o.y), relu(o.z), relu(o.w));
    y[i] = o;
  }
}

__device__ inline float backward_value(float v, float g, bool on, float mean, float inv_std,
                                       float k1, float k2, float k3) {
  const float xhat = (v - mean) * inv_std;
  const float gr = on ? g : 0.0f;
  return k1 * (gr - k2 - xhat * k3);
}

__global__ void backward_apply_quad_kernel(
    const float4* __restrict__ x, const float4* __restrict__ dy, const float4* __restrict__ relu_y,
    const float4* __restrict__ mscale, const float4* __restrict__ mshift,
    const float4* __restrict__ mean, const float4* __restrict__ inv_std,
    const float4* __restrict__ k1, const float4* __restrict__ k2, const float4* __restrict__ k3,
    float4* __restrict__ dx, long long quads, int quads_per_row) {
  const bool has_mask = mscale != nullptr, has_y = !has_mask && relu_y != nullptr;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  MG_GRID_STRIDE(i, quads) {
    const int q = quad_index(i, quads, quads_per_row);
    const float4 v = x[i], g = dy[i];
    const float4 r = has_y ? relu_y[i] : zero;
    const float4 ms = has_mask ? mscale[q] : zero, mt = has_mask ? mshift[q] : zero;
    const float4 mu = mean[q], is = inv_std[q], a = k1[q], b = k2[q], d = k3[q];
    const bool on_x = relu_passes<float>(has_mask, v.x, ms.x, mt.x, has_y, r.x);
    const bool on_y = relu_passes<float>(has_mask, v.y, ms.y, mt.y, has_y, r.y);
    const bool on_z = relu_passes<float>(has_mask, v.z, ms.z, mt.z, has_y, r.z);
    const bool on_w = relu_passes<float>(has_mask, v.w, ms.w, mt.w, has_y, r.w);
    dx[i] = make_float4(backward_value(v.x, g.x, on_x, mu.x, is.x, a.x, b.x, d.x),
                        backward_value(v.y, g.y, on_y, mu.y, is.y, a.y, b.y, d.y),
                        backward_value(v.z, g.z, on_z, mu.z, is.z, a.z, b.z, d.z),
                        backward_value(v.w, g.w, on_w, mu.w, is.w, a.w, b.w, d.w));
  }
}

// Row chunks of a reduction over m rows: enough blocks to fill the GPU, a function of m only.
// Chunks of 128 rows up to 1024 chunks (with 1024-row chunks the U-Net's deep levels ran a few
// hundred blocks and their statistics took ~30 µs whatever their size).
long long chunks_for(long long m) {
  long long chunks = (m + 127) / 128;
  if (chunks < 1) chunks = 1;
  if (chunks > 1024) chunks = 1024;
  return chunks;
}

template <typename T>
int bn_train(const T* x, T* y, long long m, long long c, float eps, float momentum,
             const float* gamma, const float* beta, float* running_mean, float* running_var,
             float* save_mean, float* save_inv_std, float* scale, float* shift,
             double* partial_a, double* partial_b, int relu, cudaStream_t stream) {
  using P = typename Act<T>::Pair;
  if (m * c == 0) return 0;
  const long long chunks = chunks_for(m);
  const long long rows = (m + chunks - 1) / chunks;
  int status = launch_partial_sums<T, 0>(x, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                         m, c, chunks, rows, partial_a, partial_b, stream);
  if (status != 0) return status;
  stats_finalize_kernel<<<warp_blocks(c), mg::kThreads, 0, stream>>>(
      partial_a, partial_b, chunks, m, c, eps, momentum, gamma, beta, running_mean, running_var,
      save_mean, save_inv_std, scale, shift);
  status = mg::launch_status();
  if (status != 0) return status;
  constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
  if (!kBf16 && c % 4 == 0 && c / 4 <= 2147483647LL && mg::aligned16({x, y, scale, shift})) {
    // Four fp32 channels per 16-byte access.
    const long long quads = m * c / 4;
    const auto* x4 = reinterpret_cast<const float4*>(x);
    auto* y4 = reinterpret_cast<float4*>(y);
    const auto* s4 = reinterpret_cast<const float4*>(scale);
    const auto* t4 = reinterpret_cast<const float4*>(shift);
    if (relu) {
      apply_quad_kernel<true><<<mg::blocks_for(quads), mg::kThreads, 0, stream>>>(
          x4, y4, s4, t4, quads, (int)(c / 4));
    } else {
      apply_quad_kernel<false><<<mg::blocks_for(quads), mg::kThreads, 0, stream>>>(
          x4, y4, s4, t4, quads, (int)(c / 4));
    }
  } else if (kBf16 && c % 8 == 0 && c / 8 <= 2147483647LL) {
    // Eight bf16 channels per 16-byte access.
    const long long groups = m * c / 8;
    const auto* x8 = reinterpret_cast<const uint4*>(x);
    auto* y8 = reinterpret_cast<uint4*>(y);
    if (relu) {
      apply_oct_kernel<true><<<mg::blocks_for(groups), mg::kThreads, 0, stream>>>(
          x8, y8, scale, shift, groups, (int)(c / 8));
    } else {
      apply_oct_kernel<false><<<mg::blocks_for(groups), mg::kThreads, 0, stream>>>(
          x8, y8, scale, shift, groups, (int)(c / 8));
    }
  } else if (c % 2 == 0 && c / 2 <= 2147483647LL) {
    const long long pairs = m * c / 2;
    const auto* x2 = reinterpret_cast<const P*>(x);
    auto* y2 = reinterpret_cast<P*>(y);
    if (relu) {
      apply_kernel<T, true><<<mg::blocks_for(pairs), mg::kThreads, 0, stream>>>(
          x2, y2, scale, shift, pairs, (int)(c / 2));
    } else {
      apply_kernel<T, false><<<mg::blocks_for(pairs), mg::kThreads, 0, stream>>>(
          x2, y2, scale, shift, pairs, (int)(c / 2));
    }
  } else if (relu) {
    apply_odd_kernel<T, true><<<mg::blocks_for(m * c), mg::kThreads, 0, stream>>>(
        x, y, scale, shift, m * c, c);
  } else {
    apply_odd_kernel<T, false><<<mg::blocks_for(m * c), mg::kThreads, 0, stream>>>(
        x, y, scale, shift, m * c, c);
  }
  return mg::launch_status();
}

template <typename T>
int bn_backward(const T* x, const T* dy, const T* relu_y, const float* mscale,
                const float* mshift, const float* gamma, const float* mean,
                const float* inv_std, T* dx, float* dgamma, float* dbeta, long long m,
                long long c, float* k1, float* k2, float* k3, double* partial_a,
                double* partial_b, cudaStream_t stream) {
  using P = typename Act<T>::Pair;
  if (m * c == 0) return 0;
  const long long chunks = chunks_for(m);
  const long long rows = (m + chunks - 1) / chunks;
  int status = launch_partial_sums<T, 1>(x, dy, relu_y, mscale, mshift, mean, inv_std, m, c,
                                         chunks, rows,
                                         partial_a, partial_b, stream);
  if (status != 0) return status;
  backward_finalize_kernel<<<warp_blocks(c), mg::kThreads, 0, stream>>>(
      partial_a, partial_b, chunks, m, c, gamma, inv_std, dgamma, dbeta, k1, k2, k3);
  status = mg::launch_status();
  if (status != 0) return status;
  constexpr bool kF32 = std::is_same<T, float>::value;
  if (kF32 && c % 4 == 0 && c / 4 <= 2147483647LL &&
      mg::aligned16({x, dy, relu_y, mscale, mshift, mean, inv_std, k1, k2, k3, dx})) {
    const long long quads = m * c / 4;
    auto q = [](const void* p) { return reinterpret_cast<const float4*>(p); };
    backward_apply_quad_kernel<<<mg::blocks_for(quads), mg::kThreads, 0, stream>>>(
        q(x), q(dy), q(relu_y), q(mscale), q(mshift), q(mean), q(inv_std), q(k1), q(k2), q(k3),
        reinterpret_cast<float4*>(dx), quads, (int)(c / 4));
  } else if (!kF32 && c % 8 == 0 && c / 8 <= 2147483647LL && mg::aligned16({x, dy, relu_y, dx})) {
    const long long groups = m * c / 8;
    // A bounded grid, so each thread walks many groups with its coefficients in registers.
    const unsigned blocks = std::min(mg::blocks_for(groups), 1024u);
    const int per_row = (int)(c / 8);
    auto q = [](const void* p) { return reinterpret_cast<const uint4*>(p); };
    if (((long long)blocks * mg::kThreads) % per_row == 0) {
      backward_apply_oct_kernel<true><<<blocks, mg::kThreads, 0, stream>>>(
          q(x), q(dy), q(relu_y), mscale, mshift, mean, inv_std, k1, k2, k3,
          reinterpret_cast<uint4*>(dx), groups, per_row);
    } else {
      backward_apply_oct_kernel<false><<<blocks, mg::kThreads, 0, stream>>>(
          q(x), q(dy), q(relu_y), mscale, mshift, mean, inv_std, k1, k2, k3,
          reinterpret_cast<uint4*>(dx), groups, per_row);
    }
  } else if (c % 2 == 0 && c / 2 <= 2147483647LL) {
    const long long pairs = m * c / 2;
    backward_apply_pairs_kernel<T><<<mg::blocks_for(pairs), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const P*>(x), reinterpret_cast<const P*>(dy),
        reinterpret_cast<const P*>(relu_y), mscale, mshift, mean, inv_std, k1, k2, k3,
        reinterpret_cast<P*>(dx), pairs, (int)(c / 2));
  } else {
    backward_apply_kernel<T><<<mg::blocks_for(m * c), mg::kThreads, 0, stream>>>(
        x, dy, relu_y, mscale, mshift, mean, inv_std, k1, k2, k3, dx, m * c, c);
  }
  return mg::launch_status();
}

}  // namespace

// How many fp64 values each of the two partial buffers needs for an [m][c] input.
MG_EXPORT long long mg_bn_nhwc_partials(long long m, long long c) { return chunks_for(m) * c; }

// One pair of launchers per element type (`_bf16`, `_f32`). In the backward, a ReLU fused after
// the norm passes dy where x·mscale + mshift > 0 (the forward's coefficients, when not null), else
// where its output `relu_y` is > 0 (when not null); with neither, everywhere.
#define MG_BN_NHWC_LAUNCHERS(SUFFIX, T)                                                         \
  MG_EXPORT int mg_bn_nhwc_train_##SUFFIX(                                                      \
      const T* x, T* y, long long m, long long c, float eps, float momentum,                    \
      const float* gamma, const float* beta, float* running_mean, float* running_var,           \
      float* save_mean, float* save_inv_std, float* scale, float* shift, double* partial_a,     \
      double* partial_b, int relu, cudaStream_t stream) {                                       \
    return bn_train<T>(x, y, m, c, eps, momentum, gamma, beta, running_mean, running_var,       \
                       save_mean, save_inv_std, scale, shift, partial_a, partial_b, relu,       \
                       stream);                                                                 \
  }                                                                                             \
  MG_EXPORT int mg_bn_nhwc_backward_##SUFFIX(                                                   \
      const T* x, const T* dy, const T* relu_y, const float* mscale, const float* mshift,       \
      const float* gamma, const float* mean,                                                    \
      const float* inv_std, T* dx, float* dgamma, float* dbeta, long long m, long long c,       \
      float* k1, float* k2, float* k3, double* partial_a, double* partial_b,                    \
      cudaStream_t stream) {                                                                    \
    return bn_backward<T>(x, dy, relu_y, mscale, mshift, gamma, mean, inv_std, dx, dgamma,     \
                          dbeta, m, c, k1, k2,                                                  \
                          k3, partial_a, partial_b, stream);                                    \
  }

MG_BN_NHWC_LAUNCHERS(bf16, __nv_bfloat16)
MG_BN_NHWC_LAUNCHERS(f32, float)
