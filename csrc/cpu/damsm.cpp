// DAMSM word-level similarity on the CPU, forward and backward, for every (image j, caption i) pair.
//
// Per pair, with n = cap_lens[i], words w_t (t < n) and regions r_k (k < N = H * W):
//   s_tk = w_t . r_k;  a_tk = softmax_t s_tk;  b_tk = softmax_k (gamma1 a_tk);  c_t = sum_k b_tk r_k;
//   cos_t = w_t . c_t / max(|w_t| |c_t|, 1e-8);  sim[j, i] = log sum_t exp(gamma2 cos_t).
//
// Layout: the valid words of all captions are packed into one (L = sum n, D) matrix, and captions are
// grouped into blocks of about kBlockRows rows. One task takes one image j and one caption block: two
// GEMMs (S = W_blk R_j, C = B R_j^T, MKL through at::mm on that thread) with both softmaxes and the
// cosines in between, on a (rows x N) tile that stays in cache; nothing of size B x B x T x N exists.
//
// Backward (per image j, all blocks; the attention is recomputed):
//   g_t   = dsim * gamma2 * exp(gamma2 cos_t - sim)
//   dc_t  = g_t (w_t / q - cos_t c_t / |c_t|^2),   dw_t += g_t (c_t / q - cos_t w_t / |w_t|^2)
//           (q = |w_t||c_t|; when q < eps: dc_t = g_t w_t / eps, dw_t += g_t c_t / eps)
//   db_tk = dc_t . r_k;        da_tk = gamma1 b_tk (db_tk - d_t),  d_t = sum_k b_tk db_tk = dc_t . c_t
//   ds_tk = a_tk (da_tk - sum_t' a_t'k da_t'k)
//   dW += dS R_j^T;            dR_j = dC^T B + W^T dS
// dR_j belongs to one task; dW gets one partial per chunk of images, summed in chunk order at the end
// (deterministic for a given thread count).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "vec_exp.h"

#include <algorithm>
#include <cmath>
#include <bit>
#include <limits>
#include <utility>
#include <vector>

