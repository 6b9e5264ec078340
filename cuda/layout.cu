// Layout and precision conversions around the convolutions of the bf16 and NHWC modes:
// NCHW fp32 -> NHWC (bf16 or fp32) before cuDNN, NHWC -> NCHW fp32 after it, with the channel
// bias of the convolution added on the way back. Each is a tiled transpose of one image's
// [C][HW] matrix into [HW][C] (or back) through shared memory, so both sides are read and written
// in coalesced rows. A filter [K][C][R][S] is the same transform with N = K (KRSC for cuDNN);
// filters and few-channel images, whose tiles would be mostly empty, take an elementwise gather.
#include <cuda_bf16.h>

#include "common.cuh"

namespace {

constexpr int kTile = 32;
constexpr int kRows = 8;

template <typename T>
__device__ inline T from_float(float v);
template <>
__device__ inline float from_float<float>(float v) {
  return v;
}
template <>
__device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// x: [n][c][hw] fp32 -> y: [n][hw][c] of T. Grid (ceil(hw/32), ceil(c/32), n), block (32, 8).
template <typename T>
__global__ void nchw_to_nhwc_kernel(const float* __restrict__ x, T* __restrict__ y, long long c,
                                    long long hw) {
  __shared__ float tile[kTile][kTile + 1];
  const long long n = blockIdx.z;
  const long long p0 = (long long)blockIdx.x * kTile, c0 = (long long)blockIdx.y * kTile;
  const float* xs = x + n * c * hw;
  T* ys = y + n * c * hw;
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const long long ch = c0 + r, p = p0 + threadIdx.x;
    if (ch < c && p < hw) tile[r][threadIdx.x] = xs[ch * hw + p];
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const long long p = p0 + r, ch = c0 + threadIdx.x;
    if (ch < c && p < hw) ys[p * c + ch] = from_float<T>(tile[threadIdx.x][r]);
  }
}

// y: [n][hw][c] of T -> x: [n][c][hw] fp32, plus bias[c] when given.
template <typename T>
__global__ void nhwc_to_nchw_kernel(const T* __restrict__ y, float* __restrict__ x,
                                    const float* __restrict__ bias, long long c, long long hw) {
  __shared__ float tile[kTile][kTile + 1];
  const long long n = blockIdx.z;
  const long long p0 = (long long)blockIdx.x * kTile, c0 = (long long)blockIdx.y * kTile;
  const T* ys = y + n * c * hw;
  float* xs = x + n * c * hw;
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const long long p = p0 + r, ch = c0 + threadIdx.x;
    if (ch < c && p < hw) tile[r][threadIdx.x] = to_float(ys[p * c + ch]);
  }
  __syncthreads();
  for (int r = threadIdx.y; r < kTile; r += kRows) {
    const long long ch = c0 + r, p = p0 + threadIdx.x;
    if (ch < c && p < hw) {
      const float b = bias != nullptr ? bias[ch] : 0.0f;
      xs[ch * hw + p] = tile[threadIdx.x][r] + b;
    }
  }
}

// The same conversions as elementwise gathers, for shapes whose tiles would be mostly empty:
// filters (hw = kh·kw, 9 for 3×3) and images of few channels (the network's input, its logits).
// One thread per output element, consecutive threads writing consecutive elements; 32-bit index
// arithmetic where the sizes allow (64-bit division made them compute-bound). The NHWC side has
// `cp` ≥ c channels per pixel: channels c..cp are zero padding (written as zeros, skipped when
// read), so that a few-channel operand meets the tensor cores' alignment.
template <typename I, typename T>
__global__ void nchw_to_nhwc_gather_kernel(const float* __restrict__ x, T* __restrict__ y, I c,
                                           I cp, I hw, I total) {
  for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < total;
       o += (I)blockDim.x * gridDim.x) {  // o = (n·hw + p)·cp + ch
    const I ch = o % cp, np = o / cp;
    const I p = np % hw, n = np / hw;
    y[o] = from_float<T>(ch < c ? x[(n * c + ch) * hw + p] : 0.0f);
  }
}

template <typename I, typename T>
__global__ void nhwc_to_nchw_gather_kernel(const T* __restrict__ y, float* __restrict__ x,
                                           const float* __restrict__ bias, I c, I cp, I hw,
                                           I total) {
  for (I o = (I)blockIdx.x * blockDim.x + threadIdx.x; o < total;
       o += (I)blockDim.x * gridDim.x) {  // o = (n·c + ch)·hw + p
    const I p = o % hw, nc = o / hw;
    const I ch = nc % c, n = nc / c;
    const float b = bias != nullptr ? bias[ch] : 0.0f;
    x[o] = to_float(y[(n * hw + p) * cp + ch]) + b;
  }
}

