// Rank-2 matrix product C[m,n] = op(A)·op(B) with transpose flags: a tiled shared-memory SGEMM
// (64×64 tiles of C, 16-deep slices of K, 4×4 outputs per thread, fp32 FMA accumulation).
#include "common.cuh"

namespace {

constexpr int kTile = 64;   // rows and columns of C per block
constexpr int kDepth = 16;  // K per shared-memory slice
constexpr int kPer = 4;     // rows and columns of C per thread (16×16 threads)

// op(A)(i, k): A is [m, k] row-major, or [k, m] when transposed.
__device__ inline float load_a(const float* a, long long i, long long k, long long m,
                               long long kk, int ta) {
  if (i >= m || k >= kk) return 0.0f;
  return ta ? a[k * m + i] : a[i * kk + k];
}

// op(B)(k, j): B is [k, n] row-major, or [n, k] when transposed.
__device__ inline float load_b(const float* b, long long k, long long j, long long kk,
                               long long n, int tb) {
  if (k >= kk || j >= n) return 0.0f;
  return tb ? b[j * kk + k] : b[k * n + j];
}

__global__ void __launch_bounds__(256) sgemm_kernel(const float* __restrict__ a,
                                                    const float* __restrict__ b,
                                                    float* __restrict__ c, long long m,
                                                    long long n, long long k, int ta, int tb) {
  __shared__ float as[kDepth][kTile + 1];  // as[kk][row]
  __shared__ float bs[kDepth][kTile + 1];  // bs[kk][col]
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const long long row0 = (long long)blockIdx.y * kTile;
  const long long col0 = (long long)blockIdx.x * kTile;
  float acc[kPer][kPer];
#pragma unroll
  for (int r = 0; r < kPer; ++r)
#pragma unroll
    for (int q = 0; q < kPer; ++q) acc[r][q] = 0.0f;

  for (long long k0 = 0; k0 < k; k0 += kDepth) {
    // 64×16 elements of each operand, 4 per thread. The index order follows the operand's
    // memory order so that neighbouring threads read neighbouring addresses.
    for (int e = threadIdx.x; e < kTile * kDepth; e += 256) {
      int r, d;
      if (ta) {  // A stored [k, m]: consecutive threads walk rows of C (contiguous in memory)
        r = e % kTile;
        d = e / kTile;
      } else {  // A stored [m, k]: consecutive threads walk k
        d = e % kDepth;
        r = e / kDepth;
      }
      as[d][r] = load_a(a, row0 + r, k0 + d, m, k, ta);
      int col, d2;
      if (tb) {  // B stored [n, k]
        d2 = e % kDepth;
        col = e / kDepth;
      } else {  // B stored [k, n]
        col = e % kTile;
        d2 = e / kTile;
      }
      bs[d2][col] = load_b(b, k0 + d2, col0 + col, k, n, tb);
    }
    __syncthreads();
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      float av[kPer], bv[kPer];
#pragma unroll
      for (int r = 0; r < kPer; ++r) av[r] = as[d][ty + 16 * r];
#pragma unroll
      for (int q = 0; q < kPer; ++q) bv[q] = bs[d][tx + 16 * q];
#pragma unroll
      for (int r = 0; r < kPer; ++r)
#pragma unroll
        for (int q = 0; q < kPer; ++q) acc[r][q] = fmaf(av[r], bv[q], acc[r][q]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < kPer; ++r) {
    long long i = row0 + ty + 16 * r;
    if (i >= m) continue;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      long long j = col0 + tx + 16 * q;
      if (j < n) c[i * n + j] = acc[r][q];
    }
  }
}

}  // namespace

MG_EXPORT int mg_matmul(const float* a, const float* b, float* c, long long m, long long n,
                        long long k, int transpose_a, int transpose_b, cudaStream_t stream) {
  if (m == 0 || n == 0) return 0;
  const long long gx = (n + kTile - 1) / kTile, gy = (m + kTile - 1) / kTile;
  if (gx > 2147483647LL || gy > 65535LL) return (int)cudaErrorInvalidConfiguration;
  dim3 grid((unsigned int)gx, (unsigned int)gy);
  sgemm_kernel<<<grid, 256, 0, stream>>>(a, b, c, m, n, k, transpose_a, transpose_b);
  return mg::launch_status();
}
