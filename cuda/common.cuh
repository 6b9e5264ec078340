// Shared by every kernel file: the launcher convention and grid helpers.
//
// Each kernel has an `extern "C"` launcher `mg_<name>(..., cudaStream_t stream)` that queues the
// kernel on the caller's stream and returns the launch status (a cudaError_t as int, 0 = success).
// Launchers never synchronise; sizes are `long long` element counts.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include <initializer_list>

#define MG_EXPORT extern "C"

namespace mg {

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements (capped; kernels loop over the rest).
inline unsigned int blocks_for(long long n) {
  long long b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  if (b > 65535LL * 8) b = 65535LL * 8;
  return (unsigned int)b;
}

inline int launch_status() { return (int)cudaGetLastError(); }

}  // namespace mg

#define MG_GRID_STRIDE(i, n) \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)

// ---------------------------------------------------------------------------------------------
// Deterministic reductions. Every block has kThreads threads; partial sums are combined by a
// fixed shuffle tree inside each warp and a fixed order across warps, and grids are sized from
// the problem size alone, so a reduction gives the same bits on every run (no float atomics).
// ---------------------------------------------------------------------------------------------
namespace mg {

// At most this many blocks write partials of a two-pass reduction.
constexpr long long kMaxReduceBlocks = 1024;

inline unsigned int reduce_blocks(long long n) {
  long long b = (n + kThreads - 1) / kThreads;
  if (b < 1) b = 1;
  if (b > kMaxReduceBlocks) b = kMaxReduceBlocks;
  return (unsigned int)b;
}

// Sum over the block; every thread must call it, the result is valid in thread 0. Reusable
// several times in one kernel (it ends with a barrier).
__device__ inline double block_sum(double v) {
  __shared__ double warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  double r = 0.0;
  if (warp == 0) {
    r = lane < (int)(blockDim.x >> 5) ? warp_sums[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(0xffffffffu, r, o);
  }
  __syncthreads();
  return r;
}

// Integer sum over the block (exact); same contract as block_sum.
__device__ inline unsigned long long block_sum_u64(unsigned long long v) {
  __shared__ unsigned long long warp_sums_u[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums_u[warp] = v;
  __syncthreads();
  unsigned long long r = 0;
  if (warp == 0) {
    r = lane < (int)(blockDim.x >> 5) ? warp_sums_u[lane] : 0ULL;
    for (int o = 16; o > 0; o >>= 1) r += __shfl_down_sync(0xffffffffu, r, o);
  }
  __syncthreads();
  return r;
}

// Minimum over the block; same contract as block_sum.
__device__ inline unsigned long long block_min_u64(unsigned long long v) {
  __shared__ unsigned long long warp_mins[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) {
    unsigned long long other = __shfl_down_sync(0xffffffffu, v, o);
    v = other < v ? other : v;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_mins[warp] = v;
  __syncthreads();
  unsigned long long r = ~0ULL;
  if (warp == 0) {
    r = lane < (int)(blockDim.x >> 5) ? warp_mins[lane] : ~0ULL;
    for (int o = 16; o > 0; o >>= 1) {
      unsigned long long other = __shfl_down_sync(0xffffffffu, r, o);
      r = other < r ? other : r;
    }
  }
  __syncthreads();
  return r;
}

// Sum of `count` partials by one block, in a fixed order; valid in thread 0.
__device__ inline double sum_partials(const double* partials, long long count) {
  double acc = 0.0;
  for (long long i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  return block_sum(acc);
}

// Σ_b p[b · stride] for b < count by one warp: lanes stride the terms, a fixed shuffle tree
// combines them (the same order every run); valid in lane 0. Every lane of the warp must call it.
template <typename T>
__device__ inline double warp_strided_sum(const T* p, long long count, long long stride) {
  double s = 0.0;
  for (long long b = threadIdx.x & 31; b < count; b += 32) s += (double)p[b * stride];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
  return s;
}

// Whether every pointer (null ones included) allows 16-byte accesses.
inline bool aligned16(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

// Whether a validated label `v` (an integer-valued float) is the ignored one.
__device__ inline bool is_ignored(float v, int has_ignore, long long ignore_index) {
  return has_ignore && (long long)v == ignore_index;
}

// Float arithmetic without contraction into FMA, where a kernel must round exactly like the
// CPU reference (Rust never fuses).
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline float sub_rn(float a, float b) { return __fsub_rn(a, b); }

}  // namespace mg
