// The distillation loss of one micro-batch, from the models' outputs (include/distill/models/model.h).
//
// Every prediction is one row of the loss in kd_loss.h: a classifier's row, or a language model's position
// (its next-token target), so [B, T, V] outputs and [B, T] targets are flattened to B*T rows. Targets equal to
// ignore_index count nowhere, and the caller's `normalizer` is the count of valid targets in the whole
// optimizer step (all micro-batches, all ranks).
//
// A student that hands over hidden states and its output head (a built-in language model) never has its
// whole [B*T, V] logits alive: the head and the fused loss run over chunks of positions (Liger-Kernel's
// fused-linear approach). Each chunk's logits and their gradient are formed, turned into the gradients of the
// hidden states and of the head (accumulated over the chunks), and dropped; the backward hands those over.
// A teacher with hidden states and a head is applied chunk by chunk too.
#pragma once

#include <cstdint>
#include <functional>

#include <ATen/core/Tensor.h>

#include "distill/loss/kd_loss.h"
#include "distill/models/model.h"

namespace distill {

struct OutputLossOptions {
  KdLossOptions kd;
  int64_t topk = 0;        // > 0: distil from the teacher's k largest logits per row (loss.topk)
  int64_t chunk_rows = 0;  // positions per chunk of the output head; 0: about 32 MiB of float32 logits per chunk
};

// Rows per chunk for a vocabulary of `vocab`: `chunk_rows`, or the automatic size.
int64_t loss_chunk_rows(int64_t chunk_rows, int64_t vocab);

// `teacher` null: supervised. `cached` (index defined): a sparse teacher handed over by the data (a teacher
// cache), used instead of `teacher`. Differentiable w.r.t. the student's logits, or its hidden states and head.
LossTerms output_kd_loss(const ModelOutput& student, const ModelOutput* teacher, const SparseTeacher& cached,
                         const at::Tensor& targets, const OutputLossOptions& options, double normalizer);

// Walks the flattened positions chunk by chunk with both models' logits, without autograd: what evaluation
// accumulates over. `fn(student_logits [c, V], teacher_logits [c, V_t] or undefined, targets [c])`.
void for_each_logits_chunk(const ModelOutput& student, const ModelOutput* teacher, const at::Tensor& targets,
                           int64_t chunk_rows,
                           const std::function<void(const at::Tensor&, const at::Tensor&, const at::Tensor&)>& fn);

}  // namespace distill