namespace attngan_fast {
namespace {

constexpr int64_t kBlockRows = 256;  // word rows per caption block: the tiles are 3 x rows x N floats
constexpr double kCosEps = 1e-8;

// Shapes, caption lengths and the packing of the valid words.
struct Layout {
  int64_t B = 0, D = 0, T = 0, H = 0, W = 0, N = 0, L = 0;
  std::vector<int64_t> lens;                        // (B,)
  std::vector<int64_t> offsets;                     // (B + 1,): first packed row of each caption, then L
  std::vector<std::pair<int64_t, int64_t>> blocks;  // caption ranges [i0, i1) of about kBlockRows rows
};

Layout make_layout(const at::Tensor& words, const at::Tensor& cap_lens, const at::Tensor& regions) {
  TORCH_CHECK_VALUE(words.dim() == 3, "damsm_word_similarity: words: expected (B, D, T), got ", words.sizes());
  TORCH_CHECK_VALUE(regions.dim() == 4, "damsm_word_similarity: regions: expected (B, D, H, W), got ", regions.sizes());
  TORCH_CHECK_VALUE(regions.size(0) == words.size(0) && regions.size(1) == words.size(1),
                    "damsm_word_similarity: regions: expected (B=", words.size(0), ", D=", words.size(1),
                    ", H, W), got ", regions.sizes());
  TORCH_CHECK_VALUE(cap_lens.dim() == 1 && cap_lens.size(0) == words.size(0),
                    "damsm_word_similarity: cap_lens: expected (B=", words.size(0), ",), got ", cap_lens.sizes());
  TORCH_CHECK_VALUE(cap_lens.scalar_type() == at::kLong || cap_lens.scalar_type() == at::kInt,
                    "damsm_word_similarity: cap_lens: expected int64 or int32, got ", cap_lens.scalar_type());
  TORCH_CHECK_VALUE(words.scalar_type() == regions.scalar_type(), "damsm_word_similarity: regions: expected dtype ",
                    words.scalar_type(), " (as words), got ", regions.scalar_type());
  Layout g;
  g.B = words.size(0);
  g.D = words.size(1);
  g.T = words.size(2);
  g.H = regions.size(2);
  g.W = regions.size(3);
  g.N = g.H * g.W;
  TORCH_CHECK_VALUE(g.B > 0 && g.D > 0 && g.T > 0 && g.N > 0,
                    "damsm_word_similarity: words and regions must be non-empty, got words ", words.sizes(),
                    " and regions ", regions.sizes());
  const at::Tensor lens = cap_lens.to(at::kLong).contiguous();
  g.lens.assign(lens.const_data_ptr<int64_t>(), lens.const_data_ptr<int64_t>() + g.B);
  g.offsets.assign(g.B + 1, 0);
  for (int64_t i = 0; i < g.B; ++i) {
    TORCH_CHECK_VALUE(g.lens[i] >= 1 && g.lens[i] <= g.T,
                      "damsm_word_similarity: cap_lens: expected values in [1, T=", g.T, "], got cap_lens[", i,
                      "] = ", g.lens[i]);
    g.offsets[i + 1] = g.offsets[i] + g.lens[i];
  }
  g.L = g.offsets[g.B];
  // blocks of at least L / ceil(L / kBlockRows) rows and at most kBlockRows (unless one caption is
  // longer): about even sizes, no small GEMM at the end
  const int64_t n_target = (g.L + kBlockRows - 1) / kBlockRows;
  const int64_t target = (g.L + n_target - 1) / n_target;
  int64_t i0 = 0;
  for (int64_t i = 0; i < g.B; ++i) {
    if (i + 1 == g.B || g.offsets[i + 1] - g.offsets[i0] >= target || g.offsets[i + 2] - g.offsets[i0] > kBlockRows) {
      g.blocks.emplace_back(i0, i + 1);
      i0 = i + 1;
    }
  }
  return g;
}

// (L,) int64: for each packed row, its row i * T + t in the (B * T, D) view of the words.
at::Tensor packed_rows(const Layout& g) {
  std::vector<int64_t> rows;
  rows.reserve(g.L);
  for (int64_t i = 0; i < g.B; ++i) {
    for (int64_t t = 0; t < g.lens[i]; ++t) rows.push_back(i * g.T + t);
  }
  return at::tensor(rows, at::TensorOptions().dtype(at::kLong));
}

// (L, D) contiguous: the first cap_lens[i] word vectors of every caption, one per row.
at::Tensor pack_words(const at::Tensor& words, const Layout& g) {
  return words.transpose(1, 2).reshape({g.B * g.T, g.D}).index_select(0, packed_rows(g)).contiguous();
}

// In place over rows [0, n) of s (ld = N): softmax over the rows (the words), for each column k.
// mx and sum are scratch of N values.
template <typename scalar_t>
void softmax_over_words(scalar_t* s, int64_t n, int64_t N, scalar_t* mx, scalar_t* sum) {
  std::copy_n(s, N, mx);
  for (int64_t t = 1; t < n; ++t) {
    const scalar_t* st = s + t * N;
#pragma omp simd
    for (int64_t k = 0; k < N; ++k) mx[k] = std::max(mx[k], st[k]);
  }
  std::fill_n(sum, N, scalar_t(0));
  for (int64_t t = 0; t < n; ++t) {
    scalar_t* st = s + t * N;
#pragma omp simd
    for (int64_t k = 0; k < N; ++k) {
      st[k] = vexp(st[k] - mx[k]);
      sum[k] += st[k];
    }
  }
#pragma omp simd
  for (int64_t k = 0; k < N; ++k) sum[k] = scalar_t(1) / sum[k];
  for (int64_t t = 0; t < n; ++t) {
    scalar_t* st = s + t * N;
#pragma omp simd
    for (int64_t k = 0; k < N; ++k) st[k] *= sum[k];
  }
}

// dst[k] = softmax_k(gamma1 * a[k]) over one row of N regions (dst may alias a).
template <typename scalar_t>
void softmax_over_regions(const scalar_t* a, scalar_t* dst, int64_t N, scalar_t gamma1) {
  scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
#pragma omp simd reduction(max : mx)
  for (int64_t k = 0; k < N; ++k) mx = mx < gamma1 * a[k] ? gamma1 * a[k] : mx;
  scalar_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < N; ++k) {
    dst[k] = vexp(gamma1 * a[k] - mx);
    sum += dst[k];
  }
  const scalar_t inv = scalar_t(1) / sum;
#pragma omp simd
  for (int64_t k = 0; k < N; ++k) dst[k] *= inv;
}

// dot(w, c), |w|^2, |c|^2 over D.
template <typename scalar_t>
struct Dots {
  scalar_t wc, ww, cc;
};

template <typename scalar_t>
Dots<scalar_t> dots(const scalar_t* w, const scalar_t* c, int64_t D) {
  scalar_t wc = 0, ww = 0, cc = 0;
#pragma omp simd reduction(+ : wc, ww, cc)
  for (int64_t d = 0; d < D; ++d) {
    wc += w[d] * c[d];
    ww += w[d] * w[d];
    cc += c[d] * c[d];
  }
  return {wc, ww, cc};
}

// cos(w, c) with the clamp on the product of the norms (the reference's cosine_similarity).
template <typename scalar_t>
scalar_t cosine(const Dots<scalar_t>& p) {
  return p.wc / std::max(std::sqrt(p.ww) * std::sqrt(p.cc), scalar_t(kCosEps));
}

// log sum_t exp(gamma2 * cos[t]) over n values.
template <typename scalar_t>
scalar_t log_sum_exp(const scalar_t* cos, int64_t n, scalar_t gamma2) {
  scalar_t mx = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t t = 0; t < n; ++t) mx = std::max(mx, gamma2 * cos[t]);
  scalar_t sum = 0;
  for (int64_t t = 0; t < n; ++t) sum += std::exp(gamma2 * cos[t] - mx);
  return mx + std::log(sum);
}

