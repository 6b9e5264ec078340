// Bilinear resampling of NCHW planes, align_corners = false (PyTorch's source-index rule), and
// its backward as a gather: every input pixel sums the output gradients whose taps touch it, so
// the result is deterministic (no atomics).
#include "common.cuh"

#include <math.h>

namespace {

struct Tap {
  long long i0, i1;
  float l;  // weight of i1
};

// The source taps of output index `o` along an axis of `in` inputs, rounded exactly as the CPU:
// src = max((o + 0.5)·scale − 0.5, 0), i0 = min(⌊src⌋, in − 1), i1 = min(i0 + 1, in − 1).
__device__ inline Tap tap(long long o, long long in, float scale) {
  float src = mg::sub_rn(mg::mul_rn(mg::add_rn((float)o, 0.5f), scale), 0.5f);
  src = fmaxf(src, 0.0f);
  long long i0 = (long long)src;
  if (i0 > in - 1) i0 = in - 1;
  const long long i1 = i0 + 1 < in - 1 ? i0 + 1 : in - 1;
  return Tap{i0, i1, mg::sub_rn(src, (float)i0)};
}

// The weight with which output index `o` reads input index `i` along one axis (0 if none).
__device__ inline float axis_weight(long long o, long long i, long long in, float scale,
                                    bool* touches) {
  const Tap t = tap(o, in, scale);
  float wgt = 0.0f;
  *touches = false;
  if (t.i0 == i) {
    wgt += 1.0f - t.l;
    *touches = true;
  }
  if (t.i1 == i) {
    wgt += t.l;
    *touches = true;
  }
  return wgt;
}

// Output indices that may read input index i: src(o) ∈ [i − 1, i + 1), widened by 2 on each side
// against rounding and clamped; each candidate is re-checked with the exact tap rule.
__device__ inline void candidates(long long i, long long out, float scale, long long* lo,
                                  long long* hi) {
  const double s = (double)scale;
  long long a = (long long)floor(((double)i - 0.5) / s - 0.5) - 2;
  long long b = (long long)ceil(((double)i + 1.5) / s - 0.5) + 2;
  *lo = a < 0 ? 0 : a;
  *hi = b > out - 1 ? out - 1 : b;
}

__global__ void upsample_kernel(const float* __restrict__ x, float* __restrict__ y,
                                long long planes, long long h, long long w, long long ho,
                                long long wo, float scale_h, float scale_w) {
  MG_GRID_STRIDE(i, planes * ho * wo) {
    const long long ow = i % wo;
    const long long oh = (i / wo) % ho;
    const long long p = i / (wo * ho);
    const Tap th = tap(oh, h, scale_h), tw = tap(ow, w, scale_w);
    const float* plane = x + p * h * w;
    const float lw1 = 1.0f - tw.l, lh1 = 1.0f - th.l;
    const float top = mg::add_rn(mg::mul_rn(plane[th.i0 * w + tw.i0], lw1),
                                 mg::mul_rn(plane[th.i0 * w + tw.i1], tw.l));
    const float bottom = mg::add_rn(mg::mul_rn(plane[th.i1 * w + tw.i0], lw1),
                                    mg::mul_rn(plane[th.i1 * w + tw.i1], tw.l));
    y[i] = mg::add_rn(mg::mul_rn(top, lh1), mg::mul_rn(bottom, th.l));
  }
}

__global__ void upsample_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx,
                                         long long planes, long long h, long long w, long long ho,
                                         long long wo, float scale_h, float scale_w) {
  MG_GRID_STRIDE(i, planes * h * w) {
    const long long iw = i % w;
    const long long ih = (i / w) % h;
    const long long p = i / (w * h);
    const float* grad = dy + p * ho * wo;
    long long oh_lo, oh_hi, ow_lo, ow_hi;
    candidates(ih, ho, scale_h, &oh_lo, &oh_hi);
    candidates(iw, wo, scale_w, &ow_lo, &ow_hi);
    float acc = 0.0f;
    for (long long oh = oh_lo; oh <= oh_hi; ++oh) {
      bool touches_h;
      const float wh = axis_weight(oh, ih, h, scale_h, &touches_h);
      if (!touches_h) continue;
      for (long long ow = ow_lo; ow <= ow_hi; ++ow) {
        bool touches_w;
        const float ww = axis_weight(ow, iw, w, scale_w, &touches_w);
        if (!touches_w) continue;
        acc += grad[oh * wo + ow] * wh * ww;
      }
    }
    dx[i] = acc;
  }
}

}  // namespace

MG_EXPORT int mg_upsample_bilinear(const float* x, float* y, long long planes, long long h,
                                   long long w, long long ho, long long wo, float scale_h,
                                   float scale_w, cudaStream_t stream) {
  upsample_kernel<<<mg::blocks_for(planes * ho * wo), mg::kThreads, 0, stream>>>(
      x, y, planes, h, w, ho, wo, scale_h, scale_w);
  return mg::launch_status();
}

MG_EXPORT int mg_upsample_bilinear_backward(const float* dy, float* dx, long long planes,
                                            long long h, long long w, long long ho, long long wo,
                                            float scale_h, float scale_w, cudaStream_t stream) {
  upsample_backward_kernel<<<mg::blocks_for(planes * h * w), mg::kThreads, 0, stream>>>(
      dy, dx, planes, h, w, ho, wo, scale_h, scale_w);
  return mg::launch_status();
}
