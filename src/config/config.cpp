#include "distill/config/config.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "config/schema.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/loss/loss_names.h"

namespace distill {

using schema::json;

namespace {

// Keys whose values name input files: relative paths are resolved against the config file's folder
// (against the current directory when given through --set).
const std::set<std::string> kFileKeys = {"data.path",      "data.val_path",    "teacher.path",
                                         "teacher.weights", "student.path",     "student.weights",
                                         "student.init"};

template <class S> std::vector<std::string> field_names(S& section) {
  std::vector<std::string> names;
  visit_fields(section, [&](const char* key, auto&, const char*) { names.emplace_back(key); });
  return names;
}

template <class S> void read_section(const json& obj, S& section, const std::string& name) {
  if (!obj.is_object()) schema::throw_wrong_type(obj, name, "an object");
  std::vector<std::string> known = field_names(section);
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) == known.end())
      throw Error(schema::unknown_key_message(name + ".", it.key(), known));
  }
  visit_fields(section, [&](const char* key, auto& member, const char*) {
    auto it = obj.find(key);
    if (it != obj.end()) schema::read_value(*it, member, name + "." + key);
  });
}

template <class S> void read_section(const json& obj, std::optional<S>& section, const std::string& name) {
  if (obj.is_null()) {
    section.reset();
    return;
  }
  section.emplace();
  read_section(obj, *section, name);
}

template <class S> json write_section(const S& section) {
  json out = json::object();
  visit_fields(const_cast<S&>(section),
               [&](const char* key, auto& member, const char*) { out[key] = schema::write_value(member); });
  return out;
}
template <class S> json write_section(const std::optional<S>& section) {
  return section ? write_section(*section) : json(nullptr);
}

std::vector<std::string> section_names() {
  Config probe;
  std::vector<std::string> names;
  visit_sections(probe, [&](const char* key, auto&, const char*) { names.emplace_back(key); });
  return names;
}

std::string resolve_path(const std::string& p, const std::string& base_dir) {
  if (p.empty() || base_dir.empty() || paths::is_absolute(p)) return p;
  return paths::normalize(paths::join(base_dir, p));
}

// Rewrites the file-valued keys of `doc` relative to base_dir.
void resolve_file_keys(json& doc, const std::string& base_dir) {
  for (const auto& dotted : kFileKeys) {
    auto dot = dotted.find('.');
    std::string section = dotted.substr(0, dot), key = dotted.substr(dot + 1);
    if (!doc.is_object() || !doc.contains(section) || !doc[section].is_object()) continue;
    auto& obj = doc[section];
    if (obj.contains(key) && obj[key].is_string())
      obj[key] = resolve_path(obj[key].get<std::string>(), base_dir);
  }
}

// A config nests three levels (section, key, list); far deeper documents are refused before anything
// recurses over them: copying or printing a json value recurses once per level, so a file of 100 000 '['
// (200 KB) would overflow the stack.
constexpr size_t kMaxConfigDepth = 16;

// Nesting depth of arrays and objects, counted without recursion; stops counting past kMaxConfigDepth.
size_t nesting_depth(const json& root) {
  size_t deepest = 0;
  std::vector<std::pair<const json*, size_t>> todo = {{&root, 1}};
  while (!todo.empty() && deepest <= kMaxConfigDepth) {
    auto [v, depth] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    deepest = std::max(deepest, depth);
    for (const auto& child : *v) todo.emplace_back(&child, depth + 1);
  }
  return deepest;
}

// Whether `section.key` is a text field; throws for an unknown key.
bool is_text_field(const std::string& section, const std::string& key, const std::string& what) {
  Config probe;
  probe.teacher.emplace();
  bool found_section = false, found = false, text = false;
  std::vector<std::string> known;
  visit_sections(probe, [&](const char* name, auto& sec, const char*) {
    if (section != name) return;
    found_section = true;
    auto visit = [&](auto& s) {
      visit_fields(s, [&](const char* k, auto& member, const char*) {
        known.emplace_back(k);
        if (key == k) {
          found = true;
          text = schema::is_text_v<std::decay_t<decltype(member)>>;
        }
      });
    };
    if constexpr (std::is_same_v<std::decay_t<decltype(sec)>, std::optional<ModelConfig>>) visit(*sec);
    else visit(sec);
  });
  if (!found_section) throw Error(what + ": " + schema::unknown_key_message("", section, section_names()));
  if (!found) throw Error(what + ": " + schema::unknown_key_message(section + ".", key, known));
  return text;
}

