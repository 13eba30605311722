# Fused-loss kernels. Sets DISTILL_KERNEL_SOURCES (compiled into distill_core) and, when
# DISTILL_CUDA_KERNELS is ON, defines the raw-pointer CUDA library distill_cuda_kernels.
set(DISTILL_KERNEL_SOURCES "")