// The tensors every task reads: packed words (L, D) and regions (B, D, N), both contiguous.
struct Operands {
  at::Tensor wc;
  at::Tensor regions;
};

// S = W_blk R_j (rows, N), then softmax over each caption's words in place: S becomes A.
// scratch: 2 N values.
template <typename scalar_t>
void word_probabilities(const Operands& op, const Layout& g, int64_t j, int64_t i0, int64_t i1, at::Tensor& S,
                        scalar_t* scratch) {
  const int64_t r0 = g.offsets[i0];
  at::mm_out(S, op.wc.narrow(0, r0, g.offsets[i1] - r0), op.regions[j]);
  scalar_t* s = S.mutable_data_ptr<scalar_t>();
  for (int64_t i = i0; i < i1; ++i) {
    softmax_over_words(s + (g.offsets[i] - r0) * g.N, g.lens[i], g.N, scratch, scratch + g.N);
  }
}

template <typename scalar_t>
void forward_kernel(const Operands& op, const Layout& g, scalar_t gamma1, scalar_t gamma2, at::Tensor& sim,
                    at::Tensor* attn) {
  const int64_t n_blocks = static_cast<int64_t>(g.blocks.size());
  scalar_t* sim_p = sim.mutable_data_ptr<scalar_t>();
  at::parallel_for(0, g.B * n_blocks, 1, [&](int64_t begin, int64_t end) {
    const int64_t max_rows = std::max(kBlockRows, g.T);
    at::Tensor S_buf = at::empty({max_rows, g.N}, op.wc.options());
    at::Tensor C_buf = at::empty({max_rows, g.D}, op.wc.options());
    std::vector<scalar_t> cos(g.T), scratch(2 * g.N);
    const scalar_t* w_all = op.wc.const_data_ptr<scalar_t>();
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t j = unit / n_blocks;
      const auto [i0, i1] = g.blocks[unit % n_blocks];
      const int64_t r0 = g.offsets[i0], rows = g.offsets[i1] - r0;
      at::Tensor S = S_buf.narrow(0, 0, rows), C = C_buf.narrow(0, 0, rows);
      word_probabilities<scalar_t>(op, g, j, i0, i1, S, scratch.data());
      scalar_t* s = S.mutable_data_ptr<scalar_t>();
      for (int64_t r = 0; r < rows; ++r) softmax_over_regions(s + r * g.N, s + r * g.N, g.N, gamma1);
      if (attn != nullptr && i0 <= j && j < i1) {
        std::copy_n(s + (g.offsets[j] - r0) * g.N, g.lens[j] * g.N, attn->mutable_data_ptr<scalar_t>() + j * g.T * g.N);
      }
      at::mm_out(C, S, op.regions[j].t());
      const scalar_t* c = C.const_data_ptr<scalar_t>();
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t first = g.offsets[i] - r0;
        for (int64_t t = 0; t < g.lens[i]; ++t) {
          cos[t] = cosine(dots(w_all + (r0 + first + t) * g.D, c + (first + t) * g.D, g.D));
        }
        sim_p[j * g.B + i] = log_sum_exp(cos.data(), g.lens[i], gamma2);
      }
    }
  });
}

