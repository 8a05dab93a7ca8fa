// The discriminator blocks (downBlock, Block3x3_leakRelu, encode_image_by_16times, jointConv) as
// one fused op: conv (no bias, square kernel, any stride / padding) [+ addend] [-> BatchNorm2d]
// -> LeakyReLU. The device-agnostic part; the device files provide the epilogue kernels.
//
// The convolution (ATen: oneDNN / cuDNN; on the CPU its backward by GEMMs over im2col rows for
// output maps of at most 16 pixels) gives y in x's memory format, and every epilogue kernel walks y,
// the output and the gradients in that one layout, seen as (outer, C, inner): NCHW (N, C, H*W),
// NHWC (N*H*W, C, 1).
//
//   forward, BatchNorm:  stats (training) -> out = lrelu(y * scale + shift)            two passes
//   forward, no BN:      out = lrelu(y) in place in y                                  one pass
//   backward, BatchNorm: dz = g * lrelu'(z), z = y * scale + shift;
//                        reduce r1 = sum dz, r2 = sum dz * (y - mean)                  one pass
//                        grad_y = A * dz + B * (y - mean) + D                          one pass
//   backward, no BN:     grad_y = g * lrelu'(out)   (sign(out) = sign(y) for a positive slope)
//
// The device files provide a `Kernels` struct (CpuDownKernels in cpu/down_blocks.cpp,
// CudaDownKernels in cuda/down_blocks.cu); vectors are (C,) in the opmath dtype, dense:
//   conv(x, weight, stride, padding)        y in x's memory format (dense)
//   conv_backward(grad_y, x, weight, stride, padding, need_x, need_w)
//        (grad_x in x's memory format, grad_weight contiguous); undefined where not needed
//   channel_stats(y, v, mean, var)                          batch mean and biased variance
//   forward_apply(y, v, scale, shift, slope, out)           out = lrelu(y * scale + shift); out may be y
//   backward_reduce(g, y, v, scale, shift, center, slope, r1, r2)
//        r1 = sum dz, r2 = sum dz * (y - center), dz = g * lrelu'(y * scale + shift)
//   backward_apply(g, y, v, scale, shift, center, A, B, D, slope, grad_y)
//        grad_y = A * dz + B * (y - center) + D
#pragma once

#include "blocks.h"

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace attngan_fast {
namespace down_blocks {

using blocks::opmath_dtype;

// A dense NCHW or NHWC tensor as (outer, C, inner): element (o, c, i) at (o * C + c) * inner + i.
struct ChannelView {
  int64_t outer, C, inner;
  int64_t count() const { return outer * inner; }  // elements per channel
};

inline ChannelView channel_view(const at::Tensor& y) {
  const int64_t hw = y.size(2) * y.size(3);
  if (blocks::is_channels_last(y)) return {y.size(0) * hw, y.size(1), 1};
  return {y.size(0), y.size(1), hw};
}

// `t` with exactly the strides of `like` (a copy when they differ).
inline at::Tensor same_layout(const at::Tensor& t, const at::Tensor& like) {
  if (t.strides() == like.strides()) return t;
  return at::empty_like(like).copy_(t);
}

inline void check_down_block_input(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding,
                                   const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == weight.size(3), op, ": weight must be (Co, Ci, K, K), got ",
              weight.sizes());
  TORCH_CHECK(weight.size(1) == x.size(1), op, ": weight has ", weight.size(1), " input channels, x has ", x.size(1));
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), op, ": x and weight dtypes differ");
  TORCH_CHECK(x.device() == weight.device(), op, ": x and weight devices differ");
  TORCH_CHECK(stride >= 1 && padding >= 0, op, ": expected stride >= 1 and padding >= 0, got ", stride, " and ",
              padding);
}

// x as a dense tensor of its own memory format.
inline at::Tensor conv_input(const at::Tensor& x) {
  return blocks::dense(x, blocks::caller_format(x));
}

// The ATen convolution (oneDNN / cuDNN), y in x's memory format.
inline at::Tensor aten_conv(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  const std::vector<int64_t> s{stride, stride}, p{padding, padding}, one{1, 1}, zero{0, 0};
  const at::Tensor xd = conv_input(x);
  return blocks::dense(at::convolution(xd, weight, {}, s, p, one, false, zero, 1), blocks::caller_format(x));
}

inline std::tuple<at::Tensor, at::Tensor> aten_conv_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                             const at::Tensor& weight, int64_t stride, int64_t padding,
                                                             bool need_x, bool need_w) {
  const std::vector<int64_t> s{stride, stride}, p{padding, padding}, one{1, 1}, zero{0, 0};
  auto grads = at::convolution_backward(grad_y, conv_input(x), weight, c10::nullopt, s, p, one, false, zero, 1,
                                        {need_x, need_w, false});
  at::Tensor gx = std::get<0>(grads), gw = std::get<1>(grads);
  return {need_x ? blocks::dense(gx, blocks::caller_format(x)) : gx, need_w ? gw.contiguous() : gw};
}

