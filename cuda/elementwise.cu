// Elementwise arithmetic, per-channel broadcasting, deterministic reductions, fills and dropout.
#include "common.cuh"

namespace {

__global__ void binary_kernel(const float* __restrict__ a, const float* __restrict__ b,
                              float* __restrict__ y, long long n, int op) {
  MG_GRID_STRIDE(i, n) {
    const float x = a[i], z = b[i];
    y[i] = op == 0 ? x + z : (op == 1 ? x - z : x * z);
  }
}

__global__ void affine_kernel(const float* __restrict__ x, float* __restrict__ y, long long n,
                              float alpha, float beta) {
  MG_GRID_STRIDE(i, n) { y[i] = mg::add_rn(mg::mul_rn(alpha, x[i]), beta); }
}

__global__ void channel_bias_kernel(const float* __restrict__ x, const float* __restrict__ bias,
                                    float* __restrict__ y, long long n, long long c,
                                    long long inner) {
  MG_GRID_STRIDE(i, n) { y[i] = x[i] + bias[(i / inner) % c]; }
}

// Pass 1 of sum_per_channel: block (ch, s) sums segment s of channel ch's `outer * inner`
// elements into partials[ch * segs + s].
__global__ void channel_sum_partials(const float* __restrict__ x, double* __restrict__ partials,
                                     long long outer, long long c, long long inner,
                                     long long seg_len) {
  const long long ch = blockIdx.x;
  const long long segs = gridDim.y;
  const long long total = outer * inner;
  const long long begin = (long long)blockIdx.y * seg_len;
  long long end = begin + seg_len;
  if (end > total) end = total;
  double acc = 0.0;
  for (long long j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const long long n = j / inner, i = j - n * inner;
    acc += (double)x[(n * c + ch) * inner + i];
  }
  const double s = mg::block_sum(acc);
  if (threadIdx.x == 0) partials[ch * segs + blockIdx.y] = s;
}

// Pass 2: one thread per channel adds its segments in order.
__global__ void channel_sum_finish(const double* __restrict__ partials, float* __restrict__ out,
                                   long long c, long long segs) {
  MG_GRID_STRIDE(ch, c) {
    double s = 0.0;
    for (long long k = 0; k < segs; ++k) s += partials[ch * segs + k];
    out[ch] = (float)s;
  }
}

__global__ void sum_partials_kernel(const float* __restrict__ x, long long n,
                                    double* __restrict__ partials) {
  double acc = 0.0;
  MG_GRID_STRIDE(i, n) { acc += (double)x[i]; }
  const double s = mg::block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

__global__ void sum_finish_kernel(const double* __restrict__ partials, long long count,
                                  float* __restrict__ out) {
  const double s = mg::sum_partials(partials, count);
  if (threadIdx.x == 0) out[0] = (float)s;
}

__global__ void fill_kernel(float* __restrict__ y, long long n, float value) {
  MG_GRID_STRIDE(i, n) { y[i] = value; }
}

__global__ void fill_from_kernel(const float* __restrict__ value, float* __restrict__ y,
                                 long long n) {
  const float v = value[0];
  MG_GRID_STRIDE(i, n) { y[i] = v; }
}

__device__ inline unsigned long long splitmix64(unsigned long long z) {
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Inverted dropout; the uniform of element i is the top 24 bits of
// splitmix64(splitmix64(seed) ^ i) scaled to [0, 1) (exact in f32), the same function as the CPU.
__global__ void dropout_kernel(const float* __restrict__ x, float* __restrict__ y,
                               float* __restrict__ mask, long long n, float p, float keep,
                               unsigned long long seed) {
  const unsigned long long key = splitmix64(seed);
  MG_GRID_STRIDE(i, n) {
    const unsigned long long h = splitmix64(key ^ (unsigned long long)i);
    const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
    const float m = u < p ? 0.0f : keep;
    mask[i] = m;
    y[i] = x[i] * m;
  }
}

}  // namespace

MG_EXPORT int mg_binary(const float* a, const float* b, float* y, long long n, int op,
                        cudaStream_t stream) {
  binary_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(a, b, y, n, op);
  return mg::launch_status();
}

MG_EXPORT int mg_affine(const float* x, float* y, long long n, float alpha, float beta,
                        cudaStream_t stream) {
  affine_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(x, y, n, alpha, beta);
  return mg::launch_status();
}

MG_EXPORT int mg_add_channel_bias(const float* x, const float* bias, float* y, long long n,
                                  long long c, long long inner, cudaStream_t stream) {
  channel_bias_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(x, bias, y, n, c, inner);
  return mg::launch_status();
}

// Segments per channel of sum_per_channel (a function of the shape alone).
MG_EXPORT long long mg_channel_sum_segments(long long outer, long long inner) {
  long long segs = (outer * inner + 16LL * mg::kThreads - 1) / (16LL * mg::kThreads);
  if (segs < 1) segs = 1;
  if (segs > 64) segs = 64;
  return segs;
}

// `partials` holds c * mg_channel_sum_segments(outer, inner) doubles.
MG_EXPORT int mg_sum_per_channel(const float* x, float* out, double* partials, long long outer,
                                 long long c, long long inner, cudaStream_t stream) {
  const long long segs = mg_channel_sum_segments(outer, inner);
  const long long seg_len = (outer * inner + segs - 1) / segs;
  dim3 grid((unsigned int)c, (unsigned int)segs);
  channel_sum_partials<<<grid, mg::kThreads, 0, stream>>>(x, partials, outer, c, inner, seg_len);
  int status = mg::launch_status();
  if (status != 0) return status;
  channel_sum_finish<<<mg::blocks_for(c), mg::kThreads, 0, stream>>>(partials, out, c, segs);
  return mg::launch_status();
}

// Blocks (= partial doubles) of a two-pass reduction over n elements.
MG_EXPORT long long mg_reduce_blocks(long long n) { return (long long)mg::reduce_blocks(n); }

// `partials` holds mg_reduce_blocks(n) doubles.
MG_EXPORT int mg_sum_all(const float* x, float* out, double* partials, long long n,
                         cudaStream_t stream) {
  const unsigned int blocks = mg::reduce_blocks(n);
  sum_partials_kernel<<<blocks, mg::kThreads, 0, stream>>>(x, n, partials);
  int status = mg::launch_status();
  if (status != 0) return status;
  sum_finish_kernel<<<1, mg::kThreads, 0, stream>>>(partials, (long long)blocks, out);
  return mg::launch_status();
}

MG_EXPORT int mg_fill(float* y, long long n, float value, cudaStream_t stream) {
  fill_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(y, n, value);
  return mg::launch_status();
}

MG_EXPORT int mg_fill_from(const float* value, float* y, long long n, cudaStream_t stream) {
  fill_from_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(value, y, n);
  return mg::launch_status();
}

MG_EXPORT int mg_dropout(const float* x, float* y, float* mask, long long n, float p, float keep,
                         unsigned long long seed, cudaStream_t stream) {
  dropout_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(x, y, mask, n, p, keep, seed);
  return mg::launch_status();
}
