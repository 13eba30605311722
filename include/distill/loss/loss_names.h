// The words that name the loss's settings, as run configs (`loss.kind`, `loss.topk_tail`, `loss.vocab`) and the
// bench's flags (`--kind`, `--topk-tail`) spell them: one list for the config check, the trainer and the bench.
// Light on purpose (no ATen): the config layer includes it.
#pragma once

#include <string>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill {

// What to do when the teacher has more outputs than the student (a padded embedding table).
enum class VocabPolicy { error, truncate };

// Each returns the value `name` spells, or throws distill::Error "<key>: must be one of a | b, got 'name'".
kernels::Divergence divergence_named(const std::string& name, const std::string& key);  // forward_kl | reverse_kl | jsd
kernels::TopkTail topk_tail_named(const std::string& name, const std::string& key);      // ignore | tail
VocabPolicy vocab_policy_named(const std::string& name, const std::string& key);         // error | truncate

}  // namespace distill
