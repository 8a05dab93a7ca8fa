// attngan_fast::_C — the schemas of every custom op, declared once.
//
// Per-device kernels live in cpu/ and cuda/ (one file per op family) and register with
// TORCH_LIBRARY_IMPL; the fake (meta) kernels, the autograd formulas and the Triton CUDA kernels
// are registered from Python (attngan_fast/ops/).
#include <Python.h>
#include <torch/library.h>

#ifndef ATTNGAN_CUDA_ARCHS
#define ATTNGAN_CUDA_ARCHS ""
#endif

extern "C" {
// `import attngan_fast._C` loads this library, which runs the registrations below.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
#ifdef WITH_CUDA
  PyModule_AddIntConstant(m, "with_cuda", 1);
#else
  PyModule_AddIntConstant(m, "with_cuda", 0);
#endif
  PyModule_AddStringConstant(m, "cuda_archs", ATTNGAN_CUDA_ARCHS);
  return m;
}
}

TORCH_LIBRARY(attngan_fast, m) {
  // Word-region attention (GlobalAttentionGeneral, per-sample mask), attngan_fast/ops/attention.py:
  // h (B, C, H, W), words (B, C, T), mask (B, T) bool (True = padded word) -> context (B, C, H, W),
  // weights (B, T, H, W) if need_weights else an empty (0,) tensor. Backward: grad_weights may be
  // None or empty (the weights were not used); weights, the forward's weights output or None, may be
  // used instead of recomputing them.
  m.def("word_region_attention(Tensor h, Tensor words, Tensor? mask, bool need_weights) -> (Tensor, Tensor)");
  m.def(
      "word_region_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor h, Tensor words, "
      "Tensor? mask, Tensor? weights) -> (Tensor, Tensor)");

  // DAMSM word-level similarity of every (image j, caption i) pair (docs/original_attngan.md §6.1-6.3):
  //   words (B, D, T), cap_lens (B,) int in [1, T], regions (B, D, H, W)
  //   -> sim (B, B) float32 (float64 for float64 inputs), sim[j, i] = image j vs caption i;
  //      attn (B, T, H, W) caption i's attention on image i (zero at t >= cap_lens[i]) when
  //      need_attention, else (0, T, H, W)
  // The backward recomputes the attention and returns (grad_words (B, D, T), grad_regions (B, D, H, W)).
  m.def(
      "damsm_word_similarity(Tensor words, Tensor cap_lens, Tensor regions, float gamma1, float gamma2, "
      "bool need_attention) -> (Tensor, Tensor)");
  m.def(
      "damsm_word_similarity_backward(Tensor grad_sim, Tensor words, Tensor cap_lens, Tensor regions, "
      "float gamma1, float gamma2) -> (Tensor, Tensor)");

  // The generator blocks (csrc/blocks.h; cpu/blocks.cpp, cuda/blocks.cu). x (N, Ci, H, W); conv
  // weights (Co, Ci, 3, 3), padding 1, no bias; S = 2 with upsample (nearest 2x first), else 1.
  // Outputs and input grads take x's memory format (channels_last or contiguous); conv_out,
  // conv1_out, hidden, conv2_out are channels_last; mean/var are float (double for double x).
  //   upsample_conv3x3: conv3x3(upsample2x(x)) (N, Co, 2H, 2W) by the four 2x2 phase convs.
  m.def("upsample_conv3x3(Tensor x, Tensor weight) -> Tensor");
  m.def("upsample_conv3x3_backward(Tensor grad_out, Tensor x, Tensor weight) -> (Tensor, Tensor)");
  //   up_block: [upsample2x] -> conv3x3 -> BatchNorm2d -> GLU: (N, Co/2, S*H, S*W).
  //   Returns (out, conv_out, mean (Co,), var (Co,)): conv_out as blocks.h PhaseGeom::conv_out_sizes
  //   ((N, S*S*Co, H+S-1, W+S-1), or (4N, Co, H, W) for the per-phase GEMMs on maps of <= 64
  //   pixels); mean / var the batch mean and biased variance when training, else copies of the
  //   running statistics.
  m.def(
      "up_block(Tensor x, Tensor weight, Tensor bn_weight, Tensor bn_bias, Tensor? running_mean, "
      "Tensor? running_var, bool upsample, bool training, float eps) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "up_block_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor bn_weight, Tensor bn_bias, "
      "Tensor conv_out, Tensor mean, Tensor var, bool upsample, bool training, float eps) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  //   res_block: x + BN2(conv2(GLU(BN1(conv1(x))))), weight1 (2C, C, 3, 3), weight2 (C, C, 3, 3).
  //   Returns (out, conv1_out, mean1, var1, hidden (N, C, H, W), conv2_out, mean2, var2).
  m.def(
      "res_block(Tensor x, Tensor weight1, Tensor bn1_weight, Tensor bn1_bias, Tensor? running_mean1, "
      "Tensor? running_var1, Tensor weight2, Tensor bn2_weight, Tensor bn2_bias, Tensor? running_mean2, "
      "Tensor? running_var2, bool training, float eps1, float eps2) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "res_block_backward(Tensor grad_out, Tensor x, Tensor weight1, Tensor bn1_weight, Tensor bn1_bias, "
      "Tensor conv1_out, Tensor mean1, Tensor var1, Tensor hidden, Tensor weight2, Tensor bn2_weight, "
      "Tensor conv2_out, Tensor mean2, Tensor var2, bool training, float eps1, float eps2) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  // The discriminator blocks (csrc/down_blocks.h; cpu/down_blocks.cpp, cuda/down_blocks.cu):
  // conv (weight (Co, Ci, K, K), no bias, `stride`, `padding`) [+ addend (N, Co, Ho, Wo)]
  // [-> BatchNorm2d when bn_weight is given] -> LeakyReLU(negative_slope > 0). Output and grad_x
  // take x's memory format. Returns (out, conv_out, mean (Co,), var (Co,)): with BatchNorm conv_out
  // is the BatchNorm input (x's format) and mean / var the batch mean and biased variance when
  // training, else copies of the running statistics (float, double for double x); without
  // BatchNorm the three are empty. The backward reads `saved` = conv_out with BatchNorm, out
  // without; output_mask selects the grads of (x, weight, addend) (the others come back empty).
  m.def(
      "down_block(Tensor x, Tensor weight, Tensor? addend, Tensor? bn_weight, Tensor? bn_bias, "
      "Tensor? running_mean, Tensor? running_var, int stride, int padding, bool training, float eps, "
      "float negative_slope) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "down_block_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bn_weight, Tensor? bn_bias, "
      "Tensor saved, Tensor mean, Tensor var, int stride, int padding, bool training, float eps, "
      "float negative_slope, bool[3] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}
