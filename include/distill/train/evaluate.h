// Validation metrics: student accuracy, teacher accuracy, teacher-student top-1 agreement, and the KD and
// CE terms of the loss over the validation rows (means over rows, as in kd_loss.h with normalizer = rows).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json_fwd.hpp>

namespace distill {

class Model;
struct LossConfig;

struct EvalResult {
  int64_t rows = 0;
  double student_accuracy = 0;
  bool has_teacher = false;
  double teacher_accuracy = 0;
  double agreement = 0;  // fraction of rows where the student's top-1 equals the teacher's
  double kd_loss = 0;    // 0 without a teacher
  double ce_loss = 0;
  nlohmann::json to_json() const;
};

// Logits of `model` for every row of x, in eval mode, in batches; on the CPU.
at::Tensor predict_logits(Model& model, const at::Tensor& x, int64_t batch_size, const c10::Device& device);

// `teacher_logits` undefined: no teacher.
EvalResult evaluate_logits(const at::Tensor& student_logits, const at::Tensor& teacher_logits, const at::Tensor& labels,
                           const LossConfig& loss);

}  // namespace distill
