// What a run tells the world: spdlog lines to the console and <out_dir>/train.log, one JSON object per
// event in <out_dir>/metrics.jsonl, and on a terminal a live progress line that log lines print over.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace spdlog {
class logger;
}

namespace distill {

class RunLog {
 public:
  // out_dir empty: console only (no files). append: keep existing train.log / metrics.jsonl (resume).
  explicit RunLog(const std::string& out_dir, bool append = false);
  // A data-parallel rank other than 0: console only, errors only, each line naming the rank (rank 0 logs).
  static std::unique_ptr<RunLog> for_rank(int64_t rank);
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  void info(const std::string& line);
  void warn(const std::string& line);
  // Appends one line to metrics.jsonl and flushes it.
  void event(const nlohmann::json& record);
  // Redraws the progress line (terminal only; a no-op otherwise).
  void progress(int64_t step, int64_t total_steps, double loss, double steps_per_s);
  void end_progress();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distill
