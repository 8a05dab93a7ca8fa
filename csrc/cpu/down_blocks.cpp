// The discriminator blocks on the CPU: the convolution backward (oneDNN, or GEMMs for small
// output maps), batch statistics and the fused BatchNorm + LeakyReLU epilogues (see down_blocks.h).
//
// NCHW (inner > 1): one task per (n, c) plane, the loop over the contiguous plane vectorizes with
// the channel's constants in registers. NHWC (inner == 1): tasks of whole pixels, the loop over
// the channels vectorizes with the per-channel vectors. Reductions accumulate in double, per
// thread, and are summed at the end; the statistics are taken about a per-channel pivot (the
// channel's first value) so that sum((y - k)^2) - sum(y - k)^2 / M does not cancel.
#include "down_blocks.h"
#include "thread_sums.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace attngan_fast {
namespace down_blocks {
namespace {

template <typename acc_t>
inline acc_t leaky(acc_t z, acc_t slope) {
  return z > acc_t(0) ? z : z * slope;
}

// d lrelu(z) / dz: 1 where z > 0, else slope (as leaky_relu_backward).
template <typename acc_t>
inline acc_t leaky_grad(acc_t z, acc_t slope) {
  return z > acc_t(0) ? acc_t(1) : slope;
}

// Pixels per NHWC task (some tens of KB each) and planes per NCHW task.
int64_t pixel_grain(const ChannelView& v) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, v.C));
}
int64_t plane_grain(const ChannelView& v) {
  return std::max<int64_t>(1, 8192 / std::max<int64_t>(1, v.inner));
}

// ---- batch statistics ------------------------------------------------------------------------

template <typename T>
void stats_kernel(const at::Tensor& y_t, const ChannelView& v, const at::Tensor& mean_t, const at::Tensor& var_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const int64_t C = v.C, inner = v.inner;
  std::vector<double> pivot(C);
  for (int64_t c = 0; c < C; ++c) pivot[c] = static_cast<double>(y[c * inner]);
  const double* k = pivot.data();
  ThreadSums sums(C, 2);
  if (inner > 1) {
    at::parallel_for(0, v.outer * C, plane_grain(v), [&](int64_t begin, int64_t end) {
      double* s = sums.mine(0);
      double* q = sums.mine(1);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % C;
        const T* __restrict__ plane = y + p * inner;
        const double kc = k[c];
        double ps = 0, pq = 0;
#pragma omp simd reduction(+ : ps, pq)
        for (int64_t i = 0; i < inner; ++i) {
          const double d = static_cast<double>(plane[i]) - kc;
          ps += d;
          pq += d * d;
        }
        s[c] += ps;
        q[c] += pq;
      }
    });
  } else {
    at::parallel_for(0, v.outer, pixel_grain(v), [&](int64_t begin, int64_t end) {
      double* __restrict__ s = sums.mine(0);
      double* __restrict__ q = sums.mine(1);
      for (int64_t o = begin; o < end; ++o) {
        const T* __restrict__ px = y + o * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const double d = static_cast<double>(px[c]) - k[c];
          s[c] += d;
          q[c] += d * d;
        }
      }
    });
  }
  acc_t* mean = mean_t.mutable_data_ptr<acc_t>();
  acc_t* var = var_t.mutable_data_ptr<acc_t>();
  const double inv_m = 1.0 / static_cast<double>(v.count());
  for (int64_t c = 0; c < C; ++c) {
    const double d = sums.total(0, c) * inv_m;
    mean[c] = static_cast<acc_t>(k[c] + d);
    var[c] = static_cast<acc_t>(std::max(sums.total(1, c) * inv_m - d * d, 0.0));
  }
}

// ---- forward epilogue (out may be y: same-index aliasing only) -------------------------------

template <typename T>
void forward_kernel(const at::Tensor& y_t, const ChannelView& v, const at::Tensor& scale_t, const at::Tensor& shift_t,
                    double negative_slope, const at::Tensor& out_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  T* out = out_t.mutable_data_ptr<T>();
  const acc_t* scale = scale_t.const_data_ptr<acc_t>();
  const acc_t* shift = shift_t.const_data_ptr<acc_t>();
  const acc_t slope = static_cast<acc_t>(negative_slope);
  const int64_t C = v.C, inner = v.inner;
  if (inner > 1) {
    at::parallel_for(0, v.outer * C, plane_grain(v), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const acc_t a = scale[p % C], b = shift[p % C];
        const T* src = y + p * inner;
        T* dst = out + p * inner;
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) dst[i] = static_cast<T>(leaky(static_cast<acc_t>(src[i]) * a + b, slope));
      }
    });
  } else {
    at::parallel_for(0, v.outer, pixel_grain(v), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* src = y + o * C;
        T* dst = out + o * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c)
          dst[c] = static_cast<T>(leaky(static_cast<acc_t>(src[c]) * scale[c] + shift[c], slope));
      }
    });
  }
}

