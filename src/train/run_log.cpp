#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/spdlog.h>

#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/train/run_log.h"

namespace distill {

namespace {

// Console sink that first clears a live progress line, so log lines never mix with it.
class ConsoleSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit ConsoleSink(bool* progress_visible) : progress_visible_(progress_visible) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    if (*progress_visible_) {
      std::fputs("\r\033[K", stderr);
      *progress_visible_ = false;
    }
    std::fwrite(formatted.data(), 1, formatted.size(), stderr);
    std::fflush(stderr);
  }
  void flush_() override { std::fflush(stderr); }

 private:
  bool* progress_visible_;
};

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  else std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  return buf;
}

}  // namespace

struct RunLog::Impl {
  bool tty = ::isatty(STDERR_FILENO) == 1;
  bool progress_visible = false;
  std::shared_ptr<spdlog::logger> logger;
  std::ofstream metrics;
  std::string metrics_path;
};

RunLog::RunLog(const std::string& out_dir, bool append) : impl_(std::make_unique<Impl>()) {
  std::vector<spdlog::sink_ptr> sinks;
  auto console = std::make_shared<ConsoleSink>(&impl_->progress_visible);
  console->set_pattern("[%H:%M:%S] %^%l%$ %v");
  sinks.push_back(console);
  if (!out_dir.empty()) {
    const std::string log_path = paths::join(out_dir, "train.log");
    try {
      auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(log_path, /*truncate=*/!append);
      file->set_pattern("[%Y-%m-%d %H:%M:%S.%e] %l %v");
      sinks.push_back(file);
    } catch (const spdlog::spdlog_ex& e) {
      throw Error(log_path + ": cannot open the log file (" + std::string(e.what()) + "); check run.out_dir is writable");
    }
    impl_->metrics_path = paths::join(out_dir, "metrics.jsonl");
    impl_->metrics.open(impl_->metrics_path, append ? std::ios::app : std::ios::trunc);
    if (!impl_->metrics)
      throw Error(impl_->metrics_path + ": cannot open for writing; check run.out_dir is writable");
  }
  impl_->logger = std::make_shared<spdlog::logger>("distill", sinks.begin(), sinks.end());
  impl_->logger->set_level(spdlog::level::info);
  impl_->logger->flush_on(spdlog::level::info);
}

std::unique_ptr<RunLog> RunLog::for_rank(int64_t rank) {
  auto log = std::make_unique<RunLog>("");
  log->impl_->tty = false;  // no progress line: rank 0 draws it
  log->impl_->logger->sinks()[0]->set_pattern("[%H:%M:%S] rank " + std::to_string(rank) + " %^%l%$ %v");
  // Errors only: rank 0 says every warning of the job (a skipped step, a stop) once; an error ends the process
  // with its own "error:" line.
  log->impl_->logger->set_level(spdlog::level::err);
  return log;
}

RunLog::~RunLog() { end_progress(); }

void RunLog::info(const std::string& line) { impl_->logger->info(line); }
void RunLog::warn(const std::string& line) { impl_->logger->warn(line); }

void RunLog::event(const nlohmann::json& record) {
  if (!impl_->metrics.is_open()) return;
  impl_->metrics << record.dump() << '\n';
  impl_->metrics.flush();
  if (!impl_->metrics) throw Error(impl_->metrics_path + ": write failed (disk full?)");
}

void RunLog::progress(int64_t step, int64_t total_steps, double loss, double steps_per_s) {
  if (!impl_->tty) return;
  double eta = steps_per_s > 0 ? static_cast<double>(total_steps - step) / steps_per_s : NAN;
  char line[160];
  std::snprintf(line, sizeof line, "\r\033[Kstep %lld/%lld  loss %.4f  %.1f it/s  ETA %s",
                static_cast<long long>(step), static_cast<long long>(total_steps), loss, steps_per_s,
                format_duration(eta).c_str());
  std::fputs(line, stderr);
  std::fflush(stderr);
  impl_->progress_visible = true;
}

void RunLog::end_progress() {
  if (impl_ && impl_->progress_visible) {
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    impl_->progress_visible = false;
  }
}

}  // namespace distill
