// GLU over dim 1 on CUDA: out = a * sigmoid(b) with (a, b) the channel halves.
// (CUDA sources include c10/cuda headers, not ATen/cuda/CUDAContext.h: that one pulls in cuBLAS and
// cuSPARSE headers which a minimal CUDA toolkit lacks.)
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace attngan_fast {
namespace {

constexpr int kThreads = 256;

int64_t glu_inner(const at::Tensor& x) {
  TORCH_CHECK(x.dim() >= 2, "glu: x must have at least 2 dims, got ", x.dim());
  TORCH_CHECK(x.size(1) % 2 == 0, "glu: x.size(1) must be even, got ", x.size(1));
  return x.size(1) == 0 ? 0 : x.numel() / (x.size(0) * x.size(1));
}

// Element e of the output is (n, c, i) with e = (n * half + c) * inner + i.
template <typename scalar_t>
__global__ void glu_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, int64_t total,
                                   int64_t half, int64_t inner) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, row = e / inner;
    const int64_t n = row / half, c = row % half;
    const int64_t a_off = (n * 2 * half + c) * inner + i;
    const acc_t b = static_cast<acc_t>(x[a_off + half * inner]);
    out[e] = static_cast<scalar_t>(static_cast<acc_t>(x[a_off]) / (acc_t(1) + ::exp(-b)));
  }
}

template <typename scalar_t>
__global__ void glu_backward_kernel(const scalar_t* __restrict__ grad, const scalar_t* __restrict__ x,
                                    scalar_t* __restrict__ grad_x, int64_t total, int64_t half, int64_t inner) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e % inner, row = e / inner;
    const int64_t n = row / half, c = row % half;
    const int64_t a_off = (n * 2 * half + c) * inner + i, b_off = a_off + half * inner;
    const acc_t a = static_cast<acc_t>(x[a_off]);
    const acc_t s = acc_t(1) / (acc_t(1) + ::exp(-static_cast<acc_t>(x[b_off])));
    const acc_t g = static_cast<acc_t>(grad[e]);
    grad_x[a_off] = static_cast<scalar_t>(g * s);
    grad_x[b_off] = static_cast<scalar_t>(g * a * s * (acc_t(1) - s));
  }
}

int blocks_for(int64_t total) {
  return static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535));
}

at::Tensor glu_cuda(const at::Tensor& x_in) {
  const int64_t inner = glu_inner(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  auto sizes = x.sizes().vec();
  sizes[1] /= 2;
  at::Tensor out = at::empty(sizes, x.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "glu_cuda", [&] {
    glu_forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total, sizes[1], inner);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor glu_backward_cuda(const at::Tensor& grad_in, const at::Tensor& x_in) {
  const int64_t inner = glu_inner(x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor grad = grad_in.contiguous().to(x.scalar_type());
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  const int64_t total = grad.numel();
  if (total == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "glu_backward_cuda", [&] {
    glu_backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(), total,
        x.size(1) / 2, inner);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CUDA, m) {
  m.impl("glu", &glu_cuda);
  m.impl("glu_backward", &glu_backward_cuda);
}

}  // namespace attngan_fast
