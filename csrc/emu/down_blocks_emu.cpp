// csrc/cuda/down_blocks.cu compiled as host C++ against the CUDA emulation (emu/cuda_emu.h): its
// kernels and launchers, registered as attngan_fast_emu::down_block* for CPU tensors. Test-only:
// built by tests/cuda_emu.py (torch.utils.cpp_extension.load), never by setup.py.
#define ATTNGAN_CUDA_EMU 1
#include "cuda/down_blocks.cu"
