#include <cmath>

#include "distill/config/config.h"
#include "distill/train/optim.h"

namespace distill {

double learning_rate_at(const OptimConfig& c, int64_t step, int64_t total_steps) {
  if (c.warmup_steps > 0 && step < c.warmup_steps)
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  int64_t after = step - c.warmup_steps;
  if (c.schedule == "cosine") {
    int64_t span = std::max<int64_t>(1, total_steps - c.warmup_steps - 1);
    double progress = std::min(1.0, static_cast<double>(after) / static_cast<double>(span));
    return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + std::cos(M_PI * progress));
  }
  if (c.schedule == "step") return c.lr * std::pow(c.gamma, static_cast<double>(after / c.step_size));
  return c.lr;
}

}  // namespace distill
