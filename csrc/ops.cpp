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
  // GLU over the channel dim: x (N, 2C, *) -> x[:, :C] * sigmoid(x[:, C:])  (N, C, *)
  m.def("glu(Tensor x) -> Tensor");
  m.def("glu_backward(Tensor grad_out, Tensor x) -> Tensor");

  // Word-region attention (GlobalAttentionGeneral, per-sample mask), attngan_fast/ops/attention.py:
  // h (B, C, H, W), words (B, C, T), mask (B, T) bool (True = padded word) -> context (B, C, H, W),
  // weights (B, T, H, W) if need_weights else an empty (0,) tensor. Backward: grad_weights may be
  // None or empty (the weights were not used); weights, the forward's weights output or None, may be
  // used instead of recomputing them.
  m.def("word_region_attention(Tensor h, Tensor words, Tensor? mask, bool need_weights) -> (Tensor, Tensor)");
  m.def(
      "word_region_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor h, Tensor words, "
      "Tensor? mask, Tensor? weights) -> (Tensor, Tensor)");

  // DAMSM word-level similarity of every (image j, caption i) pair (spec 6.1-6.3):
  //   words (B, D, T), cap_lens (B,) int in [1, T], regions (B, D, H, W)
  //   -> sim (B, B) float32 (float64 for float64 inputs), sim[j, i] = image j vs caption i;
  //      attn (B, T, H, W) caption i's attention on image i (zero at t >= cap_lens[i]) when
  //      need_attention, else (0, T, H, W)
  // The backward recomputes the attention and returns (grad_words (B, D, T), grad_regions (B, D, H, W)).
  m.def("damsm_word_similarity(Tensor words, Tensor cap_lens, Tensor regions, float gamma1, float gamma2, "
        "bool need_attention) -> (Tensor, Tensor)");
  m.def("damsm_word_similarity_backward(Tensor grad_sim, Tensor words, Tensor cap_lens, Tensor regions, "
        "float gamma1, float gamma2) -> (Tensor, Tensor)");
}
