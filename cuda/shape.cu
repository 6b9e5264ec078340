// Concatenation / splitting (strided row copies), zero padding and cropping of the last two
// dimensions. 64-bit indices throughout.
#include "common.cuh"

namespace {

// dst[r * dst_stride + dst_off + j] = src[r * src_stride + src_off + j], r < rows, j < row_len,
// in units of T (float, or float4 when every size and offset allows 16-byte accesses).
template <typename T>
__global__ void copy_rows_kernel(const T* __restrict__ src, T* __restrict__ dst, long long rows,
                                 long long row_len, long long src_stride, long long src_off,
                                 long long dst_stride, long long dst_off) {
  // 32-bit division where the sizes allow it (64-bit division costs ~10x more).
  const bool narrow = rows * row_len <= 0xffffffffLL;
  MG_GRID_STRIDE(i, rows * row_len) {
    const long long r = narrow ? (long long)((unsigned)i / (unsigned)row_len) : i / row_len;
    const long long j = i - r * row_len;
    dst[r * dst_stride + dst_off + j] = src[r * src_stride + src_off + j];
  }
}

__global__ void pad2d_kernel(const float* __restrict__ x, float* __restrict__ y, long long planes,
                             long long h, long long w, long long ho, long long wo, long long top,
                             long long left) {
  MG_GRID_STRIDE(i, planes * ho * wo) {
    const long long c = i % wo;
    const long long r = (i / wo) % ho;
    const long long p = i / (wo * ho);
    const long long sr = r - top, sc = c - left;
    y[i] = (sr >= 0 && sr < h && sc >= 0 && sc < w) ? x[(p * h + sr) * w + sc] : 0.0f;
  }
}

__global__ void crop2d_kernel(const float* __restrict__ x, float* __restrict__ y, long long planes,
                              long long h, long long w, long long ho, long long wo, long long top,
                              long long left) {
  MG_GRID_STRIDE(i, planes * ho * wo) {
    const long long c = i % wo;
    const long long r = (i / wo) % ho;
    const long long p = i / (wo * ho);
    y[i] = x[(p * h + r + top) * w + c + left];
  }
}

}  // namespace

MG_EXPORT int mg_copy_rows(const float* src, float* dst, long long rows, long long row_len,
                           long long src_stride, long long src_off, long long dst_stride,
                           long long dst_off, cudaStream_t stream) {
  const bool aligned = ((uintptr_t)src % 16 == 0) && ((uintptr_t)dst % 16 == 0);
  if (aligned && (row_len | src_stride | src_off | dst_stride | dst_off) % 4 == 0) {
    const long long n = rows * (row_len / 4);
    copy_rows_kernel<<<mg::blocks_for(n), mg::kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(src), reinterpret_cast<float4*>(dst), rows, row_len / 4,
        src_stride / 4, src_off / 4, dst_stride / 4, dst_off / 4);
  } else {
    copy_rows_kernel<<<mg::blocks_for(rows * row_len), mg::kThreads, 0, stream>>>(
        src, dst, rows, row_len, src_stride, src_off, dst_stride, dst_off);
  }
  return mg::launch_status();
}

MG_EXPORT int mg_pad2d(const float* x, float* y, long long planes, long long h, long long w,
                       long long top, long long bottom, long long left, long long right,
                       cudaStream_t stream) {
  const long long ho = h + top + bottom, wo = w + left + right;
  pad2d_kernel<<<mg::blocks_for(planes * ho * wo), mg::kThreads, 0, stream>>>(x, y, planes, h, w,
                                                                               ho, wo, top, left);
  return mg::launch_status();
}

MG_EXPORT int mg_crop2d(const float* x, float* y, long long planes, long long h, long long w,
                        long long top, long long bottom, long long left, long long right,
                        cudaStream_t stream) {
  const long long ho = h - top - bottom, wo = w - left - right;
  crop2d_kernel<<<mg::blocks_for(planes * ho * wo), mg::kThreads, 0, stream>>>(x, y, planes, h, w,
                                                                                ho, wo, top, left);
  return mg::launch_status();
}
