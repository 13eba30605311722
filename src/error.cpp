#include "distill/error.h"

// distill::Error is header-only; this file anchors the library's first object.
namespace distill {}
