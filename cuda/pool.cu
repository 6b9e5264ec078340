// Max-pooling backward with the CPU's routing: each output's gradient goes to the FIRST maximum
// of its window (row-major order; a NaN counts as the maximum and the first NaN wins), which
// cuDNN's pooling backward does not promise. Gather form: every input element sums, in output
// order, the gradients of the windows whose first maximum it is, so the result is
// deterministic and bit-identical to the CPU reference.
//
// The NHWC twins (the activations of the bf16 and TF32 modes, element type bf16 or fp32) use the
// same windows and tie rule, reading channel `ch` of each pixel: the forward copies the first
// maximum (so it is exact), the backward sums the routed fp32 gradients and rounds once.
#include "act.cuh"
#include "common.cuh"

namespace {

using mg::Act;

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

// The value at pixel `pos` of an NCHW fp32 plane.
struct PlaneF32 {
  const float* plane;
  __device__ float operator()(int pos) const { return plane[pos]; }
};

// The value of channel `ch` at pixel `pos` of one NHWC image (bf16 or fp32) with `c` channels.
template <typename T>
struct Pixels {
  const T* image;
  long long c, ch;
  __device__ float operator()(int pos) const { return Act<T>::get(image[pos * c + ch]); }
};

// Index within the plane of the first maximum of the window of output (oh, ow).
template <typename Load>
__device__ inline int window_argmax(const Load& load, const PoolGeom& g, int oh, int ow) {
  int h0, h1, w0, w1;
  clip_window(oh, g.kh, g.sh, g.ph, g.h, &h0, &h1);
  clip_window(ow, g.kw, g.sw, g.pw, g.w, &w0, &w1);
  int best = h0 * g.w + w0;
  float best_v = -INFINITY;
  for (int ih = h0; ih < h1; ++ih) {
    for (int iw = w0; iw < w1; ++iw) {
      float v = load(ih * g.w + iw);
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
    const PlaneF32 plane{x + p * plane_in};
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

// y[n][oh][ow][ch] = the first maximum of its window; one thread per output element.
template <typename T>
__global__ void max_pool2d_nhwc_kernel(const T* __restrict__ x, T* __restrict__ y,
                                       long long total, long long c, PoolGeom g) {
  const long long plane_in = (long long)g.h * g.w;
  const long long plane_out = (long long)g.ho * g.wo;
  MG_GRID_STRIDE(idx, total) {
    const long long ch = idx % c;
    const long long pixel = idx / c;
    const long long n = pixel / plane_out;
    const int pos = (int)(pixel % plane_out);
    const T* image = x + n * plane_in * c;
    const int best = window_argmax(Pixels<T>{image, c, ch}, g, pos / g.wo, pos % g.wo);
    y[idx] = image[best * c + ch];
  }
}

// dx[n][ih][iw][ch] = Σ dy over the windows whose first maximum it is, in output order.
template <typename T>
__global__ void max_pool2d_backward_nhwc_kernel(const T* __restrict__ x, const T* __restrict__ dy,
                                                T* __restrict__ dx, long long total, long long c,
                                                PoolGeom g) {
  const long long plane_in = (long long)g.h * g.w;
  const long long plane_out = (long long)g.ho * g.wo;
  MG_GRID_STRIDE(idx, total) {
    const long long ch = idx % c;
    const long long pixel = idx / c;
    const long long n = pixel / plane_in;
    const int pos = (int)(pixel % plane_in);
    const int ih = pos / g.w, iw = pos % g.w;
    const Pixels<T> image{x + n * plane_in * c, c, ch};
    const T* grad = dy + n * plane_out * c;
    int oh0, oh1, ow0, ow1;
    covering(ih, g.kh, g.sh, g.ph, g.ho, &oh0, &oh1);
    covering(iw, g.kw, g.sw, g.pw, g.wo, &ow0, &ow1);
    float acc = 0.0f;
    for (int oh = oh0; oh <= oh1; ++oh) {
      for (int ow = ow0; ow <= ow1; ++ow) {
        if (window_argmax(image, g, oh, ow) == pos) {
          acc += Act<T>::get(grad[((long long)oh * g.wo + ow) * c + ch]);
        }
      }
    }
    dx[idx] = Act<T>::make(acc);
  }
}

// Non-overlapping windows (stride = window, no padding) of an even channel count: one thread per
// output pixel and vector of channels (Raw: a pair, or 16 bytes when the channels and pointers
// allow) finds the first maxima of all its channels in one pass over the window.
template <int N>
struct VecMax {
  float best[N];
  int at[N];
  bool nan[N];
  __device__ VecMax() {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      best[k] = -INFINITY;
      at[k] = 0;
      nan[k] = false;
    }
  }
  __device__ void see(const float (&x)[N], int pos) {
#pragma unroll
    for (int k = 0; k < N; ++k) {
      if (!nan[k] && (x[k] > best[k] || isnan(x[k]))) {
        best[k] = x[k];
        at[k] = pos;
        nan[k] = isnan(x[k]);
      }
    }
  }
};

// `vecs`: channel vectors per pixel.
struct TiledGeom {
  int h, w, ho, wo, kh, kw, vecs;
};

// The window of output `pixel` (n, oh, ow) scanned in row-major order; `visit(offset, pos)` gets
// the vector offset of each input pixel and its index within the window.
template <typename Visit>
__device__ inline void tiled_window(const TiledGeom& g, long long pixel, long long vec,
                                    Visit visit) {
  const int ow = (int)(pixel % g.wo);
  const long long t = pixel / g.wo;
  const int oh = (int)(t % g.ho);
  const long long n = t / g.ho;
  for (int i = 0; i < g.kh; ++i) {
    const long long row = (n * g.h + (long long)oh * g.kh + i) * g.w + (long long)ow * g.kw;
    for (int j = 0; j < g.kw; ++j) visit((row + j) * g.vecs + vec, i * g.kw + j);
  }
}

template <typename T, typename Raw>
__global__ void max_pool2d_tiled_kernel(const Raw* __restrict__ x, Raw* __restrict__ y,
                                        long long total, TiledGeom g) {
  using V = mg::ChannelVec<T, Raw>;
  MG_GRID_STRIDE(idx, total) {
    const long long vec = idx % g.vecs;
    VecMax<V::kN> m;
    tiled_window(g, idx / g.vecs, vec, [&](long long off, int pos) {
      float v[V::kN];
      V::get(x[off], v);
      m.see(v, pos);
    });
    y[idx] = V::make(m.best);
  }
}

template <typename T, typename Raw>
__global__ void max_pool2d_backward_tiled_kernel(const Raw* __restrict__ x,
                                                 const Raw* __restrict__ dy,
                                                 Raw* __restrict__ dx, long long total,
                                                 TiledGeom g) {
  using V = mg::ChannelVec<T, Raw>;
  MG_GRID_STRIDE(idx, total) {
    const long long vec = idx % g.vecs;
    const long long pixel = idx / g.vecs;
    VecMax<V::kN> m;
    tiled_window(g, pixel, vec, [&](long long off, int pos) {
      float v[V::kN];
      V::get(x[off], v);
      m.see(v, pos);
    });
    // Widening and rounding back is exact: the routed gradient keeps its bits.
    float grad[V::kN];
    V::get(dy[idx], grad);
    tiled_window(g, pixel, vec, [&](long long off, int pos) {
      float out[V::kN];
#pragma unroll
      for (int k = 0; k < V::kN; ++k) out[k] = pos == m.at[k] ? grad[k] : 0.0f;
      dx[off] = V::make(out);
    });
  }
}

}  // namespace

// Whether the tiled kernels apply: stride = window, no padding, an even channel count.
static bool tiled(long long c, int kh, int kw, int sh, int sw, int ph, int pw) {
  return c % 2 == 0 && kh == sh && kw == sw && ph == 0 && pw == 0;
}

template <typename T>
static int max_pool2d_nhwc(const T* x, T* y, long long n, long long c, int h, int w, int ho,
                           int wo, int kh, int kw, int sh, int sw, int ph, int pw,
                           cudaStream_t stream) {
  using P = typename Act<T>::Pair;
  const long long total = n * ho * wo * c;
  if (total == 0) return 0;
  if (tiled(c, kh, kw, sh, sw, ph, pw)) {
    constexpr int kWide = 16 / (int)sizeof(T);
    if (c % kWide == 0 && mg::aligned16({x, y})) {
      // 16 bytes of channels per access.
      const TiledGeom t{h, w, ho, wo, kh, kw, (int)(c / kWide)};
      max_pool2d_tiled_kernel<T, uint4><<<mg::blocks_for(total / kWide), mg::kThreads, 0,
                                          stream>>>(reinterpret_cast<const uint4*>(x),
                                                    reinterpret_cast<uint4*>(y),
                                                    total / kWide, t);
      return mg::launch_status();
    }
    const TiledGeom t{h, w, ho, wo, kh, kw, (int)(c / 2)};
    max_pool2d_tiled_kernel<T, P><<<mg::blocks_for(total / 2), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const P*>(x), reinterpret_cast<P*>(y), total / 2, t);
    return mg::launch_status();
  }
  PoolGeom g{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
  max_pool2d_nhwc_kernel<T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(x, y, total, c,
                                                                                g);
  return mg::launch_status();
}

template <typename T>
static int max_pool2d_backward_nhwc(const T* x, const T* dy, T* dx, long long n, long long c,
                                    int h, int w, int ho, int wo, int kh, int kw, int sh, int sw,
                                    int ph, int pw, cudaStream_t stream) {
  using P = typename Act<T>::Pair;
  const long long total = n * h * w * c;
  if (total == 0) return 0;
  if (tiled(c, kh, kw, sh, sw, ph, pw)) {
    // Rows and columns past the last whole window get no gradient.
    if ((long long)ho * kh != h || (long long)wo * kw != w) {
      const cudaError_t e = cudaMemsetAsync(dx, 0, total * sizeof(T), stream);
      if (e != cudaSuccess) return (int)e;
    }
    constexpr int kWide = 16 / (int)sizeof(T);
    if (c % kWide == 0 && mg::aligned16({x, dy, dx})) {
      const long long outputs = n * ho * wo * (c / kWide);
      if (outputs == 0) return 0;
      const TiledGeom t{h, w, ho, wo, kh, kw, (int)(c / kWide)};
      max_pool2d_backward_tiled_kernel<T, uint4>
          <<<mg::blocks_for(outputs), mg::kThreads, 0, stream>>>(
              reinterpret_cast<const uint4*>(x), reinterpret_cast<const uint4*>(dy),
              reinterpret_cast<uint4*>(dx), outputs, t);
      return mg::launch_status();
    }
    const long long outputs = n * ho * wo * (c / 2);
    if (outputs == 0) return 0;
    const TiledGeom t{h, w, ho, wo, kh, kw, (int)(c / 2)};
    max_pool2d_backward_tiled_kernel<T, P><<<mg::blocks_for(outputs), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const P*>(x), reinterpret_cast<const P*>(dy), reinterpret_cast<P*>(dx),
        outputs, t);
    return mg::launch_status();
  }
  PoolGeom g{h, w, ho, wo, kh, kw, sh, sw, ph, pw};
  max_pool2d_backward_nhwc_kernel<T><<<mg::blocks_for(total), mg::kThreads, 0, stream>>>(
      x, dy, dx, total, c, g);
  return mg::launch_status();
}

// The NHWC launchers, one pair per element type (`_bf16`, `_f32`).
#define MG_POOL_NHWC_LAUNCHERS(SUFFIX, T)                                                       \
  MG_EXPORT int mg_max_pool2d_nhwc_##SUFFIX(const T* x, T* y, long long n, long long c, int h,  \
                                            int w, int ho, int wo, int kh, int kw, int sh,      \
                                            int sw, int ph, int pw, cudaStream_t stream) {      \
    return max_pool2d_nhwc<T>(x, y, n, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw, stream);        \
  }                                                                                             \
  MG_EXPORT int mg_max_pool2d_backward_nhwc_##SUFFIX(                                           \
      const T* x, const T* dy, T* dx, long long n, long long c, int h, int w, int ho, int wo,   \
      int kh, int kw, int sh, int sw, int ph, int pw, cudaStream_t stream) {                    \
    return max_pool2d_backward_nhwc<T>(x, dy, dx, n, c, h, w, ho, wo, kh, kw, sh, sw, ph, pw,   \
                                       stream);                                                 \
  }

MG_POOL_NHWC_LAUNCHERS(bf16, __nv_bfloat16)
MG_POOL_NHWC_LAUNCHERS(f32, float)

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
