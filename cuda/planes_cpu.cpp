// The tri-plane lookup of the image student on the CPU (C++/OpenMP), with its backward into the planes.
// Twin of student.planes.sample_planes (PyTorch's grid_sample: bilinear, zero padding,
// align_corners=False), which stays the reference and what the exported graph computes.
//
// Layouts (validated in Python, cuda/planes.py, before anything gets here):
//   points [N, 3] float32, the box's normalised frame [-1, 1]^3;
//   planes [3, R, R, C] float32, channels last (the xy, xz and yz planes; row y, column x);
//   out    [N, C] float32, the sum of the three planes' bilinear reads.
// Plane p reads the point's coordinates (a, b) = (0, 1), (0, 2), (1, 2) as (x: column, y: row).
//
// The backward into the planes gives each thread whole rows of texels (over the three planes): every
// thread walks all points and adds only the corners in its rows. No atomics, no per-thread copies of the
// planes, and each texel sums its points in point order, so the result does not depend on the number of
// threads.
#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace {

constexpr int kAxes[3][2] = {{0, 1}, {0, 2}, {1, 2}};

struct Corners {
  int64_t x0, y0;   // the lower corner (texel indices; may lie outside 0 .. R-1)
  float wx1, wy1;   // the weights of x0 + 1 and y0 + 1 (those of x0 and y0: 1 - w)
  bool any;         // whether any corner can lie inside
};

// grid_sample's align_corners=False unnormalisation: texel centres at (i + 0.5) / R * 2 - 1.
inline Corners corners(float gx, float gy, int64_t R) {
  Corners c{};
  const float px = ((gx + 1.f) * static_cast<float>(R) - 1.f) / 2.f;
  const float py = ((gy + 1.f) * static_cast<float>(R) - 1.f) / 2.f;
  const float lim = static_cast<float>(R) + 1.f;
  c.any = px > -2.f && px < lim && py > -2.f && py < lim;  // also false for NaN
  if (!c.any) return c;
  const float fx = std::floor(px), fy = std::floor(py);
  c.x0 = static_cast<int64_t>(fx);
  c.y0 = static_cast<int64_t>(fy);
  c.wx1 = px - fx;
  c.wy1 = py - fy;
  return c;
}

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(), name,
              " must be a contiguous float32 CPU tensor");
}

torch::Tensor forward(const torch::Tensor& points, const torch::Tensor& planes, int64_t n_threads) {
  check(points, "points");
  check(planes, "planes");
  TORCH_CHECK(points.dim() == 2 && points.size(1) == 3, "points must be [N, 3]");
  TORCH_CHECK(planes.dim() == 4 && planes.size(0) == 3 && planes.size(1) == planes.size(2),
              "planes must be [3, R, R, C]");
  const int64_t n = points.size(0), R = planes.size(1), C = planes.size(3);
  auto out = torch::zeros({n, C}, points.options());
  const float* pts = points.data_ptr<float>();
  const float* tab = planes.data_ptr<float>();
  float* o = out.data_ptr<float>();
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel for num_threads(static_cast<int>(n_threads)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float* dst = o + i * C;
    for (int p = 0; p < 3; ++p) {
      const Corners c = corners(pts[i * 3 + kAxes[p][0]], pts[i * 3 + kAxes[p][1]], R);
      if (!c.any) continue;
      for (int dy = 0; dy < 2; ++dy) {
        const int64_t y = c.y0 + dy;
        if (y < 0 || y >= R) continue;
        const float wy = dy ? c.wy1 : 1.f - c.wy1;
        for (int dx = 0; dx < 2; ++dx) {
          const int64_t x = c.x0 + dx;
          if (x < 0 || x >= R) continue;
          const float w = (dx ? c.wx1 : 1.f - c.wx1) * wy;
          const float* src = tab + ((p * R + y) * R + x) * C;
          for (int64_t k = 0; k < C; ++k) dst[k] += w * src[k];
        }
      }
    }
  }
  return out;
}

torch::Tensor backward(const torch::Tensor& points, const torch::Tensor& grad_out, int64_t R,
                       int64_t n_threads) {
  check(points, "points");
  check(grad_out, "grad_out");
  TORCH_CHECK(points.dim() == 2 && points.size(1) == 3, "points must be [N, 3]");
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == points.size(0), "grad_out must be [N, C]");
  const int64_t n = points.size(0), C = grad_out.size(1);
  auto grad = torch::zeros({3, R, R, C}, grad_out.options());
  const float* pts = points.data_ptr<float>();
  const float* g = grad_out.data_ptr<float>();
  float* dst = grad.data_ptr<float>();
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(n_threads, 3 * R)));
  pybind11::gil_scoped_release no_gil;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t rows = 3 * R;  // texel rows of the three planes, in order
    const int64_t lo = rows * t / nt, hi = rows * (t + 1) / nt;  // this thread's rows: [lo, hi)
    for (int64_t i = 0; i < n; ++i) {
      const float* gi = g + i * C;
      for (int p = 0; p < 3; ++p) {
        if ((p + 1) * R <= lo || p * R >= hi) continue;
        const Corners c = corners(pts[i * 3 + kAxes[p][0]], pts[i * 3 + kAxes[p][1]], R);
        if (!c.any) continue;
        for (int dy = 0; dy < 2; ++dy) {
          const int64_t y = c.y0 + dy;
          const int64_t row = p * R + y;
          if (y < 0 || y >= R || row < lo || row >= hi) continue;
          const float wy = dy ? c.wy1 : 1.f - c.wy1;
          for (int dx = 0; dx < 2; ++dx) {
            const int64_t x = c.x0 + dx;
            if (x < 0 || x >= R) continue;
            const float w = (dx ? c.wx1 : 1.f - c.wx1) * wy;
            float* texel = dst + (row * R + x) * C;
            for (int64_t k = 0; k < C; ++k) texel[k] += w * gi[k];
          }
        }
      }
    }
  }
  return grad;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "tri-plane bilinear lookup: points [N, 3], planes [3, R, R, C] -> [N, C]");
  m.def("backward", &backward, "its gradient into the planes: points [N, 3], grad_out [N, C] -> [3, R, R, C]");
}
