// Pixel-wise losses fused with their gradients: (class- or pixel-) weighted cross-entropy and
// soft multi-class Dice, plus the 2-D-Gaussian pixel-weight map. Labels were validated on the
// host (every label is a class in 0..C or the ignored one). Loss sums are deterministic: per-block
// partials in f64 combined in a fixed order (no float atomics); only the integer centroid sums of
// the Gaussian map use atomics, which are exact.
#include "common.cuh"

#include <math.h>

namespace {

// log Σ exp over the `c` channels at stride `inner`, as the CPU's log_sum_exp (max first).
__device__ inline float pixel_lse(const float* z, long long c, long long inner) {
  float m = -INFINITY;
  for (long long ch = 0; ch < c; ++ch) m = fmaxf(m, z[ch * inner]);
  if (!isfinite(m)) return m;
  float s = 0.0f;
  for (long long ch = 0; ch < c; ++ch) s += expf(z[ch * inner] - m);
  return m + logf(s);
}

// Weighted cross-entropy of every pixel: partial Σ w·(lse − z_k) per block, and the gradient
// w·inv_total·(softmax − onehot). The weight is class_w[k], else pixel_w[pixel], else 1.
__global__ void ce_kernel(const float* __restrict__ logits, const float* __restrict__ labels,
                          const float* __restrict__ class_w, const float* __restrict__ pixel_w,
                          float* __restrict__ grad, double* __restrict__ partials,
                          long long outer, long long c, long long inner, int has_ignore,
                          long long ignore_index, float inv_total) {
  double acc = 0.0;
  MG_GRID_STRIDE(pix, outer * inner) {
    const long long n = pix / inner, i = pix - n * inner;
    const float* z = logits + n * c * inner + i;
    float* g = grad + n * c * inner + i;
    const float v = labels[pix];
    if (mg::is_ignored(v, has_ignore, ignore_index)) {
      for (long long ch = 0; ch < c; ++ch) g[ch * inner] = 0.0f;
      continue;
    }
    const long long k = (long long)v;
    const float lse = pixel_lse(z, c, inner);
    const float w = class_w ? class_w[k] : (pixel_w ? pixel_w[pix] : 1.0f);
    acc += (double)w * (double)(lse - z[k * inner]);
    const float scale = mg::mul_rn(w, inv_total);
    for (long long ch = 0; ch < c; ++ch) {
      const float onehot = ch == k ? 1.0f : 0.0f;
      g[ch * inner] = mg::mul_rn(scale, expf(z[ch * inner] - lse) - onehot);
    }
  }
  const double s = mg::block_sum(acc);
  if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

// loss = Σ partials / total.
__global__ void ce_finish(const double* __restrict__ partials, long long count, double total,
                          float* __restrict__ loss) {
  const double s = mg::sum_partials(partials, count);
  if (threadIdx.x == 0) loss[0] = (float)(s / total);
}

// Checks the pixel weights (first index of a negative or non-finite one, over all pixels) and
// sums those of the counted pixels: partial sums and minima per block.
__global__ void pixel_weight_check(const float* __restrict__ labels, const float* __restrict__ w,
                                   long long n, int has_ignore, long long ignore_index,
                                   double* __restrict__ sums, unsigned long long* __restrict__ bad) {
  double acc = 0.0;
  unsigned long long first = ~0ULL;
  MG_GRID_STRIDE(i, n) {
    const float v = w[i];
    if (!isfinite(v) || v < 0.0f) {
      if ((unsigned long long)i < first) first = (unsigned long long)i;
    } else if (!mg::is_ignored(labels[i], has_ignore, ignore_index)) {
      acc += (double)v;
    }
  }
  const double s = mg::block_sum(acc);
  const unsigned long long b = mg::block_min_u64(first);
  if (threadIdx.x == 0) {
    sums[blockIdx.x] = s;
    bad[blockIdx.x] = b;
  }
}

// out[0] = total weight (f64), out[1] = first bad index (u64, all ones when none).
__global__ void pixel_weight_finish(const double* __restrict__ sums,
                                    const unsigned long long* __restrict__ bad, long long count,
                                    double* __restrict__ out_total,
                                    unsigned long long* __restrict__ out_bad) {
  const double s = mg::sum_partials(sums, count);
  unsigned long long first = ~0ULL;
  for (long long i = threadIdx.x; i < count; i += blockDim.x) first = bad[i] < first ? bad[i] : first;
  const unsigned long long b = mg::block_min_u64(first);
  if (threadIdx.x == 0) {
    out_total[0] = s;
    out_bad[0] = b;
  }
}

// Soft Dice, pass 1: the log-sum-exp of every pixel (0 for ignored pixels).
__global__ void dice_lse_kernel(const float* __restrict__ logits, const float* __restrict__ labels,
                                float* __restrict__ lse, long long outer, long long c,
                                long long inner, int has_ignore, long long ignore_index) {
  MG_GRID_STRIDE(pix, outer * inner) {
    const long long n = pix / inner, i = pix - n * inner;
    lse[pix] = mg::is_ignored(labels[pix], has_ignore, ignore_index)
                   ? 0.0f
                   : pixel_lse(logits + n * c * inner + i, c, inner);
  }
}

// Pass 2: block (ch, s) sums, over segment s of the pixels, p_ch (psum), p_ch where the label is
// ch (intersection) and the count of label ch; partials[(q * c + ch) * segs + s] for q = 0, 1, 2.
__global__ void dice_sums_kernel(const float* __restrict__ logits, const float* __restrict__ labels,
                                 const float* __restrict__ lse, double* __restrict__ partials,
                                 long long outer, long long c, long long inner, int has_ignore,
                                 long long ignore_index, long long seg_len) {
  const long long ch = blockIdx.x;
  const long long segs = gridDim.y;
  const long long total = outer * inner;
  const long long begin = (long long)blockIdx.y * seg_len;
  long long end = begin + seg_len;
  if (end > total) end = total;
  double ps = 0.0, in = 0.0, ts = 0.0;
  for (long long pix = begin + threadIdx.x; pix < end; pix += blockDim.x) {
    const float v = labels[pix];
    if (mg::is_ignored(v, has_ignore, ignore_index)) continue;
    const long long n = pix / inner, i = pix - n * inner;
    const float p = expf(logits[(n * c + ch) * inner + i] - lse[pix]);
    ps += (double)p;
    if ((long long)v == ch) {
      in += (double)p;
      ts += 1.0;
    }
  }
  const double a = mg::block_sum(ps);
  const double b = mg::block_sum(in);
  const double t = mg::block_sum(ts);
  if (threadIdx.x == 0) {
    partials[(0 * c + ch) * segs + blockIdx.y] = a;
    partials[(1 * c + ch) * segs + blockIdx.y] = b;
    partials[(2 * c + ch) * segs + blockIdx.y] = t;
  }
}

// Pass 3 (one block): per class I_c, denom_c = Σp + Σt + ε, dice_c; stats = [I | denom | dice];
// then loss = 1 − Σ_c dice_c / C, summed in class order.
__global__ void dice_finish_kernel(const double* __restrict__ partials, long long c, long long segs,
                                   double eps, double* __restrict__ stats,
                                   float* __restrict__ loss) {
  for (long long ch = threadIdx.x; ch < c; ch += blockDim.x) {
    double ps = 0.0, in = 0.0, ts = 0.0;
    for (long long s = 0; s < segs; ++s) {
      ps += partials[(0 * c + ch) * segs + s];
      in += partials[(1 * c + ch) * segs + s];
      ts += partials[(2 * c + ch) * segs + s];
    }
    const double denom = ps + ts + eps;
    stats[ch] = in;
    stats[c + ch] = denom;
    stats[2 * c + ch] = (2.0 * in + eps) / denom;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    double sum = 0.0;
    for (long long ch = 0; ch < c; ++ch) sum += stats[2 * c + ch];
    loss[0] = (float)(1.0 - sum / (double)c);
  }
}

// Pass 4: dL/dz through the softmax, per pixel.
__global__ void dice_backward_kernel(const float* __restrict__ logits,
                                     const float* __restrict__ labels,
                                     const float* __restrict__ lse, const double* __restrict__ stats,
                                     float* __restrict__ grad, long long outer, long long c,
                                     long long inner, int has_ignore, long long ignore_index,
                                     double eps) {
  const double* inter = stats;
  const double* denom = stats + c;
  MG_GRID_STRIDE(pix, outer * inner) {
    const long long n = pix / inner, i = pix - n * inner;
    const float* z = logits + n * c * inner + i;
    float* g = grad + n * c * inner + i;
    const float v = labels[pix];
    if (mg::is_ignored(v, has_ignore, ignore_index)) {
      for (long long ch = 0; ch < c; ++ch) g[ch * inner] = 0.0f;
      continue;
    }
    const long long k = (long long)v;
    const float l = lse[pix];
    double dot = 0.0;
    for (long long ch = 0; ch < c; ++ch) {
      const double t = ch == k ? 1.0 : 0.0;
      const double gp = -(2.0 * t * denom[ch] - (2.0 * inter[ch] + eps)) /
                        (denom[ch] * denom[ch] * (double)c);
      dot += gp * (double)expf(z[ch * inner] - l);
    }
    for (long long ch = 0; ch < c; ++ch) {
      const double t = ch == k ? 1.0 : 0.0;
      const double gp = -(2.0 * t * denom[ch] - (2.0 * inter[ch] + eps)) /
                        (denom[ch] * denom[ch] * (double)c);
      const float p = expf(z[ch * inner] - l);
      g[ch * inner] = (float)((double)p * (gp - dot));
    }
  }
}

// Whether a label counts as foreground: a finite value in [0, 2^63) whose integer part is one of
// the (sorted) foreground classes and is not the ignored label.
__device__ inline bool is_foreground(float v, const long long* classes, long long count,
                                     int has_ignore, long long ignore_index) {
  if (!(v >= 0.0f) || !(v < 9.2233720e18f)) return false;
  const long long k = (long long)v;
  if (has_ignore && k == ignore_index) return false;
  long long lo = 0, hi = count;
  while (lo < hi) {
    const long long mid = (lo + hi) / 2;
    if (classes[mid] < k) lo = mid + 1; else hi = mid;
  }
  return lo < count && classes[lo] == k;
}

// Centroid sums of sample blockIdx.x over segment blockIdx.y of its pixels: Σx, Σy, count as
// exact integers, added into sums[3n .. 3n + 3].
__global__ void gaussian_centroid_kernel(const float* __restrict__ labels,
                                         const long long* __restrict__ classes, long long count,
                                         int has_ignore, long long ignore_index, long long hw,
                                         long long w, long long seg_len,
                                         unsigned long long* __restrict__ sums) {
  const long long n = blockIdx.x;
  const long long begin = (long long)blockIdx.y * seg_len;
  long long end = begin + seg_len;
  if (end > hw) end = hw;
  const float* plane = labels + n * hw;
  unsigned long long sx = 0, sy = 0, cnt = 0;
  for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
    if (is_foreground(plane[i], classes, count, has_ignore, ignore_index)) {
      sx += (unsigned long long)(i % w);
      sy += (unsigned long long)(i / w);
      cnt += 1;
    }
  }
  const unsigned long long a = mg::block_sum_u64(sx);
  const unsigned long long b = mg::block_sum_u64(sy);
  const unsigned long long d = mg::block_sum_u64(cnt);
  if (threadIdx.x == 0 && d > 0) {
    atomicAdd(&sums[3 * n], a);
    atomicAdd(&sums[3 * n + 1], b);
    atomicAdd(&sums[3 * n + 2], d);
  }
}

// w = 1 + α·exp(−((x − μx)² + (y − μy)²)·inv), centred on the centroid (when `sums` is given
// and the sample has foreground) or the image centre.
__global__ void gaussian_weights_kernel(const unsigned long long* __restrict__ sums,
                                        float* __restrict__ out, long long n, long long h,
                                        long long w, float alpha, float inv) {
  MG_GRID_STRIDE(i, n * h * w) {
    const long long s = i / (h * w), p = i - s * (h * w);
    float mx = ((float)w - 1.0f) / 2.0f, my = ((float)h - 1.0f) / 2.0f;
    if (sums && sums[3 * s + 2] > 0) {
      const double cnt = (double)sums[3 * s + 2];
      mx = (float)((double)sums[3 * s] / cnt);
      my = (float)((double)sums[3 * s + 1] / cnt);
    }
    const float dx = mg::sub_rn((float)(p % w), mx), dy = mg::sub_rn((float)(p / w), my);
    const float d2 = mg::add_rn(mg::mul_rn(dx, dx), mg::mul_rn(dy, dy));
    out[i] = mg::add_rn(1.0f, mg::mul_rn(alpha, expf(mg::mul_rn(-d2, inv))));
  }
}

}  // namespace

