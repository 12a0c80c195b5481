// Hash-grid encoding on the GPU: raw pointers and a cudaStream_t, no torch headers (see
// hashgrid_kernels.h). One thread per (point, level) for the forward pass and the backward pass into
// the table (atomicAdd: points of one level collide on entries); one thread per point for the gradient
// with respect to the points (it sums over levels itself, so no atomics there).
// Compile-checked with plain `nvcc -c` (scripts/check_cuda.sh); never run on this project's machines.
#include <cuda_runtime.h>

#include "hashgrid_kernels.h"

namespace hashgrid {
namespace {

constexpr int kThreads = 256;

struct LevelArray {  // passed by value, in kernel parameter space
  Level l[kMaxLevels];
};

struct AtomicAdd {
  __host__ __device__ void operator()(float* p, float v) const {
#if defined(__CUDA_ARCH__)
    atomicAdd(p, v);
#else
    *p += v;
#endif
  }
};

LevelArray pack(const Level* levels, int n_levels) {
  LevelArray a{};
  for (int l = 0; l < n_levels && l < kMaxLevels; ++l) a.l[l] = levels[l];
  return a;
}

dim3 point_level_grid(int64_t n, int n_levels) {
  return dim3(static_cast<unsigned>((n + kThreads - 1) / kThreads), static_cast<unsigned>(n_levels));
}

template <int F>
__global__ void forward_kernel(const float* __restrict__ x, const float* __restrict__ params,
                               float* __restrict__ out, int64_t n, LevelArray levels, int n_levels) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  encode_level<F>(x + 3 * i, params, levels.l[l], out + i * n_levels * F + l * F);
}

template <int F>
__global__ void backward_params_kernel(const float* __restrict__ x, const float* __restrict__ grad_out,
                                       float* __restrict__ grad_params, int64_t n, LevelArray levels,
                                       int n_levels) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int l = blockIdx.y;
  if (i >= n) return;
  backward_level<F>(x + 3 * i, grad_out + i * n_levels * F + l * F, levels.l[l], grad_params,
                    AtomicAdd{});
}

template <int F>
__global__ void backward_input_kernel(const float* __restrict__ x, const float* __restrict__ grad_out,
                                      const float* __restrict__ params, float* __restrict__ grad_x,
                                      int64_t n, LevelArray levels, int n_levels) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float dx[3] = {0.0f, 0.0f, 0.0f};
  for (int l = 0; l < n_levels; ++l) {
    input_grad_level<F>(x + 3 * i, grad_out + i * n_levels * F + l * F, params, levels.l[l], dx);
  }
  for (int d = 0; d < 3; ++d) grad_x[3 * i + d] = dx[d];
}

// Returned for a feature count the kernels are not instantiated for.
constexpr int kUnsupportedF = static_cast<int>(cudaErrorInvalidValue);

}  // namespace

int forward_cuda(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                 int n_levels, int n_features, cudaStream_t stream) {
  if (n == 0) return 0;
  const LevelArray lv = pack(levels, n_levels);
  HG_DISPATCH_F(n_features, (forward_kernel<F><<<point_level_grid(n, n_levels), kThreads, 0, stream>>>(
                                x, params, out, n, lv, n_levels)),
                return kUnsupportedF);
  return static_cast<int>(cudaGetLastError());
}

int backward_params_cuda(const float* x, const float* grad_out, float* grad_params, int64_t n,
                         const Level* levels, int n_levels, int n_features, cudaStream_t stream) {
  if (n == 0) return 0;
  const LevelArray lv = pack(levels, n_levels);
  HG_DISPATCH_F(n_features,
                (backward_params_kernel<F><<<point_level_grid(n, n_levels), kThreads, 0, stream>>>(
                    x, grad_out, grad_params, n, lv, n_levels)),
                return kUnsupportedF);
  return static_cast<int>(cudaGetLastError());
}

int backward_input_cuda(const float* x, const float* grad_out, const float* params, float* grad_x,
                        int64_t n, const Level* levels, int n_levels, int n_features,
                        cudaStream_t stream) {
  if (n == 0) return 0;
  const LevelArray lv = pack(levels, n_levels);
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  HG_DISPATCH_F(n_features, (backward_input_kernel<F><<<blocks, kThreads, 0, stream>>>(
                                x, grad_out, params, grad_x, n, lv, n_levels)),
                return kUnsupportedF);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace hashgrid
