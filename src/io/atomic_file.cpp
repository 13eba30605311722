#include "distill/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "distill/error.h"
#include "distill/io/paths.h"

namespace distill {


namespace {

std::atomic<int64_t>& failure_budget() {
  static std::atomic<int64_t> budget{[] {
    const char* env = std::getenv("DISTILL_TEST_FAIL_WRITE_AFTER_BYTES");
    return env ? std::atoll(env) : int64_t{0};
  }()};
  return budget;
}

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

void set_write_failure_after_bytes(int64_t bytes) { failure_budget() = bytes; }

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  tmp_path_ = path_ + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(tmp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    int err = errno;
    throw Error(path_ + ": cannot create (" + errno_text(err) + "); check that the folder exists and is writable");
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(tmp_path_.c_str());
}

void AtomicFile::write(const void* data, size_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    size_t chunk = bytes;
    auto& budget = failure_budget();
    int64_t left = budget.load();
    if (left > 0) {
      if (static_cast<int64_t>(chunk) >= left) {
        budget = -1;  // fail once
        throw Error(path_ + ": write failed (No space left on device; injected by the test hook); "
                    "free space and run again");
      }
      budget = left - static_cast<int64_t>(chunk);
    }
    ssize_t n = ::write(fd_, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw Error(path_ + ": write failed (" + errno_text(err) + "); free space or choose another folder");
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  if (committed_) return;
  if (::fsync(fd_) != 0) {
    int err = errno;
    throw Error(path_ + ": fsync failed (" + errno_text(err) + ")");
  }
  if (::close(fd_) != 0) {
    int err = errno;
    fd_ = -1;
    throw Error(path_ + ": close failed (" + errno_text(err) + ")");
  }
  fd_ = -1;
  if (::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    throw Error(path_ + ": cannot rename the finished file into place (" + errno_text(err) + ")");
  }
  committed_ = true;
  fsync_directory(paths::parent(paths::absolute(path_)));
}

void write_file_atomic(const std::string& path, std::string_view contents) {
  AtomicFile file(path);
  file.write(contents);
  file.commit();
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some filesystems do not allow opening directories
  ::fsync(fd);
  ::close(fd);
}

}  // namespace distill
