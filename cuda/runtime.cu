// Runtime queries the Rust side needs from the (statically linked) CUDA runtime.
#include "common.cuh"

MG_EXPORT const char* mg_error_string(int code) {
  return cudaGetErrorString((cudaError_t)code);
}

MG_EXPORT int mg_runtime_version(int* version) { return (int)cudaRuntimeGetVersion(version); }
