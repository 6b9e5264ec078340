// Layout and precision conversions around the convolutions of the bf16 and NHWC modes:
// NCHW fp32 -> NHWC (bf16 or fp32) before cuDNN, NHWC -> NCHW fp32 after it, with the channel
// bias of the convolution added on the way back. Each is a tiled transpose of one image's
// [C][HW] matrix into [HW][C] (or back) through shared memory, so both sides are read and written
// in coalesced rows. A filter [K][C][R][S] is the same transform with N = K (KRSC for cuDNN).
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

// The grid of one conversion, or a launch error when a dimension does not fit.
inline bool grid_for(long long n, long long c, long long hw, dim3* grid) {
  const long long gx = (hw + kTile - 1) / kTile, gy = (c + kTile - 1) / kTile;
  if (n < 1 || n > 65535 || gy > 65535 || gx > 2147483647LL) return false;
  *grid = dim3((unsigned)gx, (unsigned)gy, (unsigned)n);
  return true;
}

template <typename T>
int to_nhwc(const float* x, T* y, long long n, long long c, long long hw, cudaStream_t stream) {
  if (n * c * hw == 0) return 0;
  dim3 grid;
  if (!grid_for(n, c, hw, &grid)) return (int)cudaErrorInvalidConfiguration;
  nchw_to_nhwc_kernel<T><<<grid, dim3(kTile, kRows), 0, stream>>>(x, y, c, hw);
  return mg::launch_status();
}

template <typename T>
int to_nchw(const T* y, float* x, const float* bias, long long n, long long c, long long hw,
            cudaStream_t stream) {
  if (n * c * hw == 0) return 0;
  dim3 grid;
  if (!grid_for(n, c, hw, &grid)) return (int)cudaErrorInvalidConfiguration;
  nhwc_to_nchw_kernel<T><<<grid, dim3(kTile, kRows), 0, stream>>>(y, x, bias, c, hw);
  return mg::launch_status();
}

}  // namespace

MG_EXPORT int mg_nchw_to_nhwc_bf16(const float* x, __nv_bfloat16* y, long long n, long long c,
                                   long long hw, cudaStream_t stream) {
  return to_nhwc(x, y, n, c, hw, stream);
}

MG_EXPORT int mg_nchw_to_nhwc_f32(const float* x, float* y, long long n, long long c,
                                  long long hw, cudaStream_t stream) {
  return to_nhwc(x, y, n, c, hw, stream);
}

MG_EXPORT int mg_nhwc_bf16_to_nchw(const __nv_bfloat16* y, float* x, const float* bias,
                                   long long n, long long c, long long hw, cudaStream_t stream) {
  return to_nchw(y, x, bias, n, c, hw, stream);
}

MG_EXPORT int mg_nhwc_f32_to_nchw(const float* y, float* x, const float* bias, long long n,
                                  long long c, long long hw, cudaStream_t stream) {
  return to_nchw(y, x, bias, n, c, hw, stream);
}
