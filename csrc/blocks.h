// The generator blocks (upBlock, Block3x3_relu, ResBlock) as fused ops: the device-agnostic part.
//
// Phase algebra. Nearest 2x upsampling then a 3x3 convolution (padding 1) reads, for the output
// pixel (2p + a, 2t + b), the upsampled rows 2p + a - 1 + i (i = 0, 1, 2), i.e. the input rows
// floor((2p + a - 1 + i) / 2):  a = 0 -> p-1, p, p   and   a = 1 -> p, p, p+1.
// Upsampled row -1 (row 2H) is the zero padding, and so is its source row -1 (row H): the borders
// agree. So phase (a, b) is a 2x2 convolution of the *original* input with rows {p-1+a, p+a},
// columns {t-1+b, t+b}, and taps K_ab = T_a W T_b^T with the row folds
//   T_0 = [[1, 0, 0], [0, 1, 1]]   (taps {w0, w1 + w2})
//   T_1 = [[1, 1, 0], [0, 0, 1]]   (taps {w0 + w1, w2}).
// 16 multiply-adds per input pixel and channel pair instead of 36; the upsampled tensor is never
// built. The weight gradient folds back: dW = sum_ab T_a^T dK_ab T_b.
//
// Two ways to run the four phase convolutions, by map size:
//  - "conv" (large maps): ONE 2x2 convolution with padding 1 and 4*Co output channels (phase-major,
//    channel (2a + b) * Co + o). Its output has (H+1) x (W+1) positions; phase (a, b) is the window
//    [a : a+H, b : b+W] (x (H+1)(W+1)/HW work for the unused border row and column).
//  - "gemm" (H*W <= 64, where oneDNN's 2x2 convolutions are slow): per phase, an im2col matrix
//    (N*H*W, 4*Ci) times K_ab^T; exactly 16 multiply-adds. One phase at a time, so that the
//    im2col buffer (4x the input) is reused.
//
// Every conv output ("y") is channels_last. The epilogues (device kernels) walk the output positions
// (n, r, u) of the S*H x S*W map (S = 2 upsampled, 1 plain 3x3 conv) and find the Co channels of
// each, contiguous, at PhaseLayout::offset(n, r, u).
//
// The device files provide a `Kernels` struct (see CpuBlockKernels in cpu/blocks.cpp):
//   fold_phase_weight(w)   W (Co, Ci, 3, 3) -> K (4 Co, Ci, 2, 2) contiguous, phase-major
//   unfold_phase_grad(dk)  dK (4 Co, Ci, 2, 2), any strides -> dW (Co, Ci, 3, 3)
//   im2col_phase(x, g, phase, cols)      x (N, Ci, H, W) channels_last -> cols (N*H*W, 4*Ci),
//                                        columns (c, r, s): x[n, c, p + a - 1 + r, t + b - 1 + s]
//   col2im_phase_add(cols, g, phase, gx) gx (N, Ci, H, W) channels_last += the adjoint of that
//   channel_stats(y, g, mean, var)                             batch mean and biased variance
//   forward_epilogue(mode, y, g, scale, shift, residual, out)  out = epilogue(y * scale + shift)
//   backward_reduce(mode, grad_out, y, g, scale, shift, center, r1, r2)
//        r1 = sum dz, r2 = sum dz * (y - center) per conv channel (dz: grad of z = y*scale+shift)
//   backward_apply(mode, grad_out, y, g, scale, shift, center, A, B, D, grad_y)
//        grad_y = A * dz + B * (y - center) + D at every position (zero at the unused border)
// and this header composes them with ATen convolutions / GEMMs.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <tuple>
#include <vector>

