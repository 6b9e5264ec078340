// In-place optimizer updates (PyTorch's rules), one thread per element. The arithmetic is written
// with non-contracting intrinsics in the CPU reference's order, so an update rounds as the CPU's.
#include "common.cuh"

#include <math.h>

using mg::add_rn;
using mg::mul_rn;
using mg::sub_rn;

namespace {

struct AdamHyper {
  float lr, beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  int decoupled;
  float step_size, bc2_sqrt;
};

__device__ inline void adam_update(float* __restrict__ p, const float* __restrict__ g,
                                   float* __restrict__ m, float* __restrict__ v, long long i,
                                   const AdamHyper& h) {
  float pi = p[i], gi = g[i];
  if (h.decoupled) {
    pi = mul_rn(pi, sub_rn(1.0f, mul_rn(h.lr, h.weight_decay)));
  } else if (h.weight_decay != 0.0f) {
    gi = add_rn(gi, mul_rn(h.weight_decay, pi));
  }
  const float mi = add_rn(mul_rn(h.beta1, m[i]), mul_rn(h.one_minus_beta1, gi));
  const float vi = add_rn(mul_rn(h.beta2, v[i]), mul_rn(mul_rn(h.one_minus_beta2, gi), gi));
  m[i] = mi;
  v[i] = vi;
  p[i] = sub_rn(pi, __fdiv_rn(mul_rn(h.step_size, mi),
                              add_rn(__fdiv_rn(__fsqrt_rn(vi), h.bc2_sqrt), h.eps)));
}

__global__ void adam_kernel(float* __restrict__ p, const float* __restrict__ g,
                            float* __restrict__ m, float* __restrict__ v, long long n,
                            AdamHyper h) {
  MG_GRID_STRIDE(i, n) { adam_update(p, g, m, v, i, h); }
}

// One entry of the multi-tensor table (five 8-byte words, as the host writes them).
struct AdamTensor {
  float* p;
  const float* g;
  float* m;
  float* v;
  long long n;
};

// Tensor blockIdx.y of the table, its elements strided over blockIdx.x. With a `guard` (one
// value on the device, e.g. the loss plus the gradients' sum) the update is made only when it is
// finite: the host queues the step without reading the guard first.
__global__ void adam_many_kernel(const AdamTensor* __restrict__ table, AdamHyper h,
                                 const float* __restrict__ guard) {
  if (guard != nullptr && !isfinite(*guard)) return;
  const AdamTensor t = table[blockIdx.y];
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < t.n;
       i += (long long)blockDim.x * gridDim.x) {
    adam_update(t.p, t.g, t.m, t.v, i, h);
  }
}

__global__ void sgd_kernel(float* __restrict__ p, const float* __restrict__ g,
                           float* __restrict__ b, long long n, float lr, float momentum,
                           int nesterov, float weight_decay) {
  MG_GRID_STRIDE(i, n) {
    const float pi = p[i];
    float d = add_rn(g[i], mul_rn(weight_decay, pi));
    if (momentum != 0.0f) {
      const float bi = add_rn(mul_rn(momentum, b[i]), d);
      b[i] = bi;
      d = nesterov ? add_rn(d, mul_rn(momentum, bi)) : bi;
    }
    p[i] = sub_rn(pi, mul_rn(lr, d));
  }
}

__global__ void adagrad_kernel(float* __restrict__ p, const float* __restrict__ g,
                               float* __restrict__ acc, long long n, float lr, float eps,
                               float weight_decay) {
  MG_GRID_STRIDE(i, n) {
    const float pi = p[i];
    const float gi = add_rn(g[i], mul_rn(weight_decay, pi));
    const float a = add_rn(acc[i], mul_rn(gi, gi));
    acc[i] = a;
    p[i] = sub_rn(pi, __fdiv_rn(mul_rn(lr, gi), add_rn(__fsqrt_rn(a), eps)));
  }
}

