// Pointwise (1×1, stride 1, no padding) convolutions with few output channels (K ≤ 8) on NHWC
// activations of element type T (bf16 or fp32, act.cuh): the segmentation head, whose K is the
// class count. cuDNN runs these on FMA kernels that were 5–10× slower than memory speed on the
// H200 (the U-Net's 64 → 3 head at 256²: 404 µs forward in TF32, 766 µs in bf16). Here every
// pass is one read of the big operand:
//
//   forward:  y[p][k] = bias[k] + Σ_c x[p][c] · w[k][c]       (p = n·HW + hw; y NHWC of T)
//   data:     dx[p][c] = Σ_k dy[n][k][hw] · w[k][c]           (dy NCHW fp32; dx NHWC of T)
//   filter:   dw[k][c] = Σ_p dy[n][k][hw] · x[p][c]           (dw fp32)
//
// fp32 math throughout (T widened on load, dx rounded once). The filter gradient sums fixed
// chunks of pixels into fp32 partials (each thread's pixels in order, then the block's lanes in
// order) and folds the chunks in fp64 in order, so every result is bit-reproducible.
#include "act.cuh"
#include "common.cuh"

namespace {

using mg::Act;

constexpr int kMaxK = 8;        // output channels handled (the launchers refuse more)
constexpr int kTile = 256;      // pixels per block tile (one per thread in the forward)
constexpr int kChunkC = 32;     // channels staged per pass in the forward
constexpr int kMaxCPerThread = 4;  // channel slots per thread in the filter gradient

// Elements of T in one 16-byte access.
template <typename T>
constexpr int kVec = mg::Vec16<T>::kN;

// Widens the kVec<T> values at `p` (16-byte aligned) to fp32.
template <typename T>
__device__ inline void load_vec(const T* p, float (&v)[kVec<T>]) {
  mg::Vec16<T>::get(*reinterpret_cast<const uint4*>(p), v);
}

// y = x·wᵀ + bias, one pixel per thread, x staged through shared memory 32 channels at a time
// (coalesced loads, 16 bytes a thread when kVector: c a multiple of kVec<T>; rows padded to 33
// words, so the stores and the per-pixel reads are conflict-free).
template <typename T, int K, bool kVector>
__global__ void pointwise_forward_kernel(const T* __restrict__ x, const float* __restrict__ w,
                                         const float* __restrict__ bias, T* __restrict__ y,
                                         long long pixels, int c, int k) {
  __shared__ float tile[kTile][kChunkC + 1];
  __shared__ float ws[K][kChunkC];
  const long long p0 = (long long)blockIdx.x * kTile;
  const int t = threadIdx.x;
  float acc[K];
#pragma unroll
  for (int j = 0; j < K; ++j) acc[j] = 0.0f;
  for (int c0 = 0; c0 < c; c0 += kChunkC) {
    const int width = min(kChunkC, c - c0);
    __syncthreads();
    if (kVector) {
      // width is a multiple of V (c is), so a vector is wholly inside or outside the chunk.
      constexpr int V = kVec<T>, kPerRow = kChunkC / V;
#pragma unroll
      for (int e = t; e < kTile * kPerRow; e += kTile) {
        const int px = e / kPerRow, ch = (e % kPerRow) * V;
        const long long p = p0 + px;
        float v[V];
        if (p < pixels && ch < width) {
          load_vec(x + p * c + c0 + ch, v);
        } else {
#pragma unroll
          for (int i = 0; i < V; ++i) v[i] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < V; ++i) tile[px][ch + i] = v[i];
      }
    } else {
      for (int e = t; e < kTile * kChunkC; e += kTile) {
        const int px = e / kChunkC, ch = e % kChunkC;
        const long long p = p0 + px;
        tile[px][ch] = (p < pixels && ch < width) ? Act<T>::get(x[p * c + c0 + ch]) : 0.0f;
      }
    }
    for (int e = t; e < K * kChunkC; e += kTile) {
      const int j = e / kChunkC, ch = e % kChunkC;
      ws[j][ch] = (j < k && ch < width) ? w[(long long)j * c + c0 + ch] : 0.0f;
    }
    __syncthreads();
    for (int ch = 0; ch < width; ++ch) {
      const float v = tile[t][ch];
#pragma unroll
      for (int j = 0; j < K; ++j) acc[j] = fmaf(v, ws[j][ch], acc[j]);
    }
  }
  const long long p = p0 + t;
  if (p >= pixels) return;
  // The pixel's k outputs are contiguous (NHWC), the block's pixels one contiguous run.
  T* out = y + p * k;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    if (j < k) out[j] = Act<T>::make(acc[j] + (bias != nullptr ? bias[j] : 0.0f));
  }
}