// The gathers with 32-bit indices when every index fits.
template <typename T>
int gather_to_nhwc(const float* x, T* y, long long n, long long c, long long cp, long long hw,
                   cudaStream_t stream) {
  const long long total = n * cp * hw;
  if (total == 0) return 0;
  if (total <= 0x7fffffffLL) {
    nchw_to_nhwc_gather_kernel<unsigned, T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(
        x, y, (unsigned)c, (unsigned)cp, (unsigned)hw, (unsigned)total);
  } else {
    nchw_to_nhwc_gather_kernel<long long, T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(
        x, y, c, cp, hw, total);
  }
  return mg::launch_status();
}

template <typename T>
int gather_to_nchw(const T* y, float* x, const float* bias, long long n, long long c,
                   long long cp, long long hw, cudaStream_t stream) {
  const long long total = n * c * hw;
  if (total == 0) return 0;
  if (n * cp * hw <= 0x7fffffffLL) {
    nhwc_to_nchw_gather_kernel<unsigned, T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(
        y, x, bias, (unsigned)c, (unsigned)cp, (unsigned)hw, (unsigned)total);
  } else {
    nhwc_to_nchw_gather_kernel<long long, T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(
        y, x, bias, c, cp, hw, total);
  }
  return mg::launch_status();
}

// Whether the tiled transpose would leave most of its 32×32 tiles empty.
inline bool use_gather(long long c, long long hw) { return c < kTile || hw < kTile; }

// The grid of one conversion, or a launch error when a dimension does not fit.
inline bool grid_for(long long n, long long c, long long hw, dim3* grid) {
  const long long gx = (hw + kTile - 1) / kTile, gy = (c + kTile - 1) / kTile;
  if (n < 1 || n > 65535 || gy > 65535 || gx > 2147483647LL) return false;
  *grid = dim3((unsigned)gx, (unsigned)gy, (unsigned)n);
  return true;
}

// NHWC with `cp` ≥ c channels per pixel (padding, zero when written) on the NHWC side; the tiled
// transpose serves the unpadded conversions of large enough shapes, the gather the rest.
template <typename T>
int to_nhwc(const float* x, T* y, long long n, long long c, long long cp, long long hw,
            cudaStream_t stream) {
  if (n * cp * hw == 0) return 0;
  if (cp != c || use_gather(c, hw)) return gather_to_nhwc(x, y, n, c, cp, hw, stream);
  dim3 grid;
  if (!grid_for(n, c, hw, &grid)) return (int)cudaErrorInvalidConfiguration;
  nchw_to_nhwc_kernel<T><<<grid, dim3(kTile, kRows), 0, stream>>>(x, y, c, hw);
  return mg::launch_status();
}

template <typename T>
int to_nchw(const T* y, float* x, const float* bias, long long n, long long c, long long cp,
            long long hw, cudaStream_t stream) {
  if (n * c * hw == 0) return 0;
  if (cp != c || use_gather(c, hw)) return gather_to_nchw(y, x, bias, n, c, cp, hw, stream);
  dim3 grid;
  if (!grid_for(n, c, hw, &grid)) return (int)cudaErrorInvalidConfiguration;
  nhwc_to_nchw_kernel<T><<<grid, dim3(kTile, kRows), 0, stream>>>(y, x, bias, c, hw);
  return mg::launch_status();
}

}  // namespace

// `cp`: channels per NHWC pixel (≥ c; c..cp are zero padding, written as zeros and skipped when
// read).
MG_EXPORT int mg_nchw_to_nhwc_bf16(const float* x, __nv_bfloat16* y, long long n, long long c,
                                   long long cp, long long hw, cudaStream_t stream) {
  return to_nhwc(x, y, n, c, cp, hw, stream);
}

MG_EXPORT int mg_nchw_to_nhwc_f32(const float* x, float* y, long long n, long long c,
                                  long long cp, long long hw, cudaStream_t stream) {
  return to_nhwc(x, y, n, c, cp, hw, stream);
}

MG_EXPORT int mg_nhwc_bf16_to_nchw(const __nv_bfloat16* y, float* x, const float* bias,
                                   long long n, long long c, long long cp, long long hw,
                                   cudaStream_t stream) {
  return to_nchw(y, x, bias, n, c, cp, hw, stream);
}

MG_EXPORT int mg_nhwc_f32_to_nchw(const float* y, float* x, const float* bias, long long n,
                                  long long c, long long cp, long long hw, cudaStream_t stream) {
  return to_nchw(y, x, bias, n, c, cp, hw, stream);
}