namespace attngan_fast {
namespace blocks {

// What the epilogue does with z = y * scale + shift (per conv channel).
enum class Epilogue {
  kCopy,      // out = y                      (upsample_conv3x3: interleave only; scale/shift unused)
  kGlu,       // out[c] = z[c] * sigmoid(z[c + Co/2])
  kResidual,  // out = residual + z
};

#if defined(__CUDACC__)
#define BLOCKS_HOST_DEVICE __host__ __device__
#else
#define BLOCKS_HOST_DEVICE
#endif

// Where the Co channels (contiguous) of output position (n, r, u) live in y: phase (a, b) =
// (r % S, u % S) at conv position (r / S + pad * a, u / S + pad * b).
struct PhaseLayout {
  int64_t S, pad, sN, sH, sW, sPh;  // strides of image, row, column, phase
  // offset(n, r, u) = row_offset(n, r) + col_offset(u) (the CPU kernels keep the column parts of a map)
  BLOCKS_HOST_DEVICE int64_t row_offset(int64_t n, int64_t r) const {
    const int64_t a = r % S;
    return n * sN + (r / S + pad * a) * sH + a * S * sPh;
  }
  BLOCKS_HOST_DEVICE int64_t col_offset(int64_t u) const {
    const int64_t b = u % S;
    return (u / S + pad * b) * sW + b * sPh;
  }
  BLOCKS_HOST_DEVICE int64_t offset(int64_t n, int64_t r, int64_t u) const { return row_offset(n, r) + col_offset(u); }
};

// The phase GEMMs beat oneDNN's 2x2 convolution up to 8x8 maps (measured on the CPU).
inline bool use_phase_gemm(int64_t H, int64_t W) {
  return H * W <= 64;
}

struct PhaseGeom {
  int64_t N, H, W;  // conv input
  int64_t S;        // 2: nearest-2x upsampled before the conv, 1: plain
  int64_t Co;       // conv output channels (of the 3x3 conv)
  bool gemm;        // S == 2 by per-phase GEMMs: y is (4, N, H, W, Co); else one conv
  int64_t pad() const { return S == 2 && !gemm ? 1 : 0; }
  int64_t Hy() const { return H + pad(); }
  int64_t Wy() const { return W + pad(); }
  int64_t Hout() const { return S * H; }
  int64_t Wout() const { return S * W; }
  int64_t count() const { return N * Hout() * Wout(); }  // elements per channel
  // y as a channels_last 4-D tensor: (4N, Co, H, W) for the GEMMs, else (N, S*S*Co, Hy, Wy).
  std::vector<int64_t> conv_out_sizes() const {
    if (gemm) return {4 * N, Co, H, W};
    return {N, S * S * Co, Hy(), Wy()};
  }
  PhaseLayout layout() const {
    if (gemm) return {S, 0, H * W * Co, W * Co, Co, N * H * W * Co};
    const int64_t cy = S * S * Co;
    return {S, pad(), Hy() * Wy() * cy, Wy() * cy, cy, Co};
  }
};

inline bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

// The memory format of the caller's tensors (outputs and input grads follow x).
inline at::MemoryFormat caller_format(const at::Tensor& x) {
  return is_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// `t` as a dense tensor of the format `fmt`, with exactly the strides of at::empty(..., fmt).
inline at::Tensor dense(const at::Tensor& t, at::MemoryFormat fmt) {
  at::Tensor d = t.contiguous(fmt);
  if (d.dim() == 4 && fmt == at::MemoryFormat::ChannelsLast &&
      d.strides() != at::IntArrayRef(c10::get_channels_last_strides_2d(d.sizes()))) {
    d = at::empty(d.sizes(), d.options().memory_format(fmt)).copy_(d);
  }
  return d;
}

// grad_out as NCHW- or NHWC-dense (the kernels read both).
inline at::Tensor dense_grad(const at::Tensor& grad_out, at::MemoryFormat fmt) {
  if (grad_out.is_contiguous() || grad_out.is_contiguous(at::MemoryFormat::ChannelsLast)) return grad_out;
  return grad_out.contiguous(fmt);
}

inline at::ScalarType opmath_dtype(const at::Tensor& x) {
  return at::toOpMathType(x.scalar_type());
}

inline void check_block_input(const at::Tensor& x, const at::Tensor& weight, const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N, C, H, W), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3, op,
              ": weight must be (Co, Ci, 3, 3), got ", weight.sizes());
  TORCH_CHECK(weight.size(1) == x.size(1), op, ": weight has ", weight.size(1), " input channels, x has ", x.size(1));
  TORCH_CHECK(x.scalar_type() == weight.scalar_type(), op, ": x and weight dtypes differ");
  TORCH_CHECK(x.device() == weight.device(), op, ": x and weight devices differ");
}

inline PhaseGeom geometry(const at::Tensor& x, const at::Tensor& weight, bool upsample) {
  const bool gemm = upsample && use_phase_gemm(x.size(2), x.size(3));
  return {x.size(0), x.size(2), x.size(3), upsample ? 2 : 1, weight.size(0), gemm};
}

// The phase folds: tap r of phase row a sums the 3x3 rows first(a, r) .. last(a, r):
//   a = 0: {0}, {1, 2};   a = 1: {0, 1}, {2}.   (Likewise columns.)
// Unfolding: 3x3 row i receives, from phase row a, the tap unfold_tap(a, i).
BLOCKS_HOST_DEVICE inline int fold_first(int a, int r) {
  return a == 0 ? r : 2 * r;
}
BLOCKS_HOST_DEVICE inline int fold_last(int a, int r) {
  return a == 0 ? 2 * r : r + 1;
}
BLOCKS_HOST_DEVICE inline int unfold_tap(int a, int i) {
  return a == 0 ? (i == 0 ? 0 : 1) : (i == 2 ? 1 : 0);
}

// y = conv(x_cl, kernel, padding 1), NHWC-dense.
inline at::Tensor run_conv(const at::Tensor& x_cl, const at::Tensor& kernel) {
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  return dense(at::convolution(x_cl, kernel, {}, one, one, one, false, zero, 1), at::MemoryFormat::ChannelsLast);
}

// (grad_x_cl, grad_kernel) of y = conv(x_cl, kernel, padding 1).
inline std::tuple<at::Tensor, at::Tensor> run_conv_backward(const at::Tensor& grad_y, const at::Tensor& x_cl,
                                                            const at::Tensor& kernel) {
  const std::vector<int64_t> one{1, 1}, zero{0, 0};
  auto grads =
      at::convolution_backward(grad_y, x_cl, kernel, c10::nullopt, one, one, one, false, zero, 1, {true, true, false});
  return {std::get<0>(grads), std::get<1>(grads)};
}

// The phase kernels K (4 Co, Ci, 2, 2) as four (Co, 4 Ci) matrices, columns (c, r, s).
inline at::Tensor phase_matrices(const at::Tensor& k) {
  return k.view({4, k.size(0) / 4, 4 * k.size(1)});
}

// y: the (phase) convolution of x_cl (channels_last) with W (Co, Ci, 3, 3), laid out as g says.
template <class K>
at::Tensor conv_forward(const at::Tensor& x_cl, const at::Tensor& weight, const PhaseGeom& g) {
  if (g.S == 1) return run_conv(x_cl, weight);
  const at::Tensor k = K::fold_phase_weight(weight.contiguous());
  if (!g.gemm) return run_conv(x_cl, k);
  const at::Tensor kmat = phase_matrices(k);
  const int64_t m = g.N * g.H * g.W;
  at::Tensor y = at::empty({4, m, g.Co}, x_cl.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor cols = at::empty({m, 4 * x_cl.size(1)}, y.options());
  for (int phase = 0; phase < 4; ++phase) {
    K::im2col_phase(x_cl, g, phase, cols);
    at::Tensor y_phase = y[phase];
    at::mm_out(y_phase, cols, kmat[phase].t());
  }
  return dense(y.view({4 * g.N, g.H, g.W, g.Co}).permute({0, 3, 1, 2}), at::MemoryFormat::ChannelsLast);
}

// (grad_x_cl, grad_weight (Co, Ci, 3, 3)) given grad_y laid out like y.
template <class K>
std::tuple<at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_y, const at::Tensor& x_cl,
                                                 const at::Tensor& weight, const PhaseGeom& g) {
  if (g.S == 1) {
    auto [grad_x, grad_w] = run_conv_backward(grad_y, x_cl, weight);
    return {grad_x, grad_w.contiguous()};
  }
  const at::Tensor k = K::fold_phase_weight(weight.contiguous());
  if (!g.gemm) {
    auto [grad_x, grad_k] = run_conv_backward(grad_y, x_cl, k);
    return {grad_x, K::unfold_phase_grad(grad_k)};
  }
  const int64_t ci = x_cl.size(1), m = g.N * g.H * g.W;
  const at::Tensor gy = grad_y.permute({0, 2, 3, 1}).reshape({4, m, g.Co});
  const at::Tensor kmat = phase_matrices(k);
  at::Tensor grad_k = at::empty({4, g.Co, 4 * ci}, gy.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor grad_x =
      at::empty({g.N, ci, g.H, g.W}, gy.options().memory_format(at::MemoryFormat::ChannelsLast)).zero_();
  at::Tensor cols = at::empty({m, 4 * ci}, grad_k.options()), grad_cols = at::empty_like(cols);
  for (int phase = 0; phase < 4; ++phase) {
    K::im2col_phase(x_cl, g, phase, cols);
    at::Tensor grad_k_phase = grad_k[phase];
    at::mm_out(grad_k_phase, gy[phase].t(), cols);
    at::mm_out(grad_cols, gy[phase], kmat[phase]);
    K::col2im_phase_add(grad_cols, g, phase, grad_x);
  }
  return {grad_x, K::unfold_phase_grad(grad_k.view({4 * g.Co, ci, 2, 2}))};
}

inline at::Tensor empty_output(const PhaseGeom& g, int64_t channels, const at::Tensor& like, at::MemoryFormat fmt) {
  return at::empty({g.N, channels, g.Hout(), g.Wout()}, like.options().memory_format(fmt));
}

inline at::Tensor empty_conv_out(const PhaseGeom& g, const at::Tensor& like) {
  return at::empty(g.conv_out_sizes(), like.options().memory_format(at::MemoryFormat::ChannelsLast));
}

// The BatchNorm of one block as per-channel affine z = y * scale + shift, plus its statistics.
struct BatchNormAffine {
  at::Tensor mean, var;     // returned to the caller (batch stats, or copies of the running stats)
  at::Tensor invstd;        // 1 / sqrt(var + eps)
  at::Tensor scale, shift;  // gamma * invstd, beta - mean * scale   (opmath dtype)
};

template <class K>
BatchNormAffine batch_norm_affine(const at::Tensor& y, const PhaseGeom& g, const at::Tensor& bn_weight,
                                  const at::Tensor& bn_bias, const c10::optional<at::Tensor>& running_mean,
                                  const c10::optional<at::Tensor>& running_var, bool training, double eps,
                                  const char* op) {
  const auto acc = opmath_dtype(y);
  TORCH_CHECK(bn_weight.numel() == g.Co && bn_bias.numel() == g.Co, op, ": BatchNorm weight and bias must have ", g.Co,
              " elements, got ", bn_weight.numel(), " and ", bn_bias.numel());
  BatchNormAffine bn;
  if (training) {
    TORCH_CHECK(g.count() > 1, op, ": expected more than 1 value per channel when training, got ", g.count());
    bn.mean = at::empty({g.Co}, y.options().dtype(acc));
    bn.var = at::empty({g.Co}, y.options().dtype(acc));
    K::channel_stats(y, g, bn.mean, bn.var);
  } else {
    TORCH_CHECK(running_mean.has_value() && running_var.has_value(), op,
                ": running_mean and running_var are required when not training");
    TORCH_CHECK(running_mean->numel() == g.Co && running_var->numel() == g.Co, op, ": running stats must have ", g.Co,
                " elements");
    bn.mean = running_mean->to(acc, /*non_blocking=*/false, /*copy=*/true);
    bn.var = running_var->to(acc, /*non_blocking=*/false, /*copy=*/true);
  }
  bn.invstd = at::rsqrt(bn.var + eps);
  bn.scale = bn_weight.to(acc) * bn.invstd;
  bn.shift = bn_bias.to(acc) - bn.mean * bn.scale;
  return bn;
}

// Backward of out = epilogue(BN(y)): (grad_y, grad_gamma, grad_beta). bn_bias is only read by the
// GLU epilogue (the residual one does not need z).
template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_epilogue_backward(
    Epilogue mode, const at::Tensor& grad_out, const at::Tensor& y, const PhaseGeom& g, const at::Tensor& bn_weight,
    const at::Tensor& bn_bias, const at::Tensor& mean, const at::Tensor& var, bool training, double eps) {
  const auto acc = opmath_dtype(y);
  const at::Tensor invstd = at::rsqrt(var + eps);
  const at::Tensor scale = bn_weight.to(acc) * invstd;
  const at::Tensor shift = mode == Epilogue::kGlu ? bn_bias.to(acc) - mean * scale : at::Tensor();
  at::Tensor r1 = at::empty({g.Co}, y.options().dtype(acc));
  at::Tensor r2 = at::empty({g.Co}, y.options().dtype(acc));
  K::backward_reduce(mode, grad_out, y, g, scale, shift, mean, r1, r2);
  const at::Tensor grad_beta = r1;
  const at::Tensor grad_gamma = r2 * invstd;
  at::Tensor B, D;
  if (training) {  // dy = scale * (dz - (grad_beta + xhat * grad_gamma) / M), xhat = (y - mean) * invstd
    const double inv_m = 1.0 / static_cast<double>(g.count());
    B = -(scale * invstd * grad_gamma) * inv_m;
    D = -(scale * grad_beta) * inv_m;
  } else {
    B = at::zeros_like(scale);
    D = at::zeros_like(scale);
  }
  at::Tensor grad_y = empty_conv_out(g, y);
  K::backward_apply(mode, grad_out, y, g, scale, shift, mean, scale, B, D, grad_y);
  return {grad_y, grad_gamma.to(bn_weight.scalar_type()), grad_beta.to(bn_weight.scalar_type())};
}

// ---------------------------------------------------------------------------------------------
// upsample_conv3x3: x (N, Ci, H, W), weight (Co, Ci, 3, 3) -> conv3x3(upsample2x(x)) (N, Co, 2H, 2W)

template <class K>
at::Tensor upsample_conv3x3(const at::Tensor& x, const at::Tensor& weight) {
  check_block_input(x, weight, "upsample_conv3x3");
  const PhaseGeom g = geometry(x, weight, true);
  const at::Tensor y = conv_forward<K>(x.contiguous(at::MemoryFormat::ChannelsLast), weight, g);
  at::Tensor out = empty_output(g, g.Co, x, caller_format(x));
  K::forward_epilogue(Epilogue::kCopy, y, g, at::Tensor(), at::Tensor(), at::Tensor(), out);
  return out;
}

template <class K>
std::tuple<at::Tensor, at::Tensor> upsample_conv3x3_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                             const at::Tensor& weight) {
  check_block_input(x, weight, "upsample_conv3x3_backward");
  const PhaseGeom g = geometry(x, weight, true);
  const auto fmt = caller_format(x);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.N, g.Co, g.Hout(), g.Wout()}),
              "upsample_conv3x3_backward: grad_out has shape ", grad_out.sizes());
  at::Tensor grad_y = empty_conv_out(g, x);
  const at::Tensor none;
  K::backward_apply(Epilogue::kCopy, dense_grad(grad_out, fmt), none, g, none, none, none, none, none, none, grad_y);
  auto [grad_x, grad_w] = conv_backward<K>(grad_y, x.contiguous(at::MemoryFormat::ChannelsLast), weight, g);
  return {dense(grad_x, fmt), grad_w};
}