// The lanes of a block over channels: `span` consecutive channels per lane (all of them when
// c ≤ kTile), kTile / span pixel lanes; a thread's channels are ch0, ch0 + span, ...
struct Lanes {
  int span, count, lane, ch0;
  __device__ Lanes(int c) {
    span = min(c, kTile);
    count = kTile / span;
    lane = threadIdx.x / span;
    ch0 = threadIdx.x % span;
  }
  __device__ bool active() const { return lane < count; }
};

// Stages dy[·][0..K)[pixels p0 .. p0 + kTile) (NCHW fp32) into `g[j][i]`, one pixel per
// thread (consecutive threads read consecutive pixels of each plane), zeros past the end.
template <int K>
__device__ inline void stage_dy(const float* __restrict__ dy, float (*g)[kTile], long long p0,
                                long long pixels, long long hw, int k) {
  const int i = threadIdx.x;
  const long long p = p0 + i;
  if (p < pixels) {
    const float* at = dy + (p / hw) * k * hw + p % hw;
#pragma unroll
    for (int j = 0; j < K; ++j) g[j][i] = j < k ? at[j * hw] : 0.0f;
  } else {
#pragma unroll
    for (int j = 0; j < K; ++j) g[j][i] = 0.0f;
  }
}

// dx = dy·w, kTile pixels per block, written row by row (a lane's channels of one pixel).
template <typename T, int K>
__global__ void pointwise_backward_data_kernel(const float* __restrict__ dy,
                                               const float* __restrict__ w, T* __restrict__ dx,
                                               long long pixels, long long hw, int c, int k) {
  __shared__ float g[K][kTile];
  const long long p0 = (long long)blockIdx.x * kTile;
  stage_dy<K>(dy, g, p0, pixels, hw, k);
  __syncthreads();
  const Lanes lanes(c);
  if (!lanes.active()) return;
  const int rows = (int)min((long long)kTile, pixels - p0);
  for (int ch = lanes.ch0; ch < c; ch += lanes.span) {
    float wk[K];
#pragma unroll
    for (int j = 0; j < K; ++j) wk[j] = j < k ? w[(long long)j * c + ch] : 0.0f;
    for (int i = lanes.lane; i < rows; i += lanes.count) {
      float s = 0.0f;
#pragma unroll
      for (int j = 0; j < K; ++j) s = fmaf(g[j][i], wk[j], s);
      dx[(p0 + i) * c + ch] = Act<T>::make(s);
    }
  }
}

// The filter-gradient kernels' last step for one channel slot: every thread stages its sums
// `acc` in `red`, and each first-lane thread (its index `t` < span) adds the `count` pixel lanes'
// sums of its channel `ch` in lane order (lane l's thread is l·span + t) into out[j·c + ch].
// Every thread of the block must call it.
template <int K>
__device__ inline void fold_lanes(float (*red)[K + 1], const float (&acc)[K], bool first_lane,
                                  int span, int count, int ch, int c, int k, float* out) {
  __syncthreads();
#pragma unroll
  for (int j = 0; j < K; ++j) red[threadIdx.x][j] = acc[j];
  __syncthreads();
  if (first_lane && ch < c) {
    for (int j = 0; j < k; ++j) {
      float sum = 0.0f;
      for (int l = 0; l < count; ++l) sum += red[l * span + threadIdx.x][j];
      out[(long long)j * c + ch] = sum;
    }
  }
}

// partial[chunk][j][ch] = Σ over the chunk's pixels of dy[j]·x[ch]; a chunk is `tiles` tiles.
template <typename T, int K>
__global__ void pointwise_filter_partials_kernel(const T* __restrict__ x,
                                                 const float* __restrict__ dy,
                                                 float* __restrict__ partial, long long pixels,
                                                 long long hw, int c, int k, int tiles) {
  __shared__ float g[K][kTile];
  __shared__ float red[kTile][K + 1];
  const Lanes lanes(c);
  float acc[kMaxCPerThread][K];
#pragma unroll
  for (int s = 0; s < kMaxCPerThread; ++s)
#pragma unroll
    for (int j = 0; j < K; ++j) acc[s][j] = 0.0f;
  for (int tile = 0; tile < tiles; ++tile) {
    const long long p0 = ((long long)blockIdx.x * tiles + tile) * kTile;
    if (p0 >= pixels) break;
    __syncthreads();
    stage_dy<K>(dy, g, p0, pixels, hw, k);
    __syncthreads();
    if (!lanes.active()) continue;
    const int rows = (int)min((long long)kTile, pixels - p0);
    for (int i = lanes.lane; i < rows; i += lanes.count) {
      const T* row = x + (p0 + i) * c;
#pragma unroll
      for (int s = 0; s < kMaxCPerThread; ++s) {
        const int ch = lanes.ch0 + s * lanes.span;
        if (ch < c) {
          const float v = Act<T>::get(row[ch]);
#pragma unroll
          for (int j = 0; j < K; ++j) acc[s][j] = fmaf(g[j][i], v, acc[s][j]);
        }
      }
    }
  }
  // Fold the pixel lanes in lane order, one channel slot at a time.
  float* out = partial + (long long)blockIdx.x * kMaxK * c;
#pragma unroll
  for (int s = 0; s < kMaxCPerThread; ++s) {
    fold_lanes<K>(red, acc[s], lanes.lane == 0, lanes.span, lanes.count,
                  lanes.ch0 + s * lanes.span, c, k, out);
  }
}

