// GLU over dim 1 on the CPU: out = a * sigmoid(b) with (a, b) the channel halves.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

namespace attngan_fast {
namespace {

// x viewed as (outer, 2 * half, inner); one task per (n, c) row of `inner` contiguous elements.
struct GluGeometry {
  int64_t outer;
  int64_t half;
  int64_t inner;
};

GluGeometry glu_geometry(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "glu: x must have at least 2 dims, got ", x.dim());
  TORCH_CHECK(x.size(1) % 2 == 0, "glu: x.size(1) must be even, got ", x.size(1));
  const int64_t inner = x.size(0) * x.size(1) == 0 ? 0 : x.numel() / (x.size(0) * x.size(1));
  return {x.size(0), x.size(1) / 2, inner};
}

std::vector<int64_t> half_sizes(const at::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes[1] /= 2;
  return sizes;
}

template <typename scalar_t>
void glu_forward_rows(const scalar_t* x, scalar_t* out, const GluGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, g.outer * g.half, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.half, c = row % g.half;
      const scalar_t* a = x + (n * 2 * g.half + c) * g.inner;
      const scalar_t* b = a + g.half * g.inner;
      scalar_t* o = out + row * g.inner;
#pragma omp simd
      for (int64_t i = 0; i < g.inner; ++i) {
        o[i] = static_cast<scalar_t>(static_cast<acc_t>(a[i]) / (acc_t(1) + std::exp(-static_cast<acc_t>(b[i]))));
      }
    }
  });
}

template <typename scalar_t>
void glu_backward_rows(const scalar_t* grad, const scalar_t* x, scalar_t* grad_x, const GluGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, g.outer * g.half, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / g.half, c = row % g.half;
      const int64_t a_off = (n * 2 * g.half + c) * g.inner, b_off = a_off + g.half * g.inner;
      const scalar_t* go = grad + row * g.inner;
#pragma omp simd
      for (int64_t i = 0; i < g.inner; ++i) {
        const acc_t a = static_cast<acc_t>(x[a_off + i]);
        const acc_t s = acc_t(1) / (acc_t(1) + std::exp(-static_cast<acc_t>(x[b_off + i])));
        const acc_t gv = static_cast<acc_t>(go[i]);
        grad_x[a_off + i] = static_cast<scalar_t>(gv * s);
        grad_x[b_off + i] = static_cast<scalar_t>(gv * a * s * (acc_t(1) - s));
      }
    }
  });
}

at::Tensor glu_cpu(const at::Tensor& x_in) {
  const auto g = glu_geometry(x_in);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty(half_sizes(x), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "glu_cpu", [&] {
    glu_forward_rows<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g);
  });
  return out;
}

at::Tensor glu_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x_in) {
  const auto g = glu_geometry(x_in);
  TORCH_CHECK(grad_in.sizes() == at::IntArrayRef(half_sizes(x_in)), "glu_backward: grad_out has shape ",
              grad_in.sizes(), ", expected ", at::IntArrayRef(half_sizes(x_in)));
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.contiguous().to(x.scalar_type());
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "glu_backward_cpu", [&] {
    glu_backward_rows<scalar_t>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                grad_x.mutable_data_ptr<scalar_t>(), g);
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CPU, m) {
  m.impl("glu", &glu_cpu);
  m.impl("glu_backward", &glu_backward_cpu);
}

}  // namespace attngan_fast
