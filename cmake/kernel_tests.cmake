# Tests of the fused-loss kernels (included from the top-level CMakeLists inside DISTILL_BUILD_TESTS).
