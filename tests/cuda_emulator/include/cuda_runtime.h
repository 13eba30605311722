// Shim: the CUDA emulator in place of the CUDA toolkit header (see ../cuda_emulator.h).
#pragma once
#include "../cuda_emulator.h"