void apply_override(json& doc, const std::string& assignment) {
  const std::string what = "--set " + assignment;
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw Error(what + ": expected key.path=value, e.g. --set loss.temperature=2");
  std::string dotted = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  auto dot = dotted.find('.');
  if (dot == std::string::npos || dotted.find('.', dot + 1) != std::string::npos)
    throw Error(what + ": the key must be section.field, e.g. train.epochs");
  std::string section = dotted.substr(0, dot), key = dotted.substr(dot + 1);
  json value;
  if (is_text_field(section, key, what)) {
    value = text == "null" ? json(nullptr) : json(text);
    // The config is written back as JSON (config.json, checkpoints), which holds only UTF-8, while a --set
    // argument is whatever bytes the shell passed: refuse it here rather than when the run saves.
    try {
      (void)value.dump();
    } catch (const json::type_error&) {
      throw Error(what + ": the value is not valid UTF-8; config values (file names included) must be UTF-8 text");
    }
    if (kFileKeys.count(dotted) && value.is_string())
      value = resolve_path(text, paths::current_dir());
  } else {
    try {
      value = json::parse(text);
    } catch (const json::exception&) {
      throw Error(what + ": '" + text + "' is not a valid value for " + dotted +
                  " (numbers, true/false, [lists] or null)");
    }
  }
  if (!doc.contains(section) || !doc[section].is_object()) doc[section] = json::object();
  doc[section][key] = std::move(value);
}

std::string fmt_num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
[[noreturn]] void range_error(const std::string& key, const std::string& rule, const std::string& got) {
  throw Error(key + ": must be " + rule + ", got " + got);
}
void check_positive(const std::string& key, double v) {
  if (!(v > 0) || !std::isfinite(v)) range_error(key, "> 0", fmt_num(v));
}
void check_non_negative(const std::string& key, double v) {
  if (!(v >= 0) || !std::isfinite(v)) range_error(key, ">= 0", fmt_num(v));
}
void check_one_of(const std::string& key, const std::string& v, const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return;
  std::string list;
  for (size_t i = 0; i < allowed.size(); ++i) list += (i ? " | " : "") + allowed[i];
  range_error(key, "one of " + list, "'" + v + "'");
}

void validate_model(const ModelConfig& m, const std::string& name) {
  if (m.path && m.arch) throw Error(name + ": give either 'path' (TorchScript) or 'arch' (built-in), not both");
  if (!m.path && !m.arch && !m.weights)
    throw Error(name + ": needs 'path' (a TorchScript .pt), 'arch' (mlp | cnn), or 'weights' written by distill "
                       "(which carry their arch)");
  if (m.path && m.path->empty()) throw Error(name + ".path: must not be empty");
  if (m.arch) {
    check_one_of(name + ".arch", *m.arch, {"mlp", "cnn"});
    for (size_t i = 0; i < m.hidden.size(); ++i)
      if (m.hidden[i] <= 0) range_error(name + ".hidden[" + std::to_string(i) + "]", "> 0", std::to_string(m.hidden[i]));
    if (*m.arch == "cnn") {
      if (m.input_shape.size() != 3)
        throw Error(name + ".input_shape: cnn needs [C, H, W], got " + std::to_string(m.input_shape.size()) + " values");
      for (size_t i = 0; i < 3; ++i)
        if (m.input_shape[i] <= 0) range_error(name + ".input_shape[" + std::to_string(i) + "]", "> 0", std::to_string(m.input_shape[i]));
      if (m.channels.empty()) throw Error(name + ".channels: cnn needs at least one conv block, e.g. [16, 32]");
      for (size_t i = 0; i < m.channels.size(); ++i)
        if (m.channels[i] <= 0) range_error(name + ".channels[" + std::to_string(i) + "]", "> 0", std::to_string(m.channels[i]));
    } else {
      if (!m.input_shape.empty()) throw Error(name + ".input_shape: only used by arch cnn; remove it");
      if (!m.channels.empty()) throw Error(name + ".channels: only used by arch cnn; remove it");
    }
  } else if (m.path) {
    if (!m.hidden.empty() || !m.input_shape.empty() || !m.channels.empty() || m.dropout != 0.0)
      throw Error(name + ": hidden/dropout/input_shape/channels describe a built-in arch; a TorchScript 'path' model "
                         "carries its own architecture, remove them");
  } else if (!m.hidden.empty() || !m.input_shape.empty() || !m.channels.empty() || m.dropout != 0.0) {
    throw Error(name + ": hidden/dropout/input_shape/channels need an 'arch'; without one the arch is read from " +
                name + ".weights");
  }
  if (!(m.dropout >= 0.0 && m.dropout < 1.0)) range_error(name + ".dropout", "in [0, 1)", fmt_num(m.dropout));
}

}  // namespace