// One image j of the backward: adds dW of every caption into dw (L, D) and writes dR_j.
template <typename scalar_t>
void backward_image(const Operands& op, const Layout& g, scalar_t gamma1, scalar_t gamma2, const scalar_t* grad_sim,
                    int64_t j, at::Tensor& A_buf, at::Tensor& B_buf, at::Tensor& P_buf, at::Tensor& C_buf,
                    at::Tensor& dw, at::Tensor dR) {
  const scalar_t* w_all = op.wc.const_data_ptr<scalar_t>();
  const at::Tensor R = op.regions[j];
  const int64_t N = g.N, D = g.D;
  std::vector<Dots<scalar_t>> dp(g.T);
  std::vector<scalar_t> cos(g.T), scratch(2 * N), delta(std::max(kBlockRows, g.T));
  bool first_block = true;
  for (const auto& [i0, i1] : g.blocks) {
    const int64_t r0 = g.offsets[i0], rows = g.offsets[i1] - r0;
    at::Tensor A = A_buf.narrow(0, 0, rows), Bt = B_buf.narrow(0, 0, rows);
    at::Tensor P = P_buf.narrow(0, 0, rows), C = C_buf.narrow(0, 0, rows);
    word_probabilities<scalar_t>(op, g, j, i0, i1, A, scratch.data());
    const scalar_t* a = A.const_data_ptr<scalar_t>();
    scalar_t* b = Bt.mutable_data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r) softmax_over_regions(a + r * N, b + r * N, N, gamma1);
    at::mm_out(C, Bt, R.t());
    // cosine terms: C becomes dC; delta_t = dc_t . c_t; the direct dW terms go into dw
    scalar_t* c = C.mutable_data_ptr<scalar_t>();
    scalar_t* dw_p = dw.mutable_data_ptr<scalar_t>();
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t first = g.offsets[i] - r0, n = g.lens[i];
      for (int64_t t = 0; t < n; ++t) {
        dp[t] = dots(w_all + (r0 + first + t) * D, c + (first + t) * D, D);
        cos[t] = cosine(dp[t]);
      }
      const scalar_t lse = log_sum_exp(cos.data(), n, gamma2);
      const scalar_t dsim = grad_sim[j * g.B + i];
      for (int64_t t = 0; t < n; ++t) {
        const int64_t row = first + t;
        const scalar_t gt = dsim * gamma2 * std::exp(gamma2 * cos[t] - lse);
        const scalar_t q = std::sqrt(dp[t].ww) * std::sqrt(dp[t].cc);
        // dc = kw w - kc c,  dw += kw c - kw2 w; kc = kw2 = 0 where the norm clamp is active
        const bool unclamped = q >= scalar_t(kCosEps);
        const scalar_t kw = gt / std::max(q, scalar_t(kCosEps));
        const scalar_t kc = unclamped ? gt * cos[t] / dp[t].cc : scalar_t(0);
        const scalar_t kw2 = unclamped ? gt * cos[t] / dp[t].ww : scalar_t(0);
        const scalar_t* w = w_all + (r0 + row) * D;
        scalar_t* ct = c + row * D;
        scalar_t* dwt = dw_p + (r0 + row) * D;
        scalar_t d = 0;
#pragma omp simd reduction(+ : d)
        for (int64_t e = 0; e < D; ++e) {
          const scalar_t dc = kw * w[e] - kc * ct[e];
          d += dc * ct[e];
          dwt[e] += kw * ct[e] - kw2 * w[e];
          ct[e] = dc;
        }
        delta[row] = d;
      }
    }
    // dB = dC R_j, then dA = gamma1 B (dB - delta), then dS = A (dA - sum_t A dA), all in P
    at::mm_out(P, C, R);
    scalar_t* p = P.mutable_data_ptr<scalar_t>();
    for (int64_t r = 0; r < rows; ++r) {
      scalar_t* pr = p + r * N;
      const scalar_t* br = b + r * N;
      const scalar_t dr = delta[r];
#pragma omp simd
      for (int64_t k = 0; k < N; ++k) pr[k] = gamma1 * br[k] * (pr[k] - dr);
    }
    scalar_t* cs = scratch.data();
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t first = g.offsets[i] - r0, n = g.lens[i];
      std::fill_n(cs, N, scalar_t(0));
      for (int64_t t = 0; t < n; ++t) {
        const scalar_t* ar = a + (first + t) * N;
        const scalar_t* pr = p + (first + t) * N;
#pragma omp simd
        for (int64_t k = 0; k < N; ++k) cs[k] += ar[k] * pr[k];
      }
      for (int64_t t = 0; t < n; ++t) {
        const scalar_t* ar = a + (first + t) * N;
        scalar_t* pr = p + (first + t) * N;
#pragma omp simd
        for (int64_t k = 0; k < N; ++k) pr[k] = ar[k] * (pr[k] - cs[k]);
      }
    }
    const at::Tensor w_blk = op.wc.narrow(0, r0, rows);
    dw.narrow(0, r0, rows).addmm_(P, R.t());
    if (first_block) {
      at::mm_out(dR, C.t(), Bt);
      first_block = false;
    } else {
      dR.addmm_(C.t(), Bt);
    }
    dR.addmm_(w_blk.t(), P);
  }
}

