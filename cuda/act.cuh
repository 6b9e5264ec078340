// The element types of NHWC activations: bf16 (the mixed-precision mode) and fp32 (the TF32 /
// NHWC fp32 mode). Kernels on activations are templates over the type T and do their math in
// fp32: `get` widens, `make` rounds once (exact for fp32); `Pair` is two adjacent channels moved
// by one access (32-bit for bf16, 64-bit for fp32).
#pragma once
#include <cuda_bf16.h>

namespace mg {

template <typename T>
struct Act;

template <>
struct Act<__nv_bfloat16> {
  using Pair = __nv_bfloat162;
  __device__ static float get(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 make(float v) { return __float2bfloat16_rn(v); }
  __device__ static float2 get2(Pair v) { return __bfloat1622float2(v); }
  __device__ static Pair make2(float a, float b) { return __floats2bfloat162_rn(a, b); }
};

template <>
struct Act<float> {
  using Pair = float2;
  __device__ static float get(float v) { return v; }
  __device__ static float make(float v) { return v; }
  __device__ static float2 get2(Pair v) { return v; }
  __device__ static Pair make2(float a, float b) { return make_float2(a, b); }
};

// `Raw` (a Pair, or uint4: 16 bytes) holding kN consecutive channels of T, widened to fp32 and
// rounded back (the same rounding as the Pair accessors, so the same bits).
template <typename T, typename Raw>
struct ChannelVec {
  static constexpr int kN = (int)(sizeof(Raw) / sizeof(T));
  using P = typename Act<T>::Pair;
  __device__ static void get(const Raw& r, float (&v)[kN]) {
    const P* p = reinterpret_cast<const P*>(&r);
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) {
      const float2 f = Act<T>::get2(p[i]);
      v[2 * i] = f.x;
      v[2 * i + 1] = f.y;
    }
  }
  __device__ static Raw make(const float (&v)[kN]) {
    Raw r;
    P* p = reinterpret_cast<P*>(&r);
#pragma unroll
    for (int i = 0; i < kN / 2; ++i) p[i] = Act<T>::make2(v[2 * i], v[2 * i + 1]);
    return r;
  }
};

// Sixteen bytes of activations: 8 bf16 or 4 fp32 channels.
template <typename T>
using Vec16 = ChannelVec<T, uint4>;

}  // namespace mg