// ---- backward --------------------------------------------------------------------------------

template <typename T>
void reduce_kernel(const at::Tensor& g_t, const at::Tensor& y_t, const ChannelView& v, const at::Tensor& scale_t,
                   const at::Tensor& shift_t, const at::Tensor& center_t, double negative_slope, const at::Tensor& r1_t,
                   const at::Tensor& r2_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const T* g = g_t.const_data_ptr<T>();
  const acc_t* scale = scale_t.const_data_ptr<acc_t>();
  const acc_t* shift = shift_t.const_data_ptr<acc_t>();
  const acc_t* center = center_t.const_data_ptr<acc_t>();
  const acc_t slope = static_cast<acc_t>(negative_slope);
  const int64_t C = v.C, inner = v.inner;
  ThreadSums sums(C, 2);
  if (inner > 1) {
    at::parallel_for(0, v.outer * C, plane_grain(v), [&](int64_t begin, int64_t end) {
      double* s1 = sums.mine(0);
      double* s2 = sums.mine(1);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % C;
        const acc_t a = scale[c], b = shift[c], m = center[c];
        const T* __restrict__ yp = y + p * inner;
        const T* __restrict__ gp = g + p * inner;
        double ps1 = 0, ps2 = 0;
#pragma omp simd reduction(+ : ps1, ps2)
        for (int64_t i = 0; i < inner; ++i) {
          const acc_t yv = static_cast<acc_t>(yp[i]);
          const acc_t dz = static_cast<acc_t>(gp[i]) * leaky_grad(yv * a + b, slope);
          ps1 += static_cast<double>(dz);
          ps2 += static_cast<double>(dz * (yv - m));
        }
        s1[c] += ps1;
        s2[c] += ps2;
      }
    });
  } else {
    at::parallel_for(0, v.outer, pixel_grain(v), [&](int64_t begin, int64_t end) {
      double* __restrict__ s1 = sums.mine(0);
      double* __restrict__ s2 = sums.mine(1);
      for (int64_t o = begin; o < end; ++o) {
        const T* __restrict__ yp = y + o * C;
        const T* __restrict__ gp = g + o * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const acc_t yv = static_cast<acc_t>(yp[c]);
          const acc_t dz = static_cast<acc_t>(gp[c]) * leaky_grad(yv * scale[c] + shift[c], slope);
          s1[c] += static_cast<double>(dz);
          s2[c] += static_cast<double>(dz * (yv - center[c]));
        }
      }
    });
  }
  acc_t* r1 = r1_t.mutable_data_ptr<acc_t>();
  acc_t* r2 = r2_t.mutable_data_ptr<acc_t>();
  for (int64_t c = 0; c < C; ++c) {
    r1[c] = static_cast<acc_t>(sums.total(0, c));
    r2[c] = static_cast<acc_t>(sums.total(1, c));
  }
}

