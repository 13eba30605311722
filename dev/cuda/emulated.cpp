// A dev/cuda program compiled as C++ for the CUDA emulator (tests/cuda_emulator), as the production kernels are
// (tests/cuda_emulator/kd_loss_cuda_emulated.cpp): the very source that nvcc builds, not a copy.
// cmake/kernel_tests.cmake builds this file once per program, naming the program's source in
// DISTILL_DEV_CUDA_PROGRAM.
#include DISTILL_DEV_CUDA_PROGRAM