MG_EXPORT int mg_cross_entropy(const float* logits, const float* labels, const float* class_w,
                               const float* pixel_w, float* grad, float* loss, double* partials,
                               long long outer, long long c, long long inner, int has_ignore,
                               long long ignore_index, float inv_total, double total,
                               cudaStream_t stream) {
  const unsigned int blocks = mg::reduce_blocks(outer * inner);
  ce_kernel<<<blocks, mg::kThreads, 0, stream>>>(logits, labels, class_w, pixel_w, grad, partials,
                                                 outer, c, inner, has_ignore, ignore_index,
                                                 inv_total);
  int status = mg::launch_status();
  if (status != 0) return status;
  ce_finish<<<1, mg::kThreads, 0, stream>>>(partials, (long long)blocks, total, loss);
  return mg::launch_status();
}

// `sums` and `bad` hold mg_reduce_blocks(n) entries; out_total / out_bad one each.
MG_EXPORT int mg_pixel_weight_check(const float* labels, const float* w, long long n,
                                    int has_ignore, long long ignore_index, double* sums,
                                    unsigned long long* bad, double* out_total,
                                    unsigned long long* out_bad, cudaStream_t stream) {
  const unsigned int blocks = mg::reduce_blocks(n);
  pixel_weight_check<<<blocks, mg::kThreads, 0, stream>>>(labels, w, n, has_ignore, ignore_index,
                                                          sums, bad);
  int status = mg::launch_status();
  if (status != 0) return status;
  pixel_weight_finish<<<1, mg::kThreads, 0, stream>>>(sums, bad, (long long)blocks, out_total,
                                                      out_bad);
  return mg::launch_status();
}

