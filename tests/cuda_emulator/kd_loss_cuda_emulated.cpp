// The CUDA kernels compiled as C++ for the CUDA emulator (DISTILL_CUDA_EMULATOR, with include/ of this folder in
// place of the CUDA toolkit's headers): the very source that nvcc builds, not a copy.
#include "../../src/kernels/kd_loss_cuda.cu"