__global__ void rmsprop_kernel(float* __restrict__ p, const float* __restrict__ g,
                               float* __restrict__ sq, float* __restrict__ b, long long n,
                               float lr, float alpha, float one_minus_alpha, float eps,
                               float momentum, float weight_decay) {
  MG_GRID_STRIDE(i, n) {
    const float pi = p[i];
    const float gi = add_rn(g[i], mul_rn(weight_decay, pi));
    const float s = add_rn(mul_rn(alpha, sq[i]), mul_rn(mul_rn(one_minus_alpha, gi), gi));
    sq[i] = s;
    const float step = __fdiv_rn(gi, add_rn(__fsqrt_rn(s), eps));
    if (momentum > 0.0f) {
      const float bi = add_rn(mul_rn(momentum, b[i]), step);
      b[i] = bi;
      p[i] = sub_rn(pi, mul_rn(lr, bi));
    } else {
      p[i] = sub_rn(pi, mul_rn(lr, step));
    }
  }
}

}  // namespace

MG_EXPORT int mg_adam_step(float* p, const float* g, float* m, float* v, long long n, float lr,
                           float beta1, float beta2, float one_minus_beta1,
                           float one_minus_beta2, float eps, float weight_decay, int decoupled,
                           float step_size, float bc2_sqrt, cudaStream_t stream) {
  const AdamHyper h{lr,  beta1,        beta2,    one_minus_beta1, one_minus_beta2,
                    eps, weight_decay, decoupled, step_size,      bc2_sqrt};
  adam_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(p, g, m, v, n, h);
  return mg::launch_status();
}

// `table` holds `count` entries of {p, g, m, v, n} on the device; `largest` is the largest n;
// `guard` is null or one device value that must be finite for the update to be made.
MG_EXPORT int mg_adam_step_many(const void* table, long long count, long long largest, float lr,
                                float beta1, float beta2, float one_minus_beta1,
                                float one_minus_beta2, float eps, float weight_decay,
                                int decoupled, float step_size, float bc2_sqrt,
                                const float* guard, cudaStream_t stream) {
  const AdamHyper h{lr,  beta1,        beta2,    one_minus_beta1, one_minus_beta2,
                    eps, weight_decay, decoupled, step_size,      bc2_sqrt};
  const AdamTensor* entries = static_cast<const AdamTensor*>(table);
  long long per_tensor = (largest + mg::kThreads - 1) / mg::kThreads;
  if (per_tensor < 1) per_tensor = 1;
  if (per_tensor > 1024) per_tensor = 1024;
  for (long long first = 0; first < count; first += 65535) {
    const long long here = count - first < 65535 ? count - first : 65535;
    const dim3 grid((unsigned)per_tensor, (unsigned)here);
    adam_many_kernel<<<grid, mg::kThreads, 0, stream>>>(entries + first, h, guard);
    const int status = mg::launch_status();
    if (status != 0) return status;
  }
  return 0;
}

MG_EXPORT int mg_sgd_step(float* p, const float* g, float* b, long long n, float lr,
                          float momentum, int nesterov, float weight_decay, cudaStream_t stream) {
  sgd_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(p, g, b, n, lr, momentum, nesterov,
                                                             weight_decay);
  return mg::launch_status();
}

MG_EXPORT int mg_adagrad_step(float* p, const float* g, float* acc, long long n, float lr,
                              float eps, float weight_decay, cudaStream_t stream) {
  adagrad_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(p, g, acc, n, lr, eps,
                                                                 weight_decay);
  return mg::launch_status();
}

MG_EXPORT int mg_rmsprop_step(float* p, const float* g, float* sq, float* b, long long n,
                              float lr, float alpha, float one_minus_alpha, float eps,
                              float momentum, float weight_decay, cudaStream_t stream) {
  rmsprop_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(
      p, g, sq, b, n, lr, alpha, one_minus_alpha, eps, momentum, weight_decay);
  return mg::launch_status();
}
