// Entry points of the hash-grid kernels: raw pointers, no torch, no CUDA runtime headers.
// Implemented by hashgrid_cpu.cpp (C++/OpenMP) and hashgrid_cuda.cu (CUDA); called by the binding
// layer hashgrid_bind.cpp. Shapes: x [n, 3], params [P] (= n_entries * F), out / grad_out [n, L * F],
// grad_params [P], grad_x [n, 3]; all float32, contiguous.
#pragma once

#include <cstdint>

#include "hashgrid_common.h"

struct CUstream_st;
typedef CUstream_st* cudaStream_t;  // the CUDA runtime's own definition, repeated to avoid its headers

namespace hashgrid {

// Features per level supported by the compiled kernels (template instantiations).
inline bool supported_features(int64_t f) { return f == 1 || f == 2 || f == 4 || f == 8; }

void forward_cpu(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                 int n_levels, int n_features, int n_threads);
// Overwrites grad_params (it need not be zeroed). Each thread owns whole levels: no atomics, and the
// result does not depend on the number of threads.
void backward_params_cpu(const float* x, const float* grad_out, float* grad_params, int64_t n,
                         const Level* levels, int n_levels, int n_features, int n_threads);
// Overwrites grad_x.
void backward_input_cpu(const float* x, const float* grad_out, const float* params, float* grad_x,
                        int64_t n, const Level* levels, int n_levels, int n_features, int n_threads);

// The CUDA launchers return 0 or the cudaError_t of the launch; kernels run asynchronously on `stream`.
int forward_cuda(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                 int n_levels, int n_features, cudaStream_t stream);
// Accumulates into grad_params, which the caller zeroes (atomicAdd).
int backward_params_cuda(const float* x, const float* grad_out, float* grad_params, int64_t n,
                         const Level* levels, int n_levels, int n_features, cudaStream_t stream);
// Overwrites grad_x.
int backward_input_cuda(const float* x, const float* grad_out, const float* params, float* grad_x,
                        int64_t n, const Level* levels, int n_levels, int n_features, cudaStream_t stream);

}  // namespace hashgrid