Config parse_config(const json& doc_in, const std::string& origin, const std::string& base_dir) {
  if (!doc_in.is_object()) throw Error(origin + ": the config must be a JSON object {...}, got " + schema::type_name(doc_in));
  if (nesting_depth(doc_in) > kMaxConfigDepth)
    throw Error(origin + ": nested more than " + std::to_string(kMaxConfigDepth) +
                " levels deep; a config is sections of keys holding values or lists, e.g. {\"optim\": {\"betas\": [0.9, 0.999]}}");
  json doc = doc_in;
  resolve_file_keys(doc, base_dir);
  Config config;
  std::vector<std::string> known = section_names();
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (std::find(known.begin(), known.end(), it.key()) == known.end())
      throw Error(origin + ": " + schema::unknown_key_message("", it.key(), known));
  try {
    visit_sections(config, [&](const char* key, auto& section, const char*) {
      auto it = doc.find(key);
      if (it != doc.end()) read_section(*it, section, key);
    });
    if (!doc.contains("student")) throw Error("student: missing; every run trains a student (e.g. {\"arch\": \"mlp\", \"hidden\": [64]})");
    if (!doc.contains("data")) throw Error("data: missing; say where the training data is, e.g. {\"path\": \"data.csv\"}");
    validate(config);
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return config;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  if (!paths::exists(path)) throw Error(path + ": config file not found; check the path given to --config");
  if (paths::is_directory(path)) throw Error(path + ": is a directory; --config needs a JSON file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open the config file for reading (check its permissions)");
  std::stringstream buffer;
  buffer << in.rdbuf();
  json doc;
  try {
    doc = json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    // Turn the byte offset into line:column.
    const std::string text = buffer.str();
    size_t offset = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, text.size());
    size_t line = 1, col = 1;
    for (size_t i = 0; i < offset; ++i) {
      if (text[i] == '\n') { ++line; col = 1; } else { ++col; }
    }
    std::string what = e.what();
    auto pos = what.find("syntax error");
    throw Error(path + ":" + std::to_string(line) + ":" + std::to_string(col) + ": invalid JSON: " +
                (pos != std::string::npos ? what.substr(pos) : what));
  } catch (const json::exception& e) {
    // Not a parse_error and so without a position: a number beyond double's range ("1e500") is out_of_range.
    std::string what = e.what();
    auto pos = what.find("] ");
    throw Error(path + ": invalid JSON: " + (pos != std::string::npos ? what.substr(pos + 2) : what));
  }
  // Checked before the overrides, which would otherwise index into an array or a number.
  if (!doc.is_object()) throw Error(path + ": the config must be a JSON object {...}, got " + schema::type_name(doc));
  std::string base_dir = paths::parent(paths::absolute(path));
  resolve_file_keys(doc, base_dir);
  for (const auto& o : overrides) apply_override(doc, o);
  return parse_config(doc, path, "");
}