// Pixel segments per class of the Dice sums (a function of the shape alone).
MG_EXPORT long long mg_dice_segments(long long pixels) {
  long long segs = (pixels + 16LL * mg::kThreads - 1) / (16LL * mg::kThreads);
  if (segs < 1) segs = 1;
  if (segs > 64) segs = 64;
  return segs;
}

// `lse` holds outer·inner floats, `partials` 3·c·mg_dice_segments(outer·inner) doubles and
// `stats` 3·c doubles.
MG_EXPORT int mg_soft_dice(const float* logits, const float* labels, float* lse, double* partials,
                           double* stats, float* grad, float* loss, long long outer, long long c,
                           long long inner, int has_ignore, long long ignore_index, double eps,
                           cudaStream_t stream) {
  const long long pixels = outer * inner;
  dice_lse_kernel<<<mg::blocks_for(pixels), mg::kThreads, 0, stream>>>(
      logits, labels, lse, outer, c, inner, has_ignore, ignore_index);
  int status = mg::launch_status();
  if (status != 0) return status;
  const long long segs = mg_dice_segments(pixels);
  const long long seg_len = (pixels + segs - 1) / segs;
  dim3 grid((unsigned int)c, (unsigned int)segs);
  dice_sums_kernel<<<grid, mg::kThreads, 0, stream>>>(logits, labels, lse, partials, outer, c,
                                                      inner, has_ignore, ignore_index, seg_len);
  status = mg::launch_status();
  if (status != 0) return status;
  dice_finish_kernel<<<1, mg::kThreads, 0, stream>>>(partials, c, segs, eps, stats, loss);
  status = mg::launch_status();
  if (status != 0) return status;
  dice_backward_kernel<<<mg::blocks_for(pixels), mg::kThreads, 0, stream>>>(
      logits, labels, lse, stats, grad, outer, c, inner, has_ignore, ignore_index, eps);
  return mg::launch_status();
}

