// 3×3 convolutions (stride 1, dilation 1, padding ≤ 2) of an NCHW fp32 image with few channels
// (C ≤ 4: the network's first layer, RGB) into an NHWC activation of element type T (bf16 or
// fp32, act.cuh) with K ∈ {4, 8, 12, 16, 32, 64, 128} output channels, and their filter
// gradients from an fp32 NHWC output gradient. cuDNN runs these problems on FMA kernels (TF32, H100: 321 µs forward and 272 µs
// filter gradient for 3 → 64 at 256², batch 16), and its NHWC operands had to be converted from
// the loader's NCHW image. fp32 math; the filter gradient sums fixed tiles into fp32 partials and
// folds them in fp64 in a fixed order (bit-reproducible).
//
// Forward: a block computes 64 output columns of kFwdRows output rows, all K channels: the
// C × (kFwdRows + 2) input rows it needs (zero-padded) and the filters (tap-major,
// [c·9 + r·3 + s][k]) in shared memory; a thread owns 4 consecutive channels of PX = max(1, K/16)
// consecutive columns, slides a window of PX + 2 inputs along each input row and reads 4 weights
// per tap with one 16-byte load.
//
// Filter gradient: a block owns 64 columns of kRowsPerBlock output rows of one image; per output
// row it stages the gradient tile (64 × K) and the C × 3 input rows in shared memory; a thread
// owns 4 output channels of one (input channel, kernel row) and sums dy[px][4k] · x[px + s] for
// the three kernel columns, sliding the input window.
#include "act.cuh"
#include "common.cuh"

namespace {

using mg::Act;

constexpr int kCols = 64;         // output columns per block
constexpr int kMaxC = 4;          // input channels handled
constexpr int kMaxK = 128;        // output channels handled
constexpr int kRowsPerBlock = 16; // output rows per filter-gradient block
constexpr int kFwdRows = 4;       // output rows per forward block

struct Geometry {
  int c, h, w, k, ho, wo, ph, pw;
};

// Stores four fp32 values as T at `p` (16 bytes for fp32, 8 for bf16; aligned since k % 4 == 0).
__device__ inline void store4(float* p, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(p) = make_float4(a, b, c, d);
}
__device__ inline void store4(__nv_bfloat16* p, float a, float b, float c, float d) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 v;
  v.x = *reinterpret_cast<unsigned*>(&lo);
  v.y = *reinterpret_cast<unsigned*>(&hi);
  *reinterpret_cast<uint2*>(p) = v;
}

// Reads four consecutive fp32 values (16-byte aligned: k % 4 == 0).
__device__ inline float4 load4(const float* p) { return *reinterpret_cast<const float4*>(p); }

