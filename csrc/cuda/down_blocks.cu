// The discriminator blocks on CUDA: batch statistics and the fused BatchNorm + LeakyReLU
// epilogues (see down_blocks.h; the convolutions run through ATen / cuDNN in x's memory format).
//
// The tensors are seen as (outer, C, inner) (NCHW: inner = H*W; NHWC: inner = 1). Elementwise
// kernels walk every element with a grid-stride loop (channel (e / inner) % C). Reductions run a
// grid of (chunks, C) blocks of kThreads: each block sums one channel over a strided share of its
// M = outer * inner values in double, reduces in shared memory (a __syncthreads tree) and adds
// its partial sums with one atomicAdd per sum; a finalize kernel turns the sums into the results.
// Each kernel has one small launcher (launch_*).
#include "down_blocks.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace attngan_fast {
namespace down_blocks {
namespace {

constexpr int kThreads = 256;

template <typename acc_t>
__device__ inline acc_t leaky(acc_t z, acc_t slope) {
  return z > acc_t(0) ? z : z * slope;
}

template <typename acc_t>
__device__ inline acc_t leaky_grad(acc_t z, acc_t slope) {
  return z > acc_t(0) ? acc_t(1) : slope;
}

// Element k of channel c: k = o * inner + i.
__device__ inline int64_t channel_offset(int64_t k, int64_t c, int64_t C, int64_t inner) {
  return ((k / inner) * C + c) * inner + k % inner;
}

// Sums `a` and `b` over the block (blockDim.x == kThreads); thread 0 adds them to *out_a, *out_b.
__device__ inline void block_sum_add(double a, double b, double* out_a, double* out_b) {
  __shared__ double sa[kThreads], sb[kThreads];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) {
      sa[threadIdx.x] += sa[threadIdx.x + half];
      sb[threadIdx.x] += sb[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(out_a, sa[0]);
    atomicAdd(out_b, sb[0]);
  }
}

// (chunks, C) blocks for a per-channel reduction over M values.
dim3 reduction_grid(int64_t M, int64_t C) {
  const int64_t chunks = std::min<int64_t>(std::max<int64_t>(1, (M + kThreads * 16 - 1) / (kThreads * 16)), 1024);
  return dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(C));
}

int elementwise_blocks(int64_t total) {
  return static_cast<int>(std::min<int64_t>(std::max<int64_t>(1, (total + kThreads - 1) / kThreads), 65535));
}

// ---- batch statistics: sums of (y - k) and (y - k)^2 about the pivot k = the channel's first value

template <typename T>
__global__ void stats_kernel(const T* __restrict__ y, int64_t C, int64_t inner, int64_t M, double* __restrict__ sums) {
  const int64_t c = blockIdx.y;
  const double k = static_cast<double>(y[c * inner]);
  double s = 0, q = 0;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < M;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const double d = static_cast<double>(y[channel_offset(e, c, C, inner)]) - k;
    s += d;
    q += d * d;
  }
  block_sum_add(s, q, sums + c, sums + C + c);
}

template <typename T>
__global__ void stats_finalize_kernel(const T* __restrict__ y, const double* __restrict__ sums, int64_t C,
                                      int64_t inner, double inv_m, at::opmath_type<T>* __restrict__ mean,
                                      at::opmath_type<T>* __restrict__ var) {
  using acc_t = at::opmath_type<T>;
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const double d = sums[c] * inv_m;
  mean[c] = static_cast<acc_t>(static_cast<double>(y[c * inner]) + d);
  var[c] = static_cast<acc_t>(fmax(sums[C + c] * inv_m - d * d, 0.0));
}