template <typename scalar_t>
void backward_kernel(const Operands& op, const Layout& g, scalar_t gamma1, scalar_t gamma2, const scalar_t* grad_sim,
                     at::Tensor& grad_wc, at::Tensor& grad_regions) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(g.B, at::get_num_threads()));
  at::Tensor partial = at::zeros({chunks, g.L, g.D}, op.wc.options());
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    const int64_t max_rows = std::max(kBlockRows, g.T);
    at::Tensor A_buf = at::empty({max_rows, g.N}, op.wc.options());
    at::Tensor B_buf = at::empty({max_rows, g.N}, op.wc.options());
    at::Tensor P_buf = at::empty({max_rows, g.N}, op.wc.options());
    at::Tensor C_buf = at::empty({max_rows, g.D}, op.wc.options());
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      at::Tensor dw = partial[chunk];
      for (int64_t j = chunk * g.B / chunks; j < (chunk + 1) * g.B / chunks; ++j) {
        backward_image<scalar_t>(op, g, gamma1, gamma2, grad_sim, j, A_buf, B_buf, P_buf, C_buf, dw, grad_regions[j]);
      }
    }
  });
  grad_wc = partial.sum(0);
}

at::Tensor compute_dtype_of(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? x : x.to(at::kFloat);
}

// Detached: the worker threads run ATen ops (at::mm) without this thread's dispatch state.
Operands make_operands(const at::Tensor& words, const at::Tensor& regions, const Layout& g) {
  return {pack_words(compute_dtype_of(words.detach()), g),
          compute_dtype_of(regions.detach()).reshape({g.B, g.D, g.N}).contiguous()};
}