template <typename T>
void apply_kernel(const at::Tensor& g_t, const at::Tensor& y_t, const ChannelView& v, const at::Tensor& scale_t,
                  const at::Tensor& shift_t, const at::Tensor& center_t, const at::Tensor& A_t, const at::Tensor& B_t,
                  const at::Tensor& D_t, double negative_slope, const at::Tensor& gy_t) {
  using acc_t = at::opmath_type<T>;
  const T* y = y_t.const_data_ptr<T>();
  const T* g = g_t.const_data_ptr<T>();
  T* gy = gy_t.mutable_data_ptr<T>();
  const acc_t* scale = scale_t.const_data_ptr<acc_t>();
  const acc_t* shift = shift_t.const_data_ptr<acc_t>();
  const acc_t* center = center_t.const_data_ptr<acc_t>();
  const acc_t* A = A_t.const_data_ptr<acc_t>();
  const acc_t* B = B_t.const_data_ptr<acc_t>();
  const acc_t* D = D_t.const_data_ptr<acc_t>();
  const acc_t slope = static_cast<acc_t>(negative_slope);
  const int64_t C = v.C, inner = v.inner;
  if (inner > 1) {
    at::parallel_for(0, v.outer * C, plane_grain(v), [&](int64_t begin, int64_t end) {
      for (int64_t p = begin; p < end; ++p) {
        const int64_t c = p % C;
        const acc_t a = scale[c], b = shift[c], m = center[c], ka = A[c], kb = B[c], kd = D[c];
        const T* __restrict__ yp = y + p * inner;
        const T* __restrict__ gp = g + p * inner;
        T* __restrict__ out = gy + p * inner;
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) {
          const acc_t yv = static_cast<acc_t>(yp[i]);
          const acc_t dz = static_cast<acc_t>(gp[i]) * leaky_grad(yv * a + b, slope);
          out[i] = static_cast<T>(ka * dz + kb * (yv - m) + kd);
        }
      }
    });
  } else {
    at::parallel_for(0, v.outer, pixel_grain(v), [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* __restrict__ yp = y + o * C;
        const T* __restrict__ gp = g + o * C;
        T* __restrict__ out = gy + o * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          const acc_t yv = static_cast<acc_t>(yp[c]);
          const acc_t dz = static_cast<acc_t>(gp[c]) * leaky_grad(yv * scale[c] + shift[c], slope);
          out[c] = static_cast<T>(A[c] * dz + B[c] * (yv - center[c]) + D[c]);
        }
      }
    });
  }
}

// ---- the GEMM convolution backward for small output maps -----------------------------------------
// oneDNN's forward is at GEMM speed, but its weight (and input) gradients are well below it on
// maps of a few pixels (the deep D blocks' 4x4 outputs). Up to 16 output pixels the backward is
// GEMMs: rows m = (n, p, t) of cols (N*Ho*Wo, Ci*K*K), columns (c, i, j) =
// x[n, c, p*s + i - pad, t*s + j - pad] (0 outside), so that the weight (Co, Ci, K, K) is the
// matrix Wm (Co, Ci*K*K) as it is: grad_Wm = gy^T @ cols, grad_cols = gy @ Wm scattered back by
// col2im. x is read NCHW (one image's planes are a few KB: cached), cols written in order.

bool use_gemm(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  const int64_t k = weight.size(2);
  const int64_t ho = (x.size(2) + 2 * padding - k) / stride + 1, wo = (x.size(3) + 2 * padding - k) / stride + 1;
  return ho * wo <= 16;
}

struct ConvGeom {
  int64_t N, Ci, H, W, K, S, P, Ho, Wo;
};

ConvGeom conv_geom(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  const int64_t k = weight.size(2);
  return {x.size(0),
          x.size(1),
          x.size(2),
          x.size(3),
          k,
          stride,
          padding,
          (x.size(2) + 2 * padding - k) / stride + 1,
          (x.size(3) + 2 * padding - k) / stride + 1};
}

// x: NCHW-dense data.
template <typename T>
void im2col_kernel(const T* x, T* cols, const ConvGeom& g) {
  const int64_t row = g.Ci * g.K * g.K;
  at::parallel_for(0, g.N * g.Ho * g.Wo, 1, [&](int64_t begin, int64_t end) {
    for (int64_t m = begin; m < end; ++m) {
      const int64_t n = m / (g.Ho * g.Wo), p = (m / g.Wo) % g.Ho, t = m % g.Wo;
      T* dst = cols + m * row;
      for (int64_t c = 0; c < g.Ci; ++c) {
        const T* plane = x + (n * g.Ci + c) * g.H * g.W;
        for (int64_t i = 0; i < g.K; ++i) {
          const int64_t q = p * g.S + i - g.P;
          for (int64_t j = 0; j < g.K; ++j) {
            const int64_t v = t * g.S + j - g.P;
            *dst++ = (q < 0 || q >= g.H || v < 0 || v >= g.W) ? T(0) : plane[q * g.W + v];
          }
        }
      }
    }
  });
}

// gx (NCHW-dense, zeroed) += the adjoint of im2col; one image per task (their pixels are disjoint).
template <typename T>
void col2im_kernel(const T* cols, T* gx, const ConvGeom& g) {
  using acc_t = at::opmath_type<T>;
  const int64_t row = g.Ci * g.K * g.K;
  at::parallel_for(0, g.N, 1, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t pt = 0; pt < g.Ho * g.Wo; ++pt) {
        const int64_t p = pt / g.Wo, t = pt % g.Wo;
        const T* src = cols + (n * g.Ho * g.Wo + pt) * row;
        for (int64_t c = 0; c < g.Ci; ++c) {
          T* plane = gx + (n * g.Ci + c) * g.H * g.W;
          for (int64_t i = 0; i < g.K; ++i) {
            const int64_t q = p * g.S + i - g.P;
            for (int64_t j = 0; j < g.K; ++j, ++src) {
              const int64_t v = t * g.S + j - g.P;
              if (q < 0 || q >= g.H || v < 0 || v >= g.W) continue;
              plane[q * g.W + v] = static_cast<T>(static_cast<acc_t>(plane[q * g.W + v]) + static_cast<acc_t>(*src));
            }
          }
        }
      }
    }
  });
}

