#include <zlib.h>

#include <charconv>
#include <cmath>
#include <limits>
#include <vector>

#include <torch/torch.h>

#include "distill/data/dataset.h"
#include "distill/error.h"

namespace distill {

namespace {

bool parse_number(const char* begin, const char* end, double& out) {
  while (begin < end && (*begin == ' ' || *begin == '\t')) ++begin;
  while (end > begin && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) --end;
  if (begin == end) return false;
  if (*begin == '+') ++begin;
  auto [ptr, ec] = std::from_chars(begin, end, out);
  return ec == std::errc() && ptr == end;
}

std::string cell_text(const char* begin, const char* end) {
  std::string s(begin, end);
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

}  // namespace

Table parse_csv(const std::string& text, const std::string& origin, std::optional<int64_t> label_column) {
  std::vector<float> values;
  std::vector<int64_t> labels;
  int64_t columns = -1, label_col = -1, max_label = -1;
  size_t pos = 0, line_no = 0;
  std::vector<std::pair<const char*, const char*>> cells;
  while (pos < text.size()) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    ++line_no;
    const char* line = text.data() + pos;
    const char* line_end = text.data() + eol;
    pos = eol + 1;
    const char* trimmed_end = line_end;
    while (trimmed_end > line && (trimmed_end[-1] == '\r' || trimmed_end[-1] == ' ' || trimmed_end[-1] == '\t')) --trimmed_end;
    if (trimmed_end == line) continue;  // blank line
    cells.clear();
    const char* c = line;
    for (const char* p = line; p <= line_end; ++p) {
      if (p == line_end || *p == ',') {
        cells.emplace_back(c, p);
        c = p + 1;
      }
    }
    const std::string where = origin + ":" + std::to_string(line_no);
    if (columns < 0) {
      // A header: every cell non-numeric.
      bool all_text = true;
      double dummy;
      for (const auto& [b, e] : cells) all_text = all_text && !parse_number(b, e, dummy);
      if (all_text && values.empty() && line_no == 1 && cells.size() > 1) continue;
      columns = static_cast<int64_t>(cells.size());
      if (columns < 2) throw Error(where + ": a row needs at least one feature and a label; found 1 column (is the file comma-separated?)");
      int64_t lc = label_column.value_or(-1);
      label_col = lc < 0 ? columns + lc : lc;
      if (label_col < 0 || label_col >= columns)
        throw Error("data.label_column: " + std::to_string(lc) + " is outside the " + std::to_string(columns) +
                    " columns of " + origin);
    }
    if (static_cast<int64_t>(cells.size()) != columns)
      throw Error(where + ": has " + std::to_string(cells.size()) + " columns, the rows before have " +
                  std::to_string(columns) + "; every row needs the same number of cells");
    for (int64_t col = 0; col < columns; ++col) {
      double v;
      const auto& [b, e] = cells[col];
      if (!parse_number(b, e, v))
        throw Error(where + ":" + std::to_string(col + 1) + ": '" + cell_text(b, e) + "' is not a number" +
                    (line_no == 1 ? " (a header row must have no numeric cells)" : ""));
      if (!std::isfinite(v))
        throw Error(where + ":" + std::to_string(col + 1) + ": '" + cell_text(b, e) + "' is not finite");
      if (col == label_col) {
        if (v < 0 || v != std::floor(v) || v > 1e9)
          throw Error(where + ":" + std::to_string(col + 1) + ": label '" + cell_text(b, e) +
                      "' must be a non-negative integer class index");
        labels.push_back(static_cast<int64_t>(v));
        max_label = std::max(max_label, labels.back());
      } else {
        // Features are float32: a larger finite double would silently become inf.
        if (std::fabs(v) > std::numeric_limits<float>::max())
          throw Error(where + ":" + std::to_string(col + 1) + ": '" + cell_text(b, e) +
                      "' is outside the float32 range (magnitude up to 3.4e38); rescale this feature");
        values.push_back(static_cast<float>(v));
      }
    }
  }
  if (labels.empty()) throw Error(origin + ": holds no data rows; give a CSV with one row per example");
  int64_t n = static_cast<int64_t>(labels.size());
  Table t;
  t.features = torch::from_blob(values.data(), {n, columns - 1}, torch::kFloat32).clone();
  t.labels = torch::from_blob(labels.data(), {n}, torch::kInt64).clone();
  t.max_label = max_label;
  return t;
}

Table read_csv(const std::string& path, std::optional<int64_t> label_column) {
  gzFile file = gzopen(path.c_str(), "rb");  // reads plain files unchanged
  if (!file) throw Error(path + ": cannot open the data file (missing or unreadable); check data.path");
  std::string text;
  char buffer[1 << 16];
  int n;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<size_t>(n));
  int err = 0;
  const char* msg = n < 0 ? gzerror(file, &err) : nullptr;
  std::string reason = msg ? msg : "";
  gzclose(file);
  if (n < 0) throw Error(path + ": cannot read the data (" + reason + "); is the gzip file truncated or corrupt?");
  return parse_csv(text, path, label_column);
}

}  // namespace distill
