// Torch binding of the hash-grid kernels: unwraps tensors into raw pointers and calls the CPU or CUDA
// implementation. Inputs are validated in Python (cuda/hashgrid.py) before they get here; the checks
// below only guard invariants. No CUDA header is included: the CUDA stream arrives as an integer
// (torch.cuda.current_stream().cuda_stream).
#include <torch/extension.h>

#include <vector>

#include "hashgrid_kernels.h"

namespace {

using hashgrid::Level;

// levels: float64 [L, 5] rows (scale, dense, resolution, size, offset), on the CPU.
std::vector<Level> unpack_levels(const torch::Tensor& levels) {
  TORCH_CHECK(levels.dim() == 2 && levels.size(1) == 5 && levels.scalar_type() == torch::kFloat64 &&
                  levels.device().is_cpu() && levels.size(0) <= hashgrid::kMaxLevels,
              "levels must be a CPU float64 [L<=32, 5] tensor");
  const torch::Tensor table = levels.contiguous();
  const auto acc = table.accessor<double, 2>();
  std::vector<Level> out(levels.size(0));
  for (int64_t l = 0; l < levels.size(0); ++l) {
    out[l].scale = static_cast<float>(acc[l][0]);
    out[l].dense = static_cast<int32_t>(acc[l][1]);
    out[l].resolution = static_cast<int64_t>(acc[l][2]);
    out[l].size = static_cast<int64_t>(acc[l][3]);
    out[l].offset = static_cast<int64_t>(acc[l][4]);
    TORCH_CHECK(out[l].size > 0 && (out[l].dense || (out[l].size & (out[l].size - 1)) == 0),
                "hashed levels must hold a power-of-two number of entries");
  }
  return out;
}

void check_tensor(const torch::Tensor& t, const torch::Device& device, const char* name) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.device() == device, name,
              " must be a contiguous float32 tensor on ", device);
}

#ifdef HG_WITH_CUDA
cudaStream_t as_stream(int64_t stream) { return reinterpret_cast<cudaStream_t>(stream); }
#define HG_CUDA_CALL(call)                                                 \
  do {                                                                     \
    const int err = (call);                                                \
    TORCH_CHECK(err == 0, "hash-grid CUDA kernel launch failed: error ", err); \
  } while (0)
#else
#define HG_CUDA_CALL(call) TORCH_CHECK(false, "this build of the hash-grid extension has no CUDA kernels")
#endif

torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& params, const torch::Tensor& levels,
                      int64_t n_features, int64_t n_threads, int64_t stream) {
  const auto lv = unpack_levels(levels);
  check_tensor(x, x.device(), "x");
  check_tensor(params, x.device(), "params");
  TORCH_CHECK(hashgrid::supported_features(n_features), "n_features must be 1, 2, 4 or 8");
  const int64_t n = x.size(0);
  const int L = static_cast<int>(lv.size());
  auto out = torch::empty({n, L * n_features}, x.options());
  if (x.is_cuda()) {
    HG_CUDA_CALL(hashgrid::forward_cuda(x.data_ptr<float>(), params.data_ptr<float>(),
                                        out.data_ptr<float>(), n, lv.data(), L,
                                        static_cast<int>(n_features), as_stream(stream)));
  } else {
    pybind11::gil_scoped_release no_gil;
    hashgrid::forward_cpu(x.data_ptr<float>(), params.data_ptr<float>(), out.data_ptr<float>(), n,
                          lv.data(), L, static_cast<int>(n_features), static_cast<int>(n_threads));
  }
  return out;
}

torch::Tensor backward_params(const torch::Tensor& x, const torch::Tensor& grad_out,
                              const torch::Tensor& levels, int64_t n_params, int64_t n_features,
                              int64_t n_threads, int64_t stream) {
  const auto lv = unpack_levels(levels);
  check_tensor(x, x.device(), "x");
  check_tensor(grad_out, x.device(), "grad_out");
  const int L = static_cast<int>(lv.size());
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == x.size(0) && grad_out.size(1) == L * n_features,
              "grad_out must be [N, L * F]");
  TORCH_CHECK((lv.back().offset + lv.back().size) * n_features == n_params, "levels do not cover params");
  if (x.is_cuda()) {
    auto grad = torch::zeros({n_params}, x.options());
    HG_CUDA_CALL(hashgrid::backward_params_cuda(x.data_ptr<float>(), grad_out.data_ptr<float>(),
                                                grad.data_ptr<float>(), x.size(0), lv.data(), L,
                                                static_cast<int>(n_features), as_stream(stream)));
    return grad;
  }
  auto grad = torch::empty({n_params}, x.options());  // every level zeroes its own slice
  pybind11::gil_scoped_release no_gil;
  hashgrid::backward_params_cpu(x.data_ptr<float>(), grad_out.data_ptr<float>(), grad.data_ptr<float>(),
                                x.size(0), lv.data(), L, static_cast<int>(n_features),
                                static_cast<int>(n_threads));
  return grad;
}

torch::Tensor backward_input(const torch::Tensor& x, const torch::Tensor& grad_out,
                             const torch::Tensor& params, const torch::Tensor& levels,
                             int64_t n_features, int64_t n_threads, int64_t stream) {
  const auto lv = unpack_levels(levels);
  check_tensor(x, x.device(), "x");
  check_tensor(grad_out, x.device(), "grad_out");
  check_tensor(params, x.device(), "params");
  const int L = static_cast<int>(lv.size());
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == x.size(0) && grad_out.size(1) == L * n_features,
              "grad_out must be [N, L * F]");
  auto grad_x = torch::empty_like(x);
  if (x.is_cuda()) {
    HG_CUDA_CALL(hashgrid::backward_input_cuda(x.data_ptr<float>(), grad_out.data_ptr<float>(),
                                               params.data_ptr<float>(), grad_x.data_ptr<float>(),
                                               x.size(0), lv.data(), L, static_cast<int>(n_features),
                                               as_stream(stream)));
    return grad_x;
  }
  pybind11::gil_scoped_release no_gil;
  hashgrid::backward_input_cpu(x.data_ptr<float>(), grad_out.data_ptr<float>(), params.data_ptr<float>(),
                               grad_x.data_ptr<float>(), x.size(0), lv.data(), L,
                               static_cast<int>(n_features), static_cast<int>(n_threads));
  return grad_x;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Multiresolution hash encoding kernels (CPU, and CUDA when built with it)";
  m.def("forward", &forward, "x [N,3], params [P], levels [L,5] -> [N, L*F]");
  m.def("backward_params", &backward_params, "d loss / d params [P]");
  m.def("backward_input", &backward_input, "d loss / d x [N, 3]");
#ifdef HG_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