// The same partials with kVec<T> consecutive channels per thread (c a multiple of it): one
// 16-byte load per pixel, c / V threads per pixel row and kTile / (c / V) pixel lanes, two
// pixels in flight per thread.
template <typename T, int K>
__global__ void pointwise_filter_partials_vec_kernel(const T* __restrict__ x,
                                                     const float* __restrict__ dy,
                                                     float* __restrict__ partial,
                                                     long long pixels, long long hw, int c, int k,
                                                     int tiles) {
  constexpr int V = kVec<T>;
  __shared__ float g[K][kTile];
  __shared__ float red[kTile][K + 1];
  const int per_row = c / V;
  const int lanes = kTile / per_row, lane = threadIdx.x / per_row;
  const int ch0 = (threadIdx.x % per_row) * V;
  const bool active = lane < lanes;
  float acc[V][K];
#pragma unroll
  for (int v = 0; v < V; ++v)
#pragma unroll
    for (int j = 0; j < K; ++j) acc[v][j] = 0.0f;
  for (int tile = 0; tile < tiles; ++tile) {
    const long long p0 = ((long long)blockIdx.x * tiles + tile) * kTile;
    if (p0 >= pixels) break;
    __syncthreads();
    stage_dy<K>(dy, g, p0, pixels, hw, k);
    __syncthreads();
    if (!active) continue;
    const int rows = (int)min((long long)kTile, pixels - p0);
    int i = lane;
    for (; i + lanes < rows; i += 2 * lanes) {
      float a[V], b[V];
      load_vec(x + (p0 + i) * c + ch0, a);
      load_vec(x + (p0 + i + lanes) * c + ch0, b);
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const float ga = g[j][i], gb = g[j][i + lanes];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v][j] = fmaf(gb, b[v], fmaf(ga, a[v], acc[v][j]));
      }
    }
    if (i < rows) {
      float a[V];
      load_vec(x + (p0 + i) * c + ch0, a);
#pragma unroll
      for (int j = 0; j < K; ++j) {
        const float ga = g[j][i];
#pragma unroll
        for (int v = 0; v < V; ++v) acc[v][j] = fmaf(ga, a[v], acc[v][j]);
      }
    }
  }
  float* out = partial + (long long)blockIdx.x * kMaxK * c;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    fold_lanes<K>(red, acc[v], active && lane == 0, per_row, lanes, ch0 + v, c, k, out);
  }
}

// dw[j][ch] = Σ_chunk partial[chunk][j][ch] in fp64, one warp per output: lanes stride the
// chunks, a fixed shuffle tree combines them (the same order every run).
__global__ void pointwise_filter_fold_kernel(const float* __restrict__ partial, float* __restrict__ dw,
                                             int chunks, int c, int k) {
  const long long out = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (out >= (long long)k * c) return;
  // Output j·c + ch of chunk b sits at b·kMaxK·c + j·c + ch.
  const double s = mg::warp_strided_sum(partial + out, chunks, (long long)kMaxK * c);
  if ((threadIdx.x & 31) == 0) dw[out] = (float)s;
}

// Tiles per filter-gradient chunk: about 4 blocks per SM of an H100/H200 for big images, a
// function of the size only.
int filter_tiles(long long pixels) {
  const long long tiles = (pixels + kTile - 1) / kTile;
  long long per = (tiles + 527) / 528;
  return (int)(per < 1 ? 1 : per);
}

bool valid(long long pixels, long long hw, int c, int k) {
  return pixels > 0 && hw > 0 && pixels % hw == 0 && c > 0 && k > 0 && k <= kMaxK &&
         c <= kTile * kMaxCPerThread && (pixels + kTile - 1) / kTile <= 0x7fffffffLL;
}

// Calls `launch.template operator()<K>()` with the kernels' unrolled width K ≥ k (2, 4 or 8; the
// channels k..K are zeros): three instantiations instead of eight keep the binaries small.
template <typename F>
int with_k(int k, F launch) {
  if (k <= 2) return launch.template operator()<2>();
  if (k <= 4) return launch.template operator()<4>();
  return launch.template operator()<8>();
}