// ---------------------------------------------------------------------------------------------
// up_block: [upsample2x] -> conv3x3 -> BatchNorm -> GLU.   x (N, Ci, H, W) -> (N, Co/2, S*H, S*W)
// Returns (out, conv_out (N, S*S*Co, H+S-1, W+S-1) NHWC, mean (Co,), var (Co,)): mean/var are the
// batch statistics (biased var) when training, else copies of the running statistics.

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> up_block(const at::Tensor& x, const at::Tensor& weight,
                                                                    const at::Tensor& bn_weight,
                                                                    const at::Tensor& bn_bias,
                                                                    const c10::optional<at::Tensor>& running_mean,
                                                                    const c10::optional<at::Tensor>& running_var,
                                                                    bool upsample, bool training, double eps) {
  check_block_input(x, weight, "up_block");
  TORCH_CHECK(weight.size(0) % 2 == 0, "up_block: GLU needs an even conv channel count, got ", weight.size(0));
  const PhaseGeom g = geometry(x, weight, upsample);
  const at::Tensor y = conv_forward<K>(x.contiguous(at::MemoryFormat::ChannelsLast), weight, g);
  const BatchNormAffine bn =
      batch_norm_affine<K>(y, g, bn_weight, bn_bias, running_mean, running_var, training, eps, "up_block");
  at::Tensor out = empty_output(g, g.Co / 2, x, caller_format(x));
  K::forward_epilogue(Epilogue::kGlu, y, g, bn.scale, bn.shift, at::Tensor(), out);
  return {out, y, bn.mean, bn.var};
}

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> up_block_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bn_weight,
    const at::Tensor& bn_bias, const at::Tensor& conv_out, const at::Tensor& mean, const at::Tensor& var, bool upsample,
    bool training, double eps) {
  check_block_input(x, weight, "up_block_backward");
  const PhaseGeom g = geometry(x, weight, upsample);
  const auto fmt = caller_format(x);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({g.N, g.Co / 2, g.Hout(), g.Wout()}),
              "up_block_backward: grad_out has shape ", grad_out.sizes());
  const at::Tensor y = dense(conv_out, at::MemoryFormat::ChannelsLast);
  auto [grad_y, grad_gamma, grad_beta] = batch_norm_epilogue_backward<K>(
      Epilogue::kGlu, dense_grad(grad_out, fmt), y, g, bn_weight, bn_bias, mean, var, training, eps);
  auto [grad_x, grad_w] = conv_backward<K>(grad_y, x.contiguous(at::MemoryFormat::ChannelsLast), weight, g);
  return {dense(grad_x, fmt), grad_w, grad_gamma, grad_beta};
}

