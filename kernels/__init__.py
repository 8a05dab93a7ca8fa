"""Triton kernels (CUDA), shipped as ``attngan_fast.kernels``; one module per op family.

Importing a module here needs Triton. On a CPU-only machine the kernels still run, slowly, in
Triton's interpreter (``TRITON_INTERPRET=1`` set before the import, CPU tensors): the tests use it.
"""
