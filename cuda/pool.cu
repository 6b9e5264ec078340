// Max-pooling backward with the CPU's routing: each output's gradient goes to the FIRST maximum
// of its window (row-major order; a NaN counts as the maximum and the first NaN wins), which
// cuDNN's pooling backward does not promise. Gather form: every input element sums, in output
// order, the gradients of the windows whose first maximum it is, so the result is
// deterministic and bit-identical to the CPU reference.
#include "common.cuh"

namespace {

struct PoolGeom {
  int h, w, ho, wo, kh, kw, sh, sw, ph, pw;
};

// The clipped window [start, end) of output `o` along one axis (the CPU's `window`).
__device__ inline void clip_window(int o, int k, int s, int p, int size, int* start, int* end) {
  int st = o * s - p;
  int end_padded = min(st + k, size + p);
  int a = max(st, 0);
  int b = min(max(end_padded, 0), size);
  *start = a;
  *end = max(b, a);
}

// Index within the plane of the first maximum of the window of output (oh, ow).
__device__ inline int window_argmax(const float* plane, const PoolGeom& g, int oh, int ow) {
  int h0, h1, w0, w1;
  clip_window(oh, g.kh, g.sh, g.ph, g.h, &h0, &h1);
  clip_window(ow, g.kw, g.sw, g.pw, g.w, &w0, &w1);
  int best = h0 * g.w + w0;
  float best_v = -INFINITY;
  for (int ih = h0; ih < h1; ++ih) {
    for (int iw = w0; iw < w1; ++iw) {
      float v = plane[ih * g.w + iw];
      if (v > best_v || isnan(v)) {
        best_v = v;
        best = ih * g.w + iw;
        if (isnan(v)) return best;
      }
    }
  }
  return best;
}

// First and last output index along one axis whose window may contain input index `i`.
__device__ inline void covering(int i, int k, int s, int p, int out, int* first, int* last) {
  // o*s - p <= i  and  i < o*s - p + k
  int lo_num = i + p - k + 1;
  int lo = lo_num <= 0 ? 0 : (lo_num + s - 1) / s;
  int hi = (i + p) / s;
  *first = lo;
  *last = min(hi, out - 1);
}

__global__ void max_pool2d_backward_kernel(const float* __restrict__ x,
                                           const float* __restrict__ dy, float* __restrict__ dx,
                                           long long total, PoolGeom g) {
  const long long plane_in = (long long)g.h * g.w;
  const long long plane_out = (long long)g.ho * g.wo;
  MG_GRID_STRIDE(idx, total) {
    long long p = idx / plane_in;
    int pos = (int)(idx % plane_in);
    int ih = pos / g.w, iw = pos % g.w;
    const float* plane = x + p * plane_in;
    const float* grad = dy + p * plane_out;
    int oh0, oh1, ow0, ow1;
    covering(ih, g.kh, g.sh, g.ph, g.ho, &oh0, &oh1);
    covering(iw, g.kw, g.sw, g.pw, g.wo, &ow0, &ow1);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh) {
      for (int ow = ow0; ow <= ow1; ++ow) {
        if (window_argmax(plane, g, oh, ow) == pos) acc += grad[oh * g.wo + ow];
      }
    }
    dx[idx] = acc;
  }
}

}  // namespace

MG_EXPORT int mg_max_pool2d_backward(const float* x, const float* dy, float* dx, long long planes,
                                     int h, int w, int ho, int wo, int kh, int kw, int sh, int sw,
                                     int ph, int pw, cudaStream_t stream) {
  const long long total = planes * h * w;
  if (total == 0) return 0;
  PoolGeom g{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
  max_pool2d_backward_kernel<<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(x, dy, dx,
                                                                                 total, g);
  return mg::launch_status();
}
