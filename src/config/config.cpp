#include "distill/config/config.h"

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "distill/config/dtype_names.h"
#include "distill/config/schema.h"
#include "distill/data/registry.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/loss/loss_names.h"
#include "distill/models/registry.h"

namespace distill {

using schema::json;
using schema::check_non_negative;
using schema::check_one_of;
using schema::check_positive;
using schema::fmt_num;
using schema::range_error;

namespace {

// Keys whose values name input files: relative paths are resolved against the config file's folder
// (against the current directory when given through --set).
const std::set<std::string> kFileKeys = {"data.path",      "data.val_path",    "data.tokenizer",   "teacher.path",
                                         "teacher.weights", "student.path",     "student.weights",
                                         "student.init",   "teacher.cache"};

template <class S> std::vector<std::string> field_names(S& section) {
  std::vector<std::string> names;
  visit_fields(section, [&](const char* key, auto&, const char*) { names.emplace_back(key); });
  return names;
}

// Sections whose architecture or format adds keys of its own (ModelConfig, DataConfig).
template <class S> constexpr bool has_options_v = std::is_same_v<S, ModelConfig> || std::is_same_v<S, DataConfig>;

template <class S> void read_section(const json& obj, S& section, const std::string& name) {
  if (!obj.is_object()) schema::throw_wrong_type(obj, name, "an object");
  std::vector<std::string> known = field_names(section);
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    if (std::find(known.begin(), known.end(), it.key()) != known.end()) continue;
    // The arch's or format's keys: checked by its registry entry in validate(), once the name is known.
    if constexpr (has_options_v<S>) section.options[it.key()] = it.value();
    else throw Error(schema::unknown_key_message(name + ".", it.key(), known));
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
  if constexpr (has_options_v<S>)
    for (auto it = section.options.begin(); it != section.options.end(); ++it) out[it.key()] = it.value();
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

// Rewrites the file-valued keys of `doc` relative to base_dir (each entry of a list of files).
void resolve_file_keys(json& doc, const std::string& base_dir) {
  for (const auto& dotted : kFileKeys) {
    auto dot = dotted.find('.');
    std::string section = dotted.substr(0, dot), key = dotted.substr(dot + 1);
    if (!doc.is_object() || !doc.contains(section) || !doc[section].is_object()) continue;
    auto& obj = doc[section];
    if (!obj.contains(key)) continue;
    if (obj[key].is_string()) obj[key] = resolve_path(obj[key].get<std::string>(), base_dir);
    if (obj[key].is_array())
      for (auto& item : obj[key])
        if (item.is_string()) item = resolve_path(item.get<std::string>(), base_dir);
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

// The option keys architectures (for teacher / student) or formats (for data) add to `section`, with their info.
std::vector<schema::FieldInfo> option_fields(const std::string& section) {
  std::vector<schema::FieldInfo> out;
  auto add = [&](const std::vector<schema::FieldInfo>& fields) {
    for (const auto& f : fields)
      if (std::none_of(out.begin(), out.end(), [&](const auto& o) { return o.key == f.key; })) out.push_back(f);
  };
  if (section == "teacher" || section == "student")
    for (const auto& [name, entry] : arch_registry()) add(entry.options.fields);
  if (section == "data")
    for (const auto& [name, entry] : data_format_registry()) add(entry.options.fields);
  return out;
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
  for (const auto& f : option_fields(section)) {
    known.push_back(f.key);
    if (!found && f.key == key) {
      found = true;
      text = f.text;
    }
  }
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
  const bool list_of_files = (dotted == "data.path" || dotted == "data.val_path") && !text.empty() && text[0] == '[';
  if (is_text_field(section, key, what) && !list_of_files) {
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
    if (list_of_files && value.is_array())
      for (auto& item : value)
        if (item.is_string()) item = resolve_path(item.get<std::string>(), paths::current_dir());
  }
  if (!doc.contains(section) || !doc[section].is_object()) doc[section] = json::object();
  doc[section][key] = std::move(value);
}

// Keys of a section's `options` that no entry declares, or that the chosen one does not: the first is an
// error listing what the section takes.
void check_option_keys(const json& options, const std::vector<std::string>& common,
                       const std::vector<schema::FieldInfo>& declared, const std::string& section) {
  std::vector<std::string> known = common;
  for (const auto& f : declared) known.push_back(f.key);
  for (auto it = options.begin(); it != options.end(); ++it)
    if (std::find(known.begin(), known.end(), it.key()) == known.end())
      throw Error(schema::unknown_key_message(section + ".", it.key(), known));
}

std::string arch_names() {
  std::string names;
  for (const auto& [name, entry] : arch_registry()) names += (names.empty() ? "" : " | ") + name;
  return names;
}

// The arch's options, checked, with defaults filled in; {} for a model without an arch.
json checked_model_options(const ModelConfig& m, const std::string& name) {
  if (m.path && m.arch)
    throw Error(name + ": give either 'path' (a TorchScript module or a Hugging Face folder) or 'arch' (built-in), not both");
  if (!m.path && !m.arch && !m.weights && !m.init)
    throw Error(name + ": needs 'path' (a TorchScript .pt or a Hugging Face model folder), 'arch' (" + arch_names() +
                "), or 'weights' / 'init' (distill's safetensors or a Hugging Face folder, which carry their arch)");
  if (m.path && m.path->empty()) throw Error(name + ".path: must not be empty");
  ModelConfig probe;
  const std::vector<std::string> common = field_names(probe);
  if (m.arch) {
    const ArchEntry& entry = arch_named(*m.arch, name + ".arch");
    check_option_keys(m.options, common, entry.options.fields, name);
    return entry.options.check(m.options, name);
  }
  if (!m.options.empty()) {
    check_option_keys(m.options, common, option_fields(name), name);  // a typo is named as one
    std::string keys;
    for (auto it = m.options.begin(); it != m.options.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
    if (m.path)
      throw Error(name + ": " + keys + " describe a built-in arch; a 'path' model (TorchScript or Hugging Face folder) "
                  "carries its own architecture, remove them");
    throw Error(name + ": " + keys + " need an 'arch'; without one the arch is read from " + name +
                (m.init ? ".init" : ".weights"));
  }
  return json::object();
}

// The format's options, checked, with defaults filled in.
json checked_data_options(const DataConfig& d) {
  const DataFormatEntry& entry = data_format_named(d.format, "data.format");
  DataConfig probe;
  check_option_keys(d.options, field_names(probe), entry.options.fields, "data");
  return entry.options.check(d.options, "data");
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
    // The resolved config holds every key: the options' defaults too.
    config.data.options = checked_data_options(config.data);
    if (config.teacher && (config.teacher->path || config.teacher->arch || config.teacher->weights))
      config.teacher->options = checked_model_options(*config.teacher, "teacher");
    config.student.options = checked_model_options(config.student, "student");
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
  if (c.data.path.empty()) throw Error("data.path: missing; give the training data file");
  if (c.data.val_path && c.data.val_path->empty()) throw Error("data.val_path: must not be empty (use null for none)");
  checked_data_options(c.data);
  // models
  if (c.teacher && c.teacher->cache && c.teacher->cache->empty()) throw Error("teacher.cache: must not be empty (use null for none)");
  if (c.teacher && c.teacher->cache && c.loss.kind != "forward_kl")
    throw Error("loss.kind: a teacher cache holds a sparse (top-k) teacher, which trains with \"forward_kl\" only, got \"" +
                c.loss.kind + "\"");
  if (c.student.cache) throw Error("student.cache: only the teacher has a cache (teacher.cache)");
  const bool cache_only = c.teacher && c.teacher->cache && !c.teacher->path && !c.teacher->arch && !c.teacher->weights;
  if (c.teacher && !cache_only) {
    checked_model_options(*c.teacher, "teacher");
    if (c.teacher->init) throw Error("teacher.init: only the student has an init; load teacher weights with teacher.weights");
    if (c.teacher->arch && !c.teacher->weights)
      throw Error("teacher.weights: missing; a built-in teacher arch needs its trained weights (safetensors), "
                  "e.g. the student.safetensors of a supervised distill run");
  }
  checked_model_options(c.student, "student");
  if (c.teacher) dtype_named(c.teacher->dtype, "teacher.dtype");
  if (dtype_named(c.student.dtype, "student.dtype") != DTypeName::float32)
    throw Error("student.dtype: a student trains with float32 weights; for bfloat16 arithmetic set train.precision "
                "to \"bfloat16\" (autocast, float32 master weights)");
  dtype_named(c.train.precision, "train.precision");
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
  if (c.train.eval_batch_size < 0) range_error("train.eval_batch_size", ">= 0 (0 = automatic)", std::to_string(c.train.eval_batch_size));
  if (c.loss.chunk_rows < 0) range_error("loss.chunk_rows", ">= 0 (0 = automatic)", std::to_string(c.loss.chunk_rows));
  // checkpoint
  if (c.checkpoint.every < 0) range_error("checkpoint.every", ">= 0 (0 = every epoch end)", std::to_string(c.checkpoint.every));
  if (c.checkpoint.keep_last < 1) range_error("checkpoint.keep_last", ">= 1", std::to_string(c.checkpoint.keep_last));
  // dist
  check_one_of("dist.backend", c.dist.backend, {"auto", "gloo", "nccl"});
  check_positive("dist.timeout_s", c.dist.timeout_s);
  if (c.dist.zero != 0 && c.dist.zero != 1) range_error("dist.zero", "0 or 1 (ZeRO stage 1)", std::to_string(c.dist.zero));
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
  auto line = [&](const std::string& dotted, const json& d, const std::string& help) {
    std::string shown = d.is_null() ? "(unset)" : d.dump();
    if (d.is_string() && d.get<std::string>().empty()) shown = "(required)";
    if (d.is_array() && d.empty() && dotted == "data.path") shown = "(required)";
    out << "  " << dotted << " = " << shown << "\n      " << help << "\n";
  };
  visit_sections(defaults, [&](const char* name, auto& sec, const char* help) {
    out << name << "  (" << help << ")\n";
    auto list = [&](auto& s) {
      visit_fields(s, [&](const char* key, auto& member, const char* field_help) {
        line(std::string(name) + "." + key, schema::write_value(member), field_help);
      });
    };
    if constexpr (std::is_same_v<std::decay_t<decltype(sec)>, std::optional<ModelConfig>>) list(*sec);
    else list(sec);
    if (std::string(name) == "data")
      for (const auto& [format, entry] : data_format_registry()) {
        out << "  data.format \"" << format << "\": " << entry.help << "\n";
        for (const auto& f : entry.options.fields) line("data." + f.key, f.default_value, f.help);
      }
    if (std::string(name) == "student")
      for (const auto& [arch, entry] : arch_registry()) {
        out << "  teacher/student.arch \"" << arch << "\": " << entry.help << "\n";
        for (const auto& f : entry.options.fields) line("student." + f.key, f.default_value, f.help);
      }
  });
  return out.str();
}

}  // namespace distill