// ---------------------------------------------------------------------------------------------
// down_block: x (N, Ci, H, W), weight (Co, Ci, K, K) -> out (N, Co, Ho, Wo) in x's memory format.
// Returns (out, conv_out, mean (Co,), var (Co,)): with BatchNorm, conv_out is y (= conv + addend,
// the BatchNorm input) and mean / var the batch statistics (biased var) when training, else
// copies of the running statistics; without BatchNorm all three are empty (0,) tensors (the
// backward reads the output instead).

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> down_block(
    const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& addend,
    const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var, int64_t stride,
    int64_t padding, bool training, double eps, double negative_slope) {
  check_down_block_input(x, weight, stride, padding, "down_block");
  at::Tensor y = K::conv(x, weight, stride, padding);
  if (addend.has_value()) {
    TORCH_CHECK(addend->sizes() == y.sizes(), "down_block: addend must have the conv output's shape ", y.sizes(),
                ", got ", addend->sizes());
    y.add_(*addend);
  }
  const ChannelView v = channel_view(y);
  const at::ScalarType acc_type = opmath_dtype(y);
  const auto acc = y.options().dtype(acc_type);
  const at::Tensor none = at::empty({0}, acc);
  if (!bn_weight.has_value()) {
    K::forward_apply(y, v, at::ones({v.C}, acc), at::zeros({v.C}, acc), negative_slope, y);
    return {y, at::empty({0}, y.options()), none, none.clone()};
  }
  TORCH_CHECK(bn_bias.has_value(), "down_block: bn_bias is required with bn_weight");
  TORCH_CHECK(bn_weight->numel() == v.C && bn_bias->numel() == v.C, "down_block: BatchNorm weight and bias must have ",
              v.C, " elements");
  at::Tensor mean, var;
  if (training) {
    TORCH_CHECK(v.count() > 1, "down_block: expected more than 1 value per channel when training, got ", v.count());
    mean = at::empty({v.C}, acc);
    var = at::empty({v.C}, acc);
    K::channel_stats(y, v, mean, var);
  } else {
    TORCH_CHECK(running_mean.has_value() && running_var.has_value(),
                "down_block: running_mean and running_var are required when not training");
    TORCH_CHECK(running_mean->numel() == v.C && running_var->numel() == v.C, "down_block: running stats must have ",
                v.C, " elements");
    mean = running_mean->to(acc_type, /*non_blocking=*/false, /*copy=*/true);
    var = running_var->to(acc_type, /*non_blocking=*/false, /*copy=*/true);
  }
  const at::Tensor scale = bn_weight->to(acc_type) * at::rsqrt(var + eps);
  const at::Tensor shift = bn_bias->to(acc_type) - mean * scale;
  at::Tensor out = at::empty_like(y);
  K::forward_apply(y, v, scale, shift, negative_slope, out);
  return {out, y, mean, var};
}

// Backward: saved is conv_out with BatchNorm, the forward's output without. output_mask: the
// gradients wanted for (x, weight, addend); the others come back as empty (0,) tensors.
// Returns (grad_x, grad_weight, grad_bn_weight, grad_bn_bias, grad_addend); without BatchNorm
// the BatchNorm grads are empty.
template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> down_block_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const c10::optional<at::Tensor>& bn_weight, const c10::optional<at::Tensor>& bn_bias, const at::Tensor& saved,
    const at::Tensor& mean, const at::Tensor& var, int64_t stride, int64_t padding, bool training, double eps,
    double negative_slope, std::array<bool, 3> output_mask) {
  check_down_block_input(x, weight, stride, padding, "down_block_backward");
  TORCH_CHECK(saved.dim() == 4 && grad_out.sizes() == saved.sizes(), "down_block_backward: grad_out has shape ",
              grad_out.sizes(), ", the saved tensor ", saved.sizes());
  const at::Tensor y = blocks::dense(saved, blocks::caller_format(saved));
  const at::Tensor g = same_layout(grad_out.to(y.scalar_type()), y);
  const ChannelView v = channel_view(y);
  const at::ScalarType acc_type = opmath_dtype(y);
  const auto acc = y.options().dtype(acc_type);
  at::Tensor grad_y = at::empty_like(y), grad_gamma = at::empty({0}, acc), grad_beta = at::empty({0}, acc);
  if (!bn_weight.has_value()) {
    const at::Tensor ones = at::ones({v.C}, acc), zeros = at::zeros({v.C}, acc);
    K::backward_apply(g, y, v, ones, zeros, zeros, ones, zeros, zeros, negative_slope, grad_y);
  } else {
    TORCH_CHECK(bn_bias.has_value(), "down_block_backward: bn_bias is required with bn_weight");
    const at::Tensor invstd = at::rsqrt(var.to(acc_type) + eps);
    const at::Tensor center = mean.to(acc_type);
    const at::Tensor scale = bn_weight->to(acc_type) * invstd;
    const at::Tensor shift = bn_bias->to(acc_type) - center * scale;
    at::Tensor r1 = at::empty({v.C}, acc), r2 = at::empty({v.C}, acc);
    K::backward_reduce(g, y, v, scale, shift, center, negative_slope, r1, r2);
    grad_beta = r1;
    grad_gamma = r2 * invstd;
    at::Tensor B, D;
    if (training) {  // dy = scale * (dz - (grad_beta + xhat * grad_gamma) / M), xhat = (y - mean) * invstd
      const double inv_m = 1.0 / static_cast<double>(v.count());
      B = -(scale * invstd * grad_gamma) * inv_m;
      D = -(scale * grad_beta) * inv_m;
    } else {
      B = at::zeros_like(scale);
      D = at::zeros_like(scale);
    }
    K::backward_apply(g, y, v, scale, shift, center, scale, B, D, negative_slope, grad_y);
    grad_gamma = grad_gamma.to(bn_weight->scalar_type());
    grad_beta = grad_beta.to(bn_weight->scalar_type());
  }
  at::Tensor grad_x = at::empty({0}, x.options()), grad_w = at::empty({0}, weight.options());
  if (output_mask[0] || output_mask[1]) {
    auto [gx, gw] = K::conv_backward(grad_y, x, weight, stride, padding, output_mask[0], output_mask[1]);
    if (output_mask[0]) grad_x = gx;
    if (output_mask[1]) grad_w = gw;
  }
  return {grad_x, grad_w, grad_gamma, grad_beta, output_mask[2] ? grad_y : at::empty({0}, y.options())};
}

}  // namespace down_blocks
}  // namespace attngan_fast