// ---------------------------------------------------------------------------------------------
// res_block: out = x + BN2(conv2(GLU(BN1(conv1(x))))).   x (N, C, H, W); w1 (2C, C, 3, 3); w2 (C, C, 3, 3)
// Returns (out, conv1_out (N, 2C, H, W) NHWC, mean1, var1, hidden = GLU(BN1(.)) (N, C, H, W) NHWC,
//          conv2_out (N, C, H, W) NHWC, mean2, var2).

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> res_block(
    const at::Tensor& x, const at::Tensor& weight1, const at::Tensor& bn1_weight, const at::Tensor& bn1_bias,
    const c10::optional<at::Tensor>& running_mean1, const c10::optional<at::Tensor>& running_var1,
    const at::Tensor& weight2, const at::Tensor& bn2_weight, const at::Tensor& bn2_bias,
    const c10::optional<at::Tensor>& running_mean2, const c10::optional<at::Tensor>& running_var2, bool training,
    double eps1, double eps2) {
  check_block_input(x, weight1, "res_block");
  const int64_t c = x.size(1);
  TORCH_CHECK(weight1.size(0) == 2 * c, "res_block: weight1 must be (2C, C, 3, 3) = (", 2 * c, ", ", c, ", 3, 3), got ",
              weight1.sizes());
  TORCH_CHECK(weight2.sizes() == at::IntArrayRef({c, c, 3, 3}), "res_block: weight2 must be (C, C, 3, 3) = (", c, ", ",
              c, ", 3, 3), got ", weight2.sizes());
  const PhaseGeom g1 = geometry(x, weight1, false), g2 = geometry(x, weight2, false);
  const at::Tensor y1 = conv_forward<K>(x.contiguous(at::MemoryFormat::ChannelsLast), weight1, g1);
  const BatchNormAffine bn1 =
      batch_norm_affine<K>(y1, g1, bn1_weight, bn1_bias, running_mean1, running_var1, training, eps1, "res_block");
  at::Tensor hidden = empty_conv_out(g2, x);
  K::forward_epilogue(Epilogue::kGlu, y1, g1, bn1.scale, bn1.shift, at::Tensor(), hidden);
  const at::Tensor y2 = conv_forward<K>(hidden, weight2, g2);
  const BatchNormAffine bn2 =
      batch_norm_affine<K>(y2, g2, bn2_weight, bn2_bias, running_mean2, running_var2, training, eps2, "res_block");
  const auto fmt = caller_format(x);
  at::Tensor out = empty_output(g2, c, x, fmt);
  K::forward_epilogue(Epilogue::kResidual, y2, g2, bn2.scale, bn2.shift, x.contiguous(fmt), out);
  return {out, y1, bn1.mean, bn1.var, hidden, y2, bn2.mean, bn2.var};
}