// Pixel segments per sample of the centroid sums.
MG_EXPORT long long mg_gaussian_segments(long long hw) {
  long long segs = (hw + 16LL * mg::kThreads - 1) / (16LL * mg::kThreads);
  if (segs < 1) segs = 1;
  if (segs > 64) segs = 64;
  return segs;
}

// `sums` (3·n zeroed u64) is null for centring on the image; otherwise `classes` holds `count`
// sorted foreground classes.
MG_EXPORT int mg_gaussian_pixel_weights(const float* labels, const long long* classes,
                                        long long count, int has_ignore, long long ignore_index,
                                        unsigned long long* sums, float* out, long long n,
                                        long long h, long long w, float alpha, float inv,
                                        cudaStream_t stream) {
  const long long hw = h * w;
  if (sums) {
    const long long segs = mg_gaussian_segments(hw);
    const long long seg_len = (hw + segs - 1) / segs;
    dim3 grid((unsigned int)n, (unsigned int)segs);
    gaussian_centroid_kernel<<<grid, mg::kThreads, 0, stream>>>(
        labels, classes, count, has_ignore, ignore_index, hw, w, seg_len, sums);
    int status = mg::launch_status();
    if (status != 0) return status;
  }
  gaussian_weights_kernel<<<mg::blocks_for(n * hw), mg::kThreads, 0, stream>>>(sums, out, n, h, w,
                                                                              alpha, inv);
  return mg::launch_status();
}