template <typename T>
int forward(const T* x, const float* w, const float* bias, T* y, long long pixels, int c, int k,
            cudaStream_t stream) {
  if (!valid(pixels, 1, c, k)) return (int)cudaErrorInvalidValue;
  const unsigned blocks = (unsigned)((pixels + kTile - 1) / kTile);
  const bool vector = c % kVec<T> == 0 && mg::aligned16({x});
  return with_k(k, [&]<int K>() {
    if (vector) {
      pointwise_forward_kernel<T, K, true>
          <<<blocks, kTile, 0, stream>>>(x, w, bias, y, pixels, c, k);
    } else {
      pointwise_forward_kernel<T, K, false>
          <<<blocks, kTile, 0, stream>>>(x, w, bias, y, pixels, c, k);
    }
    return mg::launch_status();
  });
}

template <typename T>
int backward_data(const float* dy, const float* w, T* dx, long long pixels, long long hw, int c,
                  int k, cudaStream_t stream) {
  if (!valid(pixels, hw, c, k)) return (int)cudaErrorInvalidValue;
  const unsigned blocks = (unsigned)((pixels + kTile - 1) / kTile);
  return with_k(k, [&]<int K>() {
    pointwise_backward_data_kernel<T, K><<<blocks, kTile, 0, stream>>>(dy, w, dx, pixels, hw, c, k);
    return mg::launch_status();
  });
}

long long filter_chunks(long long pixels) {
  const long long tiles = (pixels + kTile - 1) / kTile;
  const int per = filter_tiles(pixels);
  return (tiles + per - 1) / per;
}

template <typename T>
int backward_filter(const T* x, const float* dy, float* dw, float* partial, long long pixels,
                    long long hw, int c, int k, cudaStream_t stream) {
  if (!valid(pixels, hw, c, k)) return (int)cudaErrorInvalidValue;
  const long long chunks = filter_chunks(pixels);
  // 16-byte loads when c is a multiple of the vector and a pixel row fits the block's threads.
  const bool vector =
      c % kVec<T> == 0 && c / kVec<T> <= kTile && mg::aligned16({x});
  const int status = with_k(k, [&]<int K>() {
    if (vector) {
      pointwise_filter_partials_vec_kernel<T, K><<<(unsigned)chunks, kTile, 0, stream>>>(
          x, dy, partial, pixels, hw, c, k, filter_tiles(pixels));
    } else {
      pointwise_filter_partials_kernel<T, K><<<(unsigned)chunks, kTile, 0, stream>>>(
          x, dy, partial, pixels, hw, c, k, filter_tiles(pixels));
    }
    return mg::launch_status();
  });
  if (status != 0) return status;
  const long long warps = (long long)k * c;
  pointwise_filter_fold_kernel<<<(unsigned)((warps * 32 + mg::kThreads - 1) / mg::kThreads),
                                 mg::kThreads, 0, stream>>>(partial, dw, (int)chunks, c, k);
  return mg::launch_status();
}

}  // namespace

// Whether the kernels take the problem: k ≤ 8 output channels, c ≤ 1024 input channels.
MG_EXPORT int mg_pointwise_supported(long long c, long long k) {
  return c > 0 && k > 0 && k <= kMaxK && c <= kTile * kMaxCPerThread;
}

// fp32 values the filter gradient's partial buffer needs for `pixels` pixels of c channels.
MG_EXPORT long long mg_pointwise_filter_partials(long long pixels, long long c) {
  return filter_chunks(pixels) * kMaxK * c;
}

#define MG_POINTWISE_LAUNCHERS(SUFFIX, T)                                                      \
  MG_EXPORT int mg_pointwise_forward_##SUFFIX(const void* x, const float* w, const float* bias, \
                                              void* y, long long pixels, int c, int k,          \
                                              cudaStream_t stream) {                            \
    return forward<T>(static_cast<const T*>(x), w, bias, static_cast<T*>(y), pixels, c, k,      \
                      stream);                                                                  \
  }                                                                                             \
  MG_EXPORT int mg_pointwise_backward_data_##SUFFIX(const float* dy, const float* w, void* dx,  \
                                                    long long pixels, long long hw, int c,      \
                                                    int k, cudaStream_t stream) {               \
    return backward_data<T>(dy, w, static_cast<T*>(dx), pixels, hw, c, k, stream);              \
  }                                                                                             \
  MG_EXPORT int mg_pointwise_backward_filter_##SUFFIX(                                          \
      const void* x, const float* dy, float* dw, float* partial, long long pixels, long long hw, \
      int c, int k, cudaStream_t stream) {                                                      \
    return backward_filter<T>(static_cast<const T*>(x), dy, dw, partial, pixels, hw, c, k,      \
                              stream);                                                          \
  }

MG_POINTWISE_LAUNCHERS(bf16, __nv_bfloat16)
MG_POINTWISE_LAUNCHERS(f32, float)