at::Tensor im2col(const at::Tensor& x, const ConvGeom& g) {
  const at::Tensor xd = blocks::dense(x, at::MemoryFormat::Contiguous);
  at::Tensor cols = at::empty({g.N * g.Ho * g.Wo, g.Ci * g.K * g.K}, xd.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, xd.scalar_type(), "down_block_im2col_cpu", [&] {
    im2col_kernel<scalar_t>(xd.const_data_ptr<scalar_t>(), cols.mutable_data_ptr<scalar_t>(), g);
  });
  return cols;
}

std::tuple<at::Tensor, at::Tensor> gemm_conv_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                      const at::Tensor& weight, int64_t stride, int64_t padding,
                                                      bool need_x, bool need_w) {
  const ConvGeom g = conv_geom(x, weight, stride, padding);
  const int64_t co = weight.size(0);
  const at::Tensor gy = blocks::dense(grad_y, at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1}).reshape({-1, co});
  at::Tensor grad_x, grad_w;
  if (need_w) grad_w = at::mm(gy.t(), im2col(x, g)).view(weight.sizes());
  if (need_x) {
    const at::Tensor grad_cols = at::mm(gy, weight.reshape({co, -1}));
    at::Tensor gx = at::zeros({g.N, g.Ci, g.H, g.W}, x.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "down_block_col2im_cpu", [&] {
      col2im_kernel<scalar_t>(grad_cols.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), g);
    });
    grad_x = blocks::dense(gx, blocks::caller_format(x));
  }
  return {grad_x, grad_w};
}

// ---- the Kernels interface of down_blocks.h --------------------------------------------------

struct CpuDownKernels {
  static at::Tensor conv(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
    return aten_conv(x, weight, stride, padding);
  }

  static std::tuple<at::Tensor, at::Tensor> conv_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                          const at::Tensor& weight, int64_t stride, int64_t padding,
                                                          bool need_x, bool need_w) {
    if (use_gemm(x, weight, stride, padding))
      return gemm_conv_backward(grad_y, x, weight, stride, padding, need_x, need_w);
    return aten_conv_backward(grad_y, x, weight, stride, padding, need_x, need_w);
  }

  static void channel_stats(const at::Tensor& y, const ChannelView& v, const at::Tensor& mean, const at::Tensor& var) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_stats_cpu",
                                    [&] { stats_kernel<scalar_t>(y, v, mean, var); });
  }

  static void forward_apply(const at::Tensor& y, const ChannelView& v, const at::Tensor& scale, const at::Tensor& shift,
                            double slope, const at::Tensor& out) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_forward_cpu", [&] {
      forward_kernel<scalar_t>(y, v, scale.contiguous(), shift.contiguous(), slope, out);
    });
  }

  static void backward_reduce(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                              const at::Tensor& shift, const at::Tensor& center, double slope, const at::Tensor& r1,
                              const at::Tensor& r2) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_reduce_cpu", [&] {
      reduce_kernel<scalar_t>(g, y, v, scale.contiguous(), shift.contiguous(), center.contiguous(), slope, r1, r2);
    });
  }

  static void backward_apply(const at::Tensor& g, const at::Tensor& y, const ChannelView& v, const at::Tensor& scale,
                             const at::Tensor& shift, const at::Tensor& center, const at::Tensor& A,
                             const at::Tensor& B, const at::Tensor& D, double slope, const at::Tensor& grad_y) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "down_block_apply_cpu", [&] {
      apply_kernel<scalar_t>(g, y, v, scale.contiguous(), shift.contiguous(), center.contiguous(), A.contiguous(),
                             B.contiguous(), D.contiguous(), slope, grad_y);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CPU, m) {
  m.impl("down_block", &down_block<CpuDownKernels>);
  m.impl("down_block_backward", &down_block_backward<CpuDownKernels>);
}

}  // namespace down_blocks
}  // namespace attngan_fast
