// grad_scale.cu compiled as C++ for the CUDA emulator (see kd_loss_cuda_emulated.cpp).
#include "../../src/kernels/grad_scale.cu"