std::tuple<at::Tensor, at::Tensor> damsm_word_similarity_cpu(const at::Tensor& words, const at::Tensor& cap_lens,
                                                             const at::Tensor& regions, double gamma1, double gamma2,
                                                             bool need_attention) {
  const Layout g = make_layout(words, cap_lens, regions);
  const Operands op = make_operands(words, regions, g);
  at::Tensor sim = at::empty({g.B, g.B}, op.wc.options());
  at::Tensor attn = need_attention ? at::zeros({g.B, g.T, g.H, g.W}, op.wc.options())
                                   : at::empty({0, g.T, g.H, g.W}, words.options());
  AT_DISPATCH_FLOATING_TYPES(op.wc.scalar_type(), "damsm_word_similarity_cpu", [&] {
    forward_kernel<scalar_t>(op, g, static_cast<scalar_t>(gamma1), static_cast<scalar_t>(gamma2), sim,
                             need_attention ? &attn : nullptr);
  });
  return {sim, attn.to(words.scalar_type())};
}

std::tuple<at::Tensor, at::Tensor> damsm_word_similarity_backward_cpu(const at::Tensor& grad_sim,
                                                                      const at::Tensor& words,
                                                                      const at::Tensor& cap_lens,
                                                                      const at::Tensor& regions, double gamma1,
                                                                      double gamma2) {
  const Layout g = make_layout(words, cap_lens, regions);
  TORCH_CHECK_VALUE(grad_sim.dim() == 2 && grad_sim.size(0) == g.B && grad_sim.size(1) == g.B,
                    "damsm_word_similarity_backward: grad_sim: expected (", g.B, ", ", g.B, "), got ",
                    grad_sim.sizes());
  const Operands op = make_operands(words, regions, g);
  const at::Tensor gs = grad_sim.to(op.wc.scalar_type()).contiguous();
  at::Tensor grad_wc;
  at::Tensor grad_regions = at::empty({g.B, g.D, g.N}, op.wc.options());
  AT_DISPATCH_FLOATING_TYPES(op.wc.scalar_type(), "damsm_word_similarity_backward_cpu", [&] {
    backward_kernel<scalar_t>(op, g, static_cast<scalar_t>(gamma1), static_cast<scalar_t>(gamma2),
                              gs.const_data_ptr<scalar_t>(), grad_wc, grad_regions);
  });
  // unpack (L, D) into (B, D, T), zero at t >= cap_lens[i]
  at::Tensor grad_words = at::zeros({g.B * g.T, g.D}, grad_wc.options());
  grad_words.index_copy_(0, packed_rows(g), grad_wc);
  grad_words = grad_words.view({g.B, g.T, g.D}).transpose(1, 2).contiguous().to(words.scalar_type());
  return {grad_words, grad_regions.view({g.B, g.D, g.H, g.W}).to(regions.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(attngan_fast, CPU, m) {
  m.impl("damsm_word_similarity", &damsm_word_similarity_cpu);
  m.impl("damsm_word_similarity_backward", &damsm_word_similarity_backward_cpu);
}

}  // namespace attngan_fast
