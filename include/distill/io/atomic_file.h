// Crash-safe file output: write to a temporary name beside the target, fsync the file, rename it into
// place, fsync the directory. A reader sees either the old file or the complete new one, never a part.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace distill {

class AtomicFile {
 public:
  explicit AtomicFile(std::string path);  // opens "<path>.tmp.<pid>" for writing
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();  // not committed: the temporary file is removed and the target is untouched

  void write(const void* data, size_t bytes);
  void write(std::string_view text) { write(text.data(), text.size()); }
  void commit();  // fsync, rename over the target, fsync the directory

  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string tmp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

// Whole-file convenience.
void write_file_atomic(const std::string& path, std::string_view contents);

// fsync a directory so that a rename inside it is durable.
void fsync_directory(const std::string& dir);

// Test hook: when > 0, the writer fails (as on a full disk) once this many more bytes have been written
// in this process. Also read from the environment variable DISTILL_TEST_FAIL_WRITE_AFTER_BYTES.
void set_write_failure_after_bytes(int64_t bytes);

}  // namespace distill