bool is_device_name(const std::string& d) {
  if (d == "auto" || d == "cpu" || d == "cuda") return true;
  return d.rfind("cuda:", 0) == 0 && d.size() > 5 && d.size() <= 9 &&
         d.find_first_not_of("0123456789", 5) == std::string::npos;
}

void validate(const Config& c) {
  // run
  if (c.run.out_dir.empty()) throw Error("run.out_dir: must not be empty");
  if (c.run.seed < 0) range_error("run.seed", ">= 0", std::to_string(c.run.seed));
  if (!is_device_name(c.run.device)) range_error("run.device", "auto | cpu | cuda | cuda:N", "'" + c.run.device + "'");
  if (c.run.threads < 0 || c.run.threads > 1024) range_error("run.threads", "in [0, 1024] (0 = one per core)", std::to_string(c.run.threads));
  // data
  check_one_of("data.format", c.data.format, {"csv"});
  if (c.data.path.empty()) throw Error("data.path: missing; give the training data file");
  if (!c.data.val_path && !(c.data.val_fraction > 0.0 && c.data.val_fraction < 1.0))
    range_error("data.val_fraction", "in (0, 1) (or give data.val_path)", fmt_num(c.data.val_fraction));
  if (c.data.val_path && c.data.val_path->empty()) throw Error("data.val_path: must not be empty (use null for none)");
  check_one_of("data.normalize", c.data.normalize, {"none", "standard", "scale"});
  if (c.data.train_rows < 0) range_error("data.train_rows", ">= 0 (0 = all)", std::to_string(c.data.train_rows));
  if (c.data.split_seed < 0) range_error("data.split_seed", ">= 0", std::to_string(c.data.split_seed));
  if (c.data.num_classes && *c.data.num_classes < 2) range_error("data.num_classes", ">= 2", std::to_string(*c.data.num_classes));
  // models
  if (c.teacher) {
    validate_model(*c.teacher, "teacher");
    if (c.teacher->init) throw Error("teacher.init: only the student has an init; load teacher weights with teacher.weights");
    if (c.teacher->arch && !c.teacher->weights)
      throw Error("teacher.weights: missing; a built-in teacher arch needs its trained weights (safetensors), "
                  "e.g. the student.safetensors of a supervised distill run");
  }
  validate_model(c.student, "student");
  if (c.student.weights && c.student.init)
    throw Error("student: give either 'init' or 'weights' (they mean the same for a student), not both");
  // loss
  divergence_named(c.loss.kind, "loss.kind");
  if (!(c.loss.beta >= 0.0 && c.loss.beta <= 1.0)) range_error("loss.beta", "in [0, 1]", fmt_num(c.loss.beta));
  vocab_policy_named(c.loss.vocab, "loss.vocab");
  check_positive("loss.temperature", c.loss.temperature);
  if (!(c.loss.alpha >= 0.0 && c.loss.alpha <= 1.0)) range_error("loss.alpha", "in [0, 1]", fmt_num(c.loss.alpha));
  if (c.loss.topk < 0) range_error("loss.topk", ">= 0 (0 = the whole teacher row)", std::to_string(c.loss.topk));
  topk_tail_named(c.loss.topk_tail, "loss.topk_tail");
  if (c.loss.topk > 0 && c.loss.kind != "forward_kl")
    throw Error("loss.topk: a sparse (top-k) teacher supports loss.kind \"forward_kl\" only, got \"" + c.loss.kind +
                "\"; set loss.kind to \"forward_kl\" or loss.topk to 0");
  if (c.loss.topk > 0 && !c.teacher)
    throw Error("loss.topk: there is no teacher section, so there are no teacher logits to take the top-k of; "
                "remove loss.topk or add a teacher");
  // optim
  check_one_of("optim.name", c.optim.name, {"sgd", "adam", "adamw"});
  check_positive("optim.lr", c.optim.lr);
  if (!(c.optim.momentum >= 0.0 && c.optim.momentum < 1.0)) range_error("optim.momentum", "in [0, 1)", fmt_num(c.optim.momentum));
  if (c.optim.nesterov && (c.optim.name != "sgd" || c.optim.momentum <= 0.0))
    throw Error("optim.nesterov: needs optim.name \"sgd\" and optim.momentum > 0");
  check_non_negative("optim.weight_decay", c.optim.weight_decay);
  if (c.optim.betas.size() != 2) throw Error("optim.betas: must be [beta1, beta2], got " + std::to_string(c.optim.betas.size()) + " values");
  for (size_t i = 0; i < 2; ++i)
    if (!(c.optim.betas[i] >= 0.0 && c.optim.betas[i] < 1.0))
      range_error("optim.betas[" + std::to_string(i) + "]", "in [0, 1)", fmt_num(c.optim.betas[i]));
  check_positive("optim.eps", c.optim.eps);
  check_one_of("optim.schedule", c.optim.schedule, {"constant", "cosine", "step"});
  if (c.optim.warmup_steps < 0) range_error("optim.warmup_steps", ">= 0", std::to_string(c.optim.warmup_steps));
  check_non_negative("optim.min_lr", c.optim.min_lr);
  if (c.optim.min_lr > c.optim.lr) range_error("optim.min_lr", "<= optim.lr (" + fmt_num(c.optim.lr) + ")", fmt_num(c.optim.min_lr));
  if (c.optim.step_size <= 0) range_error("optim.step_size", "> 0", std::to_string(c.optim.step_size));
  check_positive("optim.gamma", c.optim.gamma);
  check_non_negative("optim.grad_clip", c.optim.grad_clip);
  // train
  if (c.train.epochs < 0) range_error("train.epochs", ">= 0", std::to_string(c.train.epochs));
  if (c.train.max_steps < 0) range_error("train.max_steps", ">= 0 (0 = no limit)", std::to_string(c.train.max_steps));
  if (c.train.epochs == 0 && c.train.max_steps == 0)
    throw Error("train: set train.epochs or train.max_steps (both are 0, so nothing would train)");
  if (c.train.batch_size <= 0) range_error("train.batch_size", "> 0", std::to_string(c.train.batch_size));
  if (c.train.grad_accum <= 0) range_error("train.grad_accum", "> 0", std::to_string(c.train.grad_accum));
  if (c.train.eval_every < 0) range_error("train.eval_every", ">= 0 (0 = every epoch end)", std::to_string(c.train.eval_every));
  if (c.train.log_every <= 0) range_error("train.log_every", "> 0", std::to_string(c.train.log_every));
  if (c.train.max_bad_steps < 1) range_error("train.max_bad_steps", ">= 1", std::to_string(c.train.max_bad_steps));
  if (c.train.eval_batch_size <= 0) range_error("train.eval_batch_size", "> 0", std::to_string(c.train.eval_batch_size));
  // checkpoint
  if (c.checkpoint.every < 0) range_error("checkpoint.every", ">= 0 (0 = every epoch end)", std::to_string(c.checkpoint.every));
  if (c.checkpoint.keep_last < 1) range_error("checkpoint.keep_last", ">= 1", std::to_string(c.checkpoint.keep_last));
}

nlohmann::json to_json(const Config& config) {
  json out = json::object();
  visit_sections(const_cast<Config&>(config),
                 [&](const char* key, auto& section, const char*) { out[key] = write_section(section); });
  return out;
}

std::string describe_config() {
  Config defaults;
  defaults.teacher.emplace();
  std::ostringstream out;
  visit_sections(defaults, [&](const char* name, auto& sec, const char* help) {
    out << name << "  (" << help << ")\n";
    auto list = [&](auto& s) {
      visit_fields(s, [&](const char* key, auto& member, const char* field_help) {
        json d = schema::write_value(member);
        std::string shown = d.is_null() ? "(unset)" : d.dump();
        if (d.is_string() && d.get<std::string>().empty()) shown = "(required)";
        out << "  " << name << "." << key << " = " << shown << "\n      " << field_help << "\n";
      });
    };
    if constexpr (std::is_same_v<std::decay_t<decltype(sec)>, std::optional<ModelConfig>>) list(*sec);
    else list(sec);
  });
  return out.str();
}

}  // namespace distill