template <typename T>
void launch_stats(const at::Tensor& y, const ChannelView& v, const at::Tensor& sums, cudaStream_t stream) {
  stats_kernel<T><<<reduction_grid(v.count(), v.C), kThreads, 0, stream>>>(
      y.const_data_ptr<T>(), v.C, v.inner, v.count(), sums.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void launch_stats_finalize(const at::Tensor& y, const ChannelView& v, const at::Tensor& sums, const at::Tensor& mean,
                           const at::Tensor& var, cudaStream_t stream) {
  using acc_t = at::opmath_type<T>;
  stats_finalize_kernel<T><<<elementwise_blocks(v.C), kThreads, 0, stream>>>(
      y.const_data_ptr<T>(), sums.const_data_ptr<double>(), v.C, v.inner, 1.0 / static_cast<double>(v.count()),
      mean.mutable_data_ptr<acc_t>(), var.mutable_data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- forward epilogue: out = lrelu(y * scale + shift); out may be y (same-index aliasing only) --

template <typename T>
__global__ void forward_kernel(const T* y, const at::opmath_type<T>* __restrict__ scale,
                               const at::opmath_type<T>* __restrict__ shift, at::opmath_type<T> slope, int64_t C,
                               int64_t inner, int64_t total, T* out) {
  using acc_t = at::opmath_type<T>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (e / inner) % C;
    out[e] = static_cast<T>(leaky(static_cast<acc_t>(y[e]) * scale[c] + shift[c], slope));
  }
}

template <typename T>
void launch_forward(const at::Tensor& y, const ChannelView& v, const at::Tensor& scale, const at::Tensor& shift,
                    double slope, const at::Tensor& out, cudaStream_t stream) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = y.numel();
  forward_kernel<T><<<elementwise_blocks(total), kThreads, 0, stream>>>(
      y.const_data_ptr<T>(), scale.const_data_ptr<acc_t>(), shift.const_data_ptr<acc_t>(), static_cast<acc_t>(slope),
      v.C, v.inner, total, out.mutable_data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- backward: dz = g * lrelu'(y * scale + shift) -----------------------------------------------

template <typename T>
__global__ void reduce_kernel(const T* __restrict__ g, const T* __restrict__ y,
                              const at::opmath_type<T>* __restrict__ scale, const at::opmath_type<T>* __restrict__ shift,
                              const at::opmath_type<T>* __restrict__ center, at::opmath_type<T> slope, int64_t C,
                              int64_t inner, int64_t M, double* __restrict__ sums) {
  using acc_t = at::opmath_type<T>;
  const int64_t c = blockIdx.y;
  const acc_t a = scale[c], b = shift[c], m = center[c];
  double s1 = 0, s2 = 0;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; e < M;
       e += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t off = channel_offset(e, c, C, inner);
    const acc_t yv = static_cast<acc_t>(y[off]);
    const acc_t dz = static_cast<acc_t>(g[off]) * leaky_grad(yv * a + b, slope);
    s1 += static_cast<double>(dz);
    s2 += static_cast<double>(dz * (yv - m));
  }
  block_sum_add(s1, s2, sums + c, sums + C + c);
}

template <typename acc_t>
__global__ void sums_to_acc_kernel(const double* __restrict__ sums, int64_t C, acc_t* __restrict__ r1,
                                   acc_t* __restrict__ r2) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  r1[c] = static_cast<acc_t>(sums[c]);
  r2[c] = static_cast<acc_t>(sums[C + c]);
}

template <typename T>
void launch_reduce(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                   const at::Tensor& shift, const at::Tensor& center, double slope, const at::Tensor& sums,
                   cudaStream_t stream) {
  using acc_t = at::opmath_type<T>;
  reduce_kernel<T><<<reduction_grid(v.count(), v.C), kThreads, 0, stream>>>(
      g.const_data_ptr<T>(), y.const_data_ptr<T>(), scale.const_data_ptr<acc_t>(), shift.const_data_ptr<acc_t>(),
      center.const_data_ptr<acc_t>(), static_cast<acc_t>(slope), v.C, v.inner, v.count(),
      sums.mutable_data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename acc_t>
void launch_sums_to_acc(const at::Tensor& sums, int64_t C, const at::Tensor& r1, const at::Tensor& r2,
                        cudaStream_t stream) {
  sums_to_acc_kernel<acc_t><<<elementwise_blocks(C), kThreads, 0, stream>>>(
      sums.const_data_ptr<double>(), C, r1.mutable_data_ptr<acc_t>(), r2.mutable_data_ptr<acc_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad_y = A * dz + B * (y - center) + D.
template <typename T>
__global__ void apply_kernel(const T* __restrict__ g, const T* __restrict__ y,
                             const at::opmath_type<T>* __restrict__ scale, const at::opmath_type<T>* __restrict__ shift,
                             const at::opmath_type<T>* __restrict__ center, const at::opmath_type<T>* __restrict__ A,
                             const at::opmath_type<T>* __restrict__ B, const at::opmath_type<T>* __restrict__ D,
                             at::opmath_type<T> slope, int64_t C, int64_t inner, int64_t total, T* __restrict__ gy) {
  using acc_t = at::opmath_type<T>;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = (e / inner) % C;
    const acc_t yv = static_cast<acc_t>(y[e]);
    const acc_t dz = static_cast<acc_t>(g[e]) * leaky_grad(yv * scale[c] + shift[c], slope);
    gy[e] = static_cast<T>(A[c] * dz + B[c] * (yv - center[c]) + D[c]);
  }
}

template <typename T>
void launch_apply(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                  const at::Tensor& shift, const at::Tensor& center, const at::Tensor& A, const at::Tensor& B,
                  const at::Tensor& D, double slope, const at::Tensor& grad_y, cudaStream_t stream) {
  using acc_t = at::opmath_type<T>;
  const int64_t total = y.numel();
  apply_kernel<T><<<elementwise_blocks(total), kThreads, 0, stream>>>(
      g.const_data_ptr<T>(), y.const_data_ptr<T>(), scale.const_data_ptr<acc_t>(), shift.const_data_ptr<acc_t>(),
      center.const_data_ptr<acc_t>(), A.const_data_ptr<acc_t>(), B.const_data_ptr<acc_t>(), D.const_data_ptr<acc_t>(),
      static_cast<acc_t>(slope), v.C, v.inner, total, grad_y.mutable_data_ptr<T>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// ---- the Kernels interface of down_blocks.h --------------------------------------------------

struct CudaDownKernels {
  static at::Tensor conv(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
    return aten_conv(x, weight, stride, padding);
  }

  static std::tuple<at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                          const at::Tensor& weight, int64_t stride, int64_t padding,
                                                          bool need_x, bool need_w) {
    return aten_conv_backward(grad_y, x, weight, stride, padding, need_x, need_w);
  }

  static void channel_stats(const at::Tensor& y, const ChannelView& v, const at::Tensor& mean, const at::Tensor& var) {
    const c10::cuda::CUDAGuard guard(y.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    at::Tensor sums = at::zeros({2 * v.C}, y.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_stats_cuda", [&] {
      launch_stats<scalar_t>(y, v, sums, stream);
      launch_stats_finalize<scalar_t>(y, v, sums, mean, var, stream);
    });
  }

  static void forward_apply(const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                            const at::Tensor& shift, double slope, const at::Tensor& out) {
    if (y.numel() == 0) return;
    const c10::cuda::CUDAGuard guard(y.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_forward_cuda", [&] {
      launch_forward<scalar_t>(y, v, scale.contiguous(), shift.contiguous(), slope, out, stream);
    });
  }

  static void backward_reduce(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                              const at::Tensor& shift, const at::Tensor& center, double slope, const at::Tensor& r1,
                              const at::Tensor& r2) {
    const c10::cuda::CUDAGuard guard(y.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    at::Tensor sums = at::zeros({2 * v.C}, y.options().dtype(at::kDouble));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_reduce_cuda", [&] {
      if (v.count() > 0) {
        launch_reduce<scalar_t>(g, y, v, scale.contiguous(), shift.contiguous(), center.contiguous(), slope, sums,
                                stream);
      }
      launch_sums_to_acc<at::opmath_type<scalar_t>>(sums, v.C, r1, r2, stream);
    });
  }

  static void backward_apply(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                             const at::Tensor& shift, const at::Tensor& center, const at::Tensor& A,
                             const at::Tensor& B, const at::Tensor& D, double slope, const at::Tensor& grad_y) {
    if (y.numel() == 0) return;
    const c10::cuda::CUDAGuard guard(y.device());
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_apply_cuda", [&] {
      launch_apply<scalar_t>(g, y, v, scale.contiguous(), shift.contiguous(), center.contiguous(), A.contiguous(),
                             B.contiguous(), D.contiguous(), slope, grad_y, stream);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CUDA, m) {
  m.impl("down_block", &down_block<CudaDownKernels>);
  m.impl("down_block_backward", &down_block_backward<CudaDownKernels>);
}

}  // namespace down_blocks
}  // namespace attngan_fast