template <typename T, int PX>
__global__ void few_channel_forward_kernel(const float* __restrict__ x,
                                           const float* __restrict__ wt,
                                           const float* __restrict__ bias, T* __restrict__ y,
                                           Geometry g) {
  __shared__ float in_s[kMaxC][kFwdRows + 2][kCols + 2];
  __shared__ __align__(16) float w_s[kMaxC * 9 * kMaxK];
  const int n = blockIdx.z, ho0 = blockIdx.y * kFwdRows, w0 = blockIdx.x * kCols;
  const int t = threadIdx.x;
  const int taps = g.c * 9;
  // Filters [k][c][r][s] → [c·9 + r·3 + s][k] (consecutive threads store consecutive words).
  for (int e = t; e < taps * g.k; e += blockDim.x) {
    const int tap = e / g.k, kk = e % g.k;
    w_s[e] = wt[kk * taps + tap];
  }
  const int in_rows = kFwdRows + 2;
  for (int e = t; e < g.c * in_rows * (kCols + 2); e += blockDim.x) {
    const int col = e % (kCols + 2), cr = e / (kCols + 2);
    const int r = cr % in_rows, c = cr / in_rows;
    const int hi = ho0 + r - g.ph, wi = w0 + col - g.pw;
    in_s[c][r][col] = (hi >= 0 && hi < g.h && wi >= 0 && wi < g.w)
                          ? __ldg(x + (((long long)n * g.c + c) * g.h + hi) * g.w + wi)
                          : 0.0f;
  }
  __syncthreads();
  const int groups = g.k / 4;
  const int kg = t % groups, lane = t / groups;
  const int px0 = lane * PX;
  if (px0 >= kCols) return;
  float4 b = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  if (bias != nullptr) b = make_float4(bias[4 * kg], bias[4 * kg + 1], bias[4 * kg + 2], bias[4 * kg + 3]);
  for (int dr = 0; dr < kFwdRows && ho0 + dr < g.ho; ++dr) {
    float acc[PX][4];
#pragma unroll
    for (int i = 0; i < PX; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
    for (int c = 0; c < g.c; ++c) {
#pragma unroll
      for (int r = 0; r < 3; ++r) {
        float win[PX + 2];
#pragma unroll
        for (int i = 0; i < PX + 2; ++i) win[i] = in_s[c][dr + r][px0 + i];
#pragma unroll
        for (int s = 0; s < 3; ++s) {
          const float4 wv =
              *reinterpret_cast<const float4*>(&w_s[((c * 3 + r) * 3 + s) * g.k + 4 * kg]);
#pragma unroll
          for (int i = 0; i < PX; ++i) {
            acc[i][0] = fmaf(win[i + s], wv.x, acc[i][0]);
            acc[i][1] = fmaf(win[i + s], wv.y, acc[i][1]);
            acc[i][2] = fmaf(win[i + s], wv.z, acc[i][2]);
            acc[i][3] = fmaf(win[i + s], wv.w, acc[i][3]);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < PX; ++i) {
      const int wcol = w0 + px0 + i;
      if (wcol < g.wo) {
        T* out = y + (((long long)n * g.ho + ho0 + dr) * g.wo + wcol) * g.k + 4 * kg;
        store4(out, acc[i][0] + b.x, acc[i][1] + b.y, acc[i][2] + b.z, acc[i][3] + b.w);
      }
    }
  }
}

// partial[block][k][c][r][s] over the block's 64 columns × kRowsPerBlock rows. Threads:
// (k / 4 channel groups) × (c · 3 kernel rows). Each output row's gradient tile (64 × k, read
// once with 16-byte loads) and the c × 3 input rows it meets are staged in shared memory.
// (Splitting each thread's columns over four lanes was slower on the H100: 343 vs 256 µs.)
template <typename T>
__global__ void few_channel_filter_partials_kernel(const float* __restrict__ x,
                                                   const T* __restrict__ dy,
                                                   float* __restrict__ partial, Geometry g,
                                                   int col_tiles, int row_tiles) {
  __shared__ __align__(16) float dy_s[kCols * kMaxK];
  __shared__ float in_s[kMaxC][3][kCols + 2];
  const int groups = g.k / 4;
  const int kg = threadIdx.x % groups, cr = threadIdx.x / groups;
  const long long block = blockIdx.x;
  const int n = (int)(block / ((long long)row_tiles * col_tiles));
  const int rem = (int)(block % ((long long)row_tiles * col_tiles));
  const int ho0 = (rem / col_tiles) * kRowsPerBlock, w0 = (rem % col_tiles) * kCols;
  const int cols = min(kCols, g.wo - w0);
  const int c = cr / 3, r = cr % 3;
  float acc[3][4];
#pragma unroll
  for (int s = 0; s < 3; ++s) acc[s][0] = acc[s][1] = acc[s][2] = acc[s][3] = 0.0f;
  for (int ho = ho0; ho < min(ho0 + kRowsPerBlock, g.ho); ++ho) {
    __syncthreads();
    const T* grad = dy + (((long long)n * g.ho + ho) * g.wo + w0) * g.k;
    for (int e = threadIdx.x; e < cols * groups; e += blockDim.x) {
      const float4 v = load4(grad + 4 * (long long)e);
      *reinterpret_cast<float4*>(&dy_s[4 * e]) = v;
    }
    for (int e = threadIdx.x; e < g.c * 3 * (kCols + 2); e += blockDim.x) {
      const int col = e % (kCols + 2), q = e / (kCols + 2);
      const int rr = q % 3, cc = q / 3;
      const int hi = ho + rr - g.ph, wi = w0 + col - g.pw;
      in_s[cc][rr][col] = (hi >= 0 && hi < g.h && wi >= 0 && wi < g.w)
                              ? __ldg(x + (((long long)n * g.c + cc) * g.h + hi) * g.w + wi)
                              : 0.0f;
    }
    __syncthreads();
    float a = in_s[c][r][0], b = in_s[c][r][1];
#pragma unroll 4
    for (int px = 0; px < cols; ++px) {
      const float d = in_s[c][r][px + 2];
      const float4 gv = *reinterpret_cast<const float4*>(&dy_s[px * g.k + 4 * kg]);
      acc[0][0] = fmaf(gv.x, a, acc[0][0]);
      acc[0][1] = fmaf(gv.y, a, acc[0][1]);
      acc[0][2] = fmaf(gv.z, a, acc[0][2]);
      acc[0][3] = fmaf(gv.w, a, acc[0][3]);
      acc[1][0] = fmaf(gv.x, b, acc[1][0]);
      acc[1][1] = fmaf(gv.y, b, acc[1][1]);
      acc[1][2] = fmaf(gv.z, b, acc[1][2]);
      acc[1][3] = fmaf(gv.w, b, acc[1][3]);
      acc[2][0] = fmaf(gv.x, d, acc[2][0]);
      acc[2][1] = fmaf(gv.y, d, acc[2][1]);
      acc[2][2] = fmaf(gv.z, d, acc[2][2]);
      acc[2][3] = fmaf(gv.w, d, acc[2][3]);
      a = b;
      b = d;
    }
  }
  // [k][c][r][s] of this block.
  float* out = partial + block * g.k * g.c * 9;
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int s = 0; s < 3; ++s) out[((4 * kg + j) * g.c + c) * 9 + r * 3 + s] = acc[s][j];
}

// dw[i] = Σ_block partial[block][i] in fp64, one warp per output, a fixed shuffle tree.
__global__ void few_channel_fold_kernel(const float* __restrict__ partial, float* __restrict__ dw,
                                        long long blocks, long long outputs) {
  const long long out = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (out >= outputs) return;
  const double s = mg::warp_strided_sum(partial + out, blocks, outputs);
  if ((threadIdx.x & 31) == 0) dw[out] = (float)s;
}

bool supported_k(long long k) {
  return k > 0 && k % 4 == 0 && (k <= 16 || k == 32 || k == 64 || k == 128);
}

bool valid(const Geometry& g) {
  return g.c >= 1 && g.c <= kMaxC && supported_k(g.k) && g.ph >= 0 && g.ph <= 2 && g.pw >= 0 &&
         g.pw <= 2 && g.ho == g.h + 2 * g.ph - 2 && g.wo == g.w + 2 * g.pw - 2 && g.ho > 0 &&
         g.wo > 0;
}

Geometry geometry(long long c, long long h, long long w, long long k, long long ph,
                  long long pw) {
  return Geometry{(int)c, (int)h, (int)w, (int)k, (int)(h + 2 * ph - 2), (int)(w + 2 * pw - 2),
                  (int)ph, (int)pw};
}

bool fits(long long n, long long c, long long h, long long w, long long k) {
  return n > 0 && n <= 65535 && c > 0 && c <= kMaxC && h > 0 && w > 0 && h <= 65535 && w <= (1 << 24) &&
         k > 0 && k <= kMaxK;
}

template <typename T>
int forward(const float* x, const float* wt, const float* bias, T* y, long long n, long long c,
            long long h, long long w, long long k, long long ph, long long pw,
            cudaStream_t stream) {
  if (!fits(n, c, h, w, k)) return (int)cudaErrorInvalidValue;
  const Geometry g = geometry(c, h, w, k, ph, pw);
  if (!valid(g)) return (int)cudaErrorInvalidValue;
  const dim3 grid((unsigned)((g.wo + kCols - 1) / kCols), (unsigned)((g.ho + kFwdRows - 1) / kFwdRows),
                  (unsigned)n);
  const int px = k <= 16 ? 1 : (int)(k / 16);
  const int threads = (int)(k / 4) * (kCols / px);
  const unsigned block = (unsigned)min(threads, 1024);
  switch (px) {
    case 1: few_channel_forward_kernel<T, 1><<<grid, block, 0, stream>>>(x, wt, bias, y, g); break;
    case 2: few_channel_forward_kernel<T, 2><<<grid, block, 0, stream>>>(x, wt, bias, y, g); break;
    case 4: few_channel_forward_kernel<T, 4><<<grid, block, 0, stream>>>(x, wt, bias, y, g); break;
    case 8: few_channel_forward_kernel<T, 8><<<grid, block, 0, stream>>>(x, wt, bias, y, g); break;
    default: return (int)cudaErrorInvalidValue;
  }
  return mg::launch_status();
}

long long filter_blocks(long long n, long long ho, long long wo) {
  return n * ((ho + kRowsPerBlock - 1) / kRowsPerBlock) * ((wo + kCols - 1) / kCols);
}

template <typename T>
int backward_filter(const float* x, const T* dy, float* dw, float* partial, long long n,
                    long long c, long long h, long long w, long long k, long long ph,
                    long long pw, cudaStream_t stream) {
  if (!fits(n, c, h, w, k)) return (int)cudaErrorInvalidValue;
  const Geometry g = geometry(c, h, w, k, ph, pw);
  if (!valid(g)) return (int)cudaErrorInvalidValue;
  const int col_tiles = (g.wo + kCols - 1) / kCols;
  const int row_tiles = (g.ho + kRowsPerBlock - 1) / kRowsPerBlock;
  const long long blocks = filter_blocks(n, g.ho, g.wo);
  if (blocks > 0x7fffffffLL) return (int)cudaErrorInvalidValue;
  const int threads = (int)(k / 4) * (int)c * 3;
  few_channel_filter_partials_kernel<T><<<(unsigned)blocks, threads, 0, stream>>>(
      x, dy, partial, g, col_tiles, row_tiles);
  const int status = mg::launch_status();
  if (status != 0) return status;
  const long long outputs = k * c * 9;
  few_channel_fold_kernel<<<(unsigned)((outputs * 32 + mg::kThreads - 1) / mg::kThreads),
                            mg::kThreads, 0, stream>>>(partial, dw, blocks, outputs);
  return mg::launch_status();
}

}  // namespace

// Whether the kernels take a 3×3, stride-1, dilation-1 convolution of an [n][c][h][w] image into
// k channels with padding (ph, pw): the channel counts, the padding and the grid's limits.
MG_EXPORT int mg_few_channel_conv_supported(long long n, long long c, long long h, long long w,
                                            long long k, long long ph, long long pw) {
  return fits(n, c, h, w, k) && ph >= 0 && ph <= 2 && pw >= 0 && pw <= 2 &&
         valid(geometry(c, h, w, k, ph, pw));
}

// fp32 values the filter gradient's partial buffer needs.
MG_EXPORT long long mg_few_channel_filter_partials(long long n, long long c, long long h,
                                                   long long w, long long k, long long ph,
                                                   long long pw) {
  const long long ho = h + 2 * ph - 2, wo = w + 2 * pw - 2;
  if (ho <= 0 || wo <= 0) return 0;
  return filter_blocks(n, ho, wo) * k * c * 9;
}

#define MG_FEW_CHANNEL_FORWARD(SUFFIX, T)                                                       \
  MG_EXPORT int mg_few_channel_conv_forward_##SUFFIX(                                           \
      const float* x, const float* w, const float* bias, void* y, long long n, long long c,      \
      long long h, long long wd, long long k, long long ph, long long pw, cudaStream_t stream) { \
    return forward<T>(x, w, bias, static_cast<T*>(y), n, c, h, wd, k, ph, pw, stream);          \
  }

MG_FEW_CHANNEL_FORWARD(bf16, __nv_bfloat16)
MG_FEW_CHANNEL_FORWARD(f32, float)

// The filter gradient from an fp32 NHWC output gradient only: in bf16 cuDNN's tensor-core
// kernels on the input padded to 8 channels were faster (≈ 100 µs against 260 on the H100).
MG_EXPORT int mg_few_channel_conv_backward_filter_f32(const float* x, const float* dy, float* dw,
                                                      float* partial, long long n, long long c,
                                                      long long h, long long wd, long long k,
                                                      long long ph, long long pw,
                                                      cudaStream_t stream) {
  return backward_filter<float>(x, dy, dw, partial, n, c, h, wd, k, ph, pw, stream);
}