template <class K>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> res_block_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight1, const at::Tensor& bn1_weight,
    const at::Tensor& bn1_bias, const at::Tensor& conv1_out, const at::Tensor& mean1, const at::Tensor& var1,
    const at::Tensor& hidden, const at::Tensor& weight2, const at::Tensor& bn2_weight, const at::Tensor& conv2_out,
    const at::Tensor& mean2, const at::Tensor& var2, bool training, double eps1, double eps2) {
  check_block_input(x, weight1, "res_block_backward");
  const PhaseGeom g1 = geometry(x, weight1, false), g2 = geometry(x, weight2, false);
  const auto fmt = caller_format(x);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "res_block_backward: grad_out has shape ", grad_out.sizes(), ", expected ",
              x.sizes());
  const at::Tensor g = dense_grad(grad_out, fmt);
  const at::Tensor h = dense(hidden, at::MemoryFormat::ChannelsLast);
  auto [grad_y2, grad_gamma2, grad_beta2] =
      batch_norm_epilogue_backward<K>(Epilogue::kResidual, g, dense(conv2_out, at::MemoryFormat::ChannelsLast), g2,
                                      bn2_weight, at::Tensor(), mean2, var2, training, eps2);
  auto [grad_h, grad_w2] = conv_backward<K>(grad_y2, h, weight2, g2);
  auto [grad_y1, grad_gamma1, grad_beta1] = batch_norm_epilogue_backward<K>(
      Epilogue::kGlu, dense(grad_h, at::MemoryFormat::ChannelsLast), dense(conv1_out, at::MemoryFormat::ChannelsLast),
      g1, bn1_weight, bn1_bias, mean1, var1, training, eps1);
  auto [grad_x1, grad_w1] = conv_backward<K>(grad_y1, x.contiguous(at::MemoryFormat::ChannelsLast), weight1, g1);
  // grad_x = grad_x1 + grad_out (the residual), in x's format: the residual epilogue with z = grad_x1
  at::Tensor grad_x = empty_output(g2, g2.Co, x, fmt);
  const auto acc = x.options().dtype(opmath_dtype(x));
  K::forward_epilogue(Epilogue::kResidual, dense(grad_x1, at::MemoryFormat::ChannelsLast), g2, at::ones({g2.Co}, acc),
                      at::zeros({g2.Co}, acc), g, grad_x);
  return {grad_x, grad_w1, grad_gamma1, grad_beta1, grad_w2, grad_gamma2, grad_beta2};
}

}  // namespace blocks
}  // namespace attngan_fast
