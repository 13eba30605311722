// Data-parallel training: the launcher's environment (torchrun, Slurm, none), and two ranks on 127.0.0.1 with
// c10d's Gloo that take exactly the steps of one process with the same global batch (a classifier and a
// llama on prompt/completion data, whose valid targets differ between ranks), also with the optimizer
// state sharded (ZeRO-1, its checkpoint resumed by one process), stop together on a signal to
// one rank, resume with another world size, fail within the timeout when a rank dies, and run under
// PyTorch's own launcher (torch.distributed.run, with its agent store).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <map>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "../train_compare.h"
#include "distill/dist/comm.h"
#include "distill/dist/launch.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"

using distill::dist::Launch;
using distill::dist::Launcher;
using distill::dist::launch_from_env;
using distill::test::run_distill;
using distill::test::ScratchDir;
using nlohmann::json;

namespace {

distill::dist::EnvLookup env_of(const std::map<std::string, std::string>& vars) {
  return [vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
  };
}

std::string launch_error(const std::map<std::string, std::string>& vars) {
  try {
    launch_from_env(env_of(vars));
  } catch (const distill::Error& e) {
    return e.what();
  }
  return "";
}

// The multi-process tests need a build with c10d's Gloo (Debian's LibTorch with libgloo-dev; a pip wheel's
// LibTorch, as on a GPU machine, has no Gloo headers and the launch is refused instead).
bool gloo_in_build() {
  if (distill::dist::available_backends().find("gloo") != std::string::npos) return true;
  WARN("skipped: this build has no c10d Gloo (distill --version says which backends it has)");
  return false;
}

// A port nothing listens on now (the kernel's choice for a socket bound to port 0).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct RankResult {
  int exit_code = -1;
  std::string log;
};

// `distill <argv>` as ranks 0..world-1 of one job on 127.0.0.1 (torchrun's variables); extra[r] adds
// variables or arguments for rank r.
std::vector<RankResult> run_ranks(const ScratchDir& dir, const std::string& tag, int world, const std::vector<std::string>& argv,
                                  const std::map<int, std::vector<std::string>>& extra_env = {},
                                  const std::map<int, std::vector<std::string>>& extra_args = {}) {
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  std::vector<std::string> logs;
  for (int r = 0; r < world; ++r) {
    std::vector<std::string> env = {"RANK=" + std::to_string(r), "WORLD_SIZE=" + std::to_string(world),
                                    "LOCAL_RANK=" + std::to_string(r), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port};
    if (extra_env.count(r)) env.insert(env.end(), extra_env.at(r).begin(), extra_env.at(r).end());
    std::vector<std::string> args = argv;
    if (extra_args.count(r)) args.insert(args.end(), extra_args.at(r).begin(), extra_args.at(r).end());
    logs.push_back(dir / (tag + "-rank" + std::to_string(r) + ".log"));
    pids.push_back(distill::test::spawn_distill(args, env, logs.back()));
  }
  std::vector<RankResult> out;
  for (int r = 0; r < world; ++r) {
    RankResult rr;
    rr.exit_code = distill::test::wait_exit(pids[static_cast<size_t>(r)]);
    rr.log = distill::paths::exists(logs[static_cast<size_t>(r)]) ? distill::test::read_text(logs[static_cast<size_t>(r)]) : "";
    out.push_back(rr);
  }
  return out;
}

std::string write_config(const ScratchDir& dir, const std::string& name, const json& c) {
  distill::test::write_text(dir / name, c.dump(2));
  return dir / name;
}

// Weights equal to `rel` relative to the largest weight of each tensor.
void check_same_weights(const std::string& a, const std::string& b, double rel) {
  const auto wa = distill::load_safetensors(a), wb = distill::load_safetensors(b);
  REQUIRE(wa.tensors.size() == wb.tensors.size());
  for (size_t i = 0; i < wa.tensors.size(); ++i) {
    INFO(wa.tensors[i].first);
    const at::Tensor& x = wa.tensors[i].second;
    const at::Tensor& y = wb.tensors[i].second;
    const double diff = (x - y).abs().max().item<double>(), scale = std::max(1e-12, x.abs().max().item<double>());
    INFO("max |a - b| " << diff << ", max |a| " << scale);
    CHECK(diff <= rel * scale);
  }
}

// The final validation of two runs with the same weights: the ranks each scored part of the batches and
// added their sums, which must give the one process's figures (sums in another order: to 1e-12).
void check_same_validation(const std::string& a, const std::string& b) {
  const json sa = json::parse(distill::test::read_text(a + "/summary.json"));
  const json sb = json::parse(distill::test::read_text(b + "/summary.json"));
  for (const char* key : {"val_accuracy", "val_ce"}) {
    INFO(key);
    CHECK(sa[key].get<double>() == Approx(sb[key].get<double>()).epsilon(1e-12));
  }
  for (const char* key : {"val_rows", "val_sequences", "val_tokens"})
    if (sa.contains(key)) CHECK(sa[key] == sb[key]);
}

}  // namespace

TEST_CASE("dist: the launcher's environment: torchrun, Slurm, none, and the errors") {
  const Launch none = launch_from_env(env_of({}));
  CHECK(none.launcher == Launcher::none);
  CHECK_FALSE(none.distributed());

  const Launch tr = launch_from_env(env_of({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"MASTER_ADDR", "node7"},
                                            {"MASTER_PORT", "29500"}, {"TORCHELASTIC_RUN_ID", "x"},
                                            {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RESTART_COUNT", "2"}}));
  CHECK(tr.launcher == Launcher::torchrun);
  CHECK(tr.rank == 3);
  CHECK(tr.world_size == 8);
  CHECK(tr.local_rank == 1);
  CHECK(tr.master_addr == "node7");
  CHECK(tr.master_port == 29500);
  CHECK(tr.agent_store);
  CHECK(tr.restart_count == 2);

  const Launch plain = launch_from_env(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}));
  CHECK(plain.launcher == Launcher::env);
  CHECK_FALSE(plain.agent_store);
  CHECK(plain.local_rank == 0);

  // Slurm: the master is the first node of the job, the port derived from the job id (or given).
  const Launch sl = launch_from_env(env_of({{"SLURM_PROCID", "5"}, {"SLURM_STEP_NUM_TASKS", "16"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "5"},
                                            {"SLURM_JOB_NODELIST", "gpu[003-004,010],login1"}, {"SLURM_JOB_ID", "123456"}}));
  CHECK(sl.launcher == Launcher::slurm);
  CHECK(sl.rank == 5);
  CHECK(sl.world_size == 16);
  CHECK(sl.local_rank == 5);
  CHECK(sl.master_addr == "gpu003");
  CHECK(sl.master_port == 15000 + 3456);
  // torchrun inside an srun step: torchrun's variables win.
  CHECK(launch_from_env(env_of({{"SLURM_PROCID", "1"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"RANK", "0"}, {"WORLD_SIZE", "1"}})).launcher ==
        Launcher::env);
  // One Slurm task, and the batch script of a 4-task job (no srun step): one process.
  CHECK_FALSE(launch_from_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"}})).distributed());
  CHECK_FALSE(launch_from_env(env_of({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_JOB_NODELIST", "n[1-2]"}})).distributed());
  CHECK(distill::dist::first_slurm_host("n1") == "n1");
  CHECK(distill::dist::first_slurm_host("rack[2-3]-gpu[07,09]") == "rack2-gpu07");

  CHECK_THAT(launch_error({{"RANK", "0"}}), Catch::StartsWith("environment: RANK is set but WORLD_SIZE is not"));
  CHECK_THAT(launch_error({{"RANK", "2"}, {"WORLD_SIZE", "2"}}), Catch::StartsWith("environment: RANK=2 is not below WORLD_SIZE=2"));
  CHECK_THAT(launch_error({{"RANK", "x"}, {"WORLD_SIZE", "2"}}), Catch::StartsWith("environment: RANK='x' is not a non-negative integer"));
  CHECK_THAT(launch_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "29500"}}),
             Catch::StartsWith("environment: MASTER_ADDR is not set"));
  CHECK_THAT(launch_error({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}),
             Catch::StartsWith("environment: MASTER_PORT=70000 is not a TCP port"));
  CHECK_THAT(launch_error({{"SLURM_STEP_NUM_TASKS", "2"}}), Catch::StartsWith("environment: SLURM_STEP_NUM_TASKS is set but SLURM_PROCID is not"));
  CHECK_THAT(launch_error({{"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "2"}, {"SLURM_JOB_NODELIST", "gpu[1-2"}}),
             Catch::Contains("unmatched '['") && Catch::Contains("set MASTER_ADDR"));
}

TEST_CASE("dist: two Gloo ranks take the steps of one process with the same global batch (classifier)") {
  if (!gloo_in_build()) return;
  ScratchDir dir("dist-classifier");
  // 590 rows, 40 per step: the last step of each epoch has 30 (20 on rank 0, 10 on rank 1). No dropout: each
  // rank draws its own masks.
  auto config = [&](const std::string& out, int batch, int accum) {
    return json{{"run", {{"out_dir", dir / out}, {"seed", 3}, {"threads", 1}, {"device", "cpu"}}},
                {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"normalize", "standard"}, {"train_rows", 590}}},
                {"student", {{"arch", "mlp"}, {"hidden", {32, 16}}}},
                {"optim", {{"lr", 0.003}, {"schedule", "cosine"}, {"warmup_steps", 4}, {"grad_clip", 1.0}}},
                {"train", {{"epochs", 2}, {"batch_size", batch}, {"grad_accum", accum}, {"log_every", 5}}},
                {"checkpoint", {{"every", 5}}},
                {"dist", {{"timeout_s", 60}}}};
  };
  const std::string two = write_config(dir, "two.json", config("two", 20, 1));
  auto ranks = run_ranks(dir, "two", 2, {"train", "--config", two}, {}, {{1, {"--out", dir / "rank1-out"}}});
  INFO("rank 0:\n" << ranks[0].log << "\nrank 1:\n" << ranks[1].log);
  REQUIRE(ranks[0].exit_code == 0);
  REQUIRE(ranks[1].exit_code == 0);
  CHECK_THAT(ranks[0].log, Catch::Contains("data parallel: gloo, 2 ranks") && Catch::Contains("global batch 40 = 20 (train.batch_size) x 1"));
  CHECK_THAT(ranks[0].log, Catch::Contains("student val accuracy"));
  CHECK(ranks[1].log.empty());                              // rank 1 reports nothing when all goes well
  CHECK_FALSE(distill::paths::exists(dir / "rank1-out"));  // and writes nothing

  // One process, the same global batch as two micro-batches: the same sums in the same order, so the same
  // bits; as one micro-batch of 40: the same to float32 rounding.
  auto one = run_distill("train --config " + write_config(dir, "one.json", config("one", 20, 2)));
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  distill::test::check_same_training(dir / "two", dir / "one", "student.safetensors", 1e-6);
  check_same_weights(dir / "two/student.safetensors", dir / "one/student.safetensors", 1e-6);
  check_same_validation(dir / "two", dir / "one");
  auto wide = run_distill("train --config " + write_config(dir, "wide.json", config("wide", 40, 1)));
  REQUIRE(wide.exit_code == 0);
  check_same_weights(dir / "two/student.safetensors", dir / "wide/student.safetensors", 1e-5);

  // ZeRO-1 (dist.zero 1: each rank keeps the Adam state of its share of the weights and updates only those):
  // the same steps, bit for bit.
  json zc = config("zero", 20, 1);
  zc["dist"]["zero"] = 1;
  auto zr = run_ranks(dir, "zero", 2, {"train", "--config", write_config(dir, "zero.json", zc)});
  INFO("rank 0:\n" << zr[0].log << "\nrank 1:\n" << zr[1].log);
  REQUIRE(zr[0].exit_code == 0);
  REQUIRE(zr[1].exit_code == 0);
  CHECK_THAT(zr[0].log, Catch::Contains("ZeRO-1: rank 0 keeps the optimizer state of"));
  check_same_weights(dir / "two/student.safetensors", dir / "zero/student.safetensors", 0.0);

  // A stop signal to rank 1 alone stops both after that step, with one checkpoint (rank 0's); the job then
  // continues as one process (20 x 2 x 1: the global batch kept) and ends where the uninterrupted run did.
  // Under ZeRO-1, so that the checkpoint holds the optimizer state gathered from both ranks.
  json sc = config("stop", 20, 1);
  sc["dist"]["zero"] = 1;
  const std::string stop = write_config(dir, "stop.json", sc);
  auto stopped = run_ranks(dir, "stop", 2, {"train", "--config", stop}, {{1, {"DISTILL_TEST_STOP_AFTER_STEP=7"}}});
  INFO("rank 0:\n" << stopped[0].log << "\nrank 1:\n" << stopped[1].log);
  CHECK(stopped[0].exit_code == 75);
  CHECK(stopped[1].exit_code == 75);
  CHECK(distill::paths::exists(dir / "stop/checkpoints/step-00000007.safetensors"));
  CHECK_FALSE(distill::paths::exists(dir / "stop/student.safetensors"));
  auto wrong = run_distill("train --config " + stop + " --resume auto");  // 20 x 1 x 1: half the global batch
  CHECK(wrong.exit_code == 1);
  CHECK_THAT(wrong.output, Catch::Contains("error: --resume: ") && Catch::Contains("the global batch (train.batch_size x train.grad_accum x ranks): 40 (20 x 1 x 2 ranks) -> 20 (20 x 1 x 1 rank)"));
  auto resumed = run_distill("train --config " + stop + " --resume auto --set train.grad_accum=2");
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("split as 20 x 2 x 1 rank (was 20 x 1 x 2 ranks)"));
  check_same_weights(dir / "two/student.safetensors", dir / "stop/student.safetensors", 1e-6);
}

TEST_CASE("dist: two Gloo ranks train a llama on prompt/completion records as one process does") {
  if (!gloo_in_build()) return;
  ScratchDir dir("dist-llama");
  // Records of uneven length: the ranks' valid targets differ, so a rank that normalised by its own count
  // would take another step than the one process.
  std::string records;
  const std::string text = distill::test::read_text(distill::test::source_path("tests/fixtures/tokenizers/shakespeare_slice.txt"));
  for (int i = 0; i < 48; ++i) {
    const size_t at = static_cast<size_t>(i) * 97 % (text.size() - 200);
    records += json{{"prompt", text.substr(at, 10 + i % 7)}, {"completion", text.substr(at + 20, 5 + (i * 13) % 60)}}.dump() + "\n";
  }
  distill::test::write_text(dir / "records.jsonl", records);
  auto config = [&](const std::string& out, int batch, int accum) {
    return json{{"run", {{"out_dir", dir / out}, {"seed", 1}, {"threads", 1}, {"device", "cpu"}}},
                {"data", {{"format", "jsonl"}, {"path", dir / "records.jsonl"},
                          {"tokenizer", distill::test::source_path("tests/fixtures/tokenizers/shakespeare_bpe.model")},
                          {"seq_len", 32}, {"val_fraction", 0.1}}},
                {"student", {{"arch", "llama"}, {"hidden_size", 32}, {"intermediate_size", 64}, {"num_hidden_layers", 2},
                             {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"max_position_embeddings", 32},
                             {"tie_word_embeddings", true}}},
                {"optim", {{"lr", 0.01}, {"grad_clip", 1.0}}},
                {"train", {{"max_steps", 8}, {"batch_size", batch}, {"grad_accum", accum}, {"log_every", 2}}},
                {"dist", {{"timeout_s", 60}}}};
  };
  auto ranks = run_ranks(dir, "two", 2, {"train", "--config", write_config(dir, "two.json", config("two", 4, 1))});
  INFO("rank 0:\n" << ranks[0].log << "\nrank 1:\n" << ranks[1].log);
  REQUIRE(ranks[0].exit_code == 0);
  REQUIRE(ranks[1].exit_code == 0);
  auto one = run_distill("train --config " + write_config(dir, "one.json", config("one", 4, 2)));
  INFO(one.output);
  REQUIRE(one.exit_code == 0);
  distill::test::check_same_training(dir / "two", dir / "one", "student.safetensors", 1e-6);
  check_same_weights(dir / "two/student.safetensors", dir / "one/student.safetensors", 1e-6);
  check_same_validation(dir / "two", dir / "one");
  json zc = config("zero", 4, 1);
  zc["dist"]["zero"] = 1;
  auto zr = run_ranks(dir, "zero", 2, {"train", "--config", write_config(dir, "zero.json", zc)});
  INFO("rank 0:\n" << zr[0].log << "\nrank 1:\n" << zr[1].log);
  REQUIRE(zr[0].exit_code == 0);
  check_same_weights(dir / "two/student.safetensors", dir / "zero/student.safetensors", 0.0);
}

TEST_CASE("dist: each rank draws dropout from its own stream, which a resumed job continues") {
  if (!gloo_in_build()) return;
  ScratchDir dir("dist-dropout");
  auto config = [&](const std::string& out) {
    return json{{"run", {{"out_dir", dir / out}, {"seed", 3}, {"threads", 1}, {"device", "cpu"}}},
                {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"train_rows", 400}}},
                {"student", {{"arch", "mlp"}, {"hidden", {32}}, {"dropout", 0.3}}},
                {"train", {{"epochs", 2}, {"batch_size", 20}, {"log_every", 5}}},
                {"checkpoint", {{"every", 4}}},
                {"dist", {{"timeout_s", 60}}}};
  };
  const std::string full = write_config(dir, "full.json", config("full"));
  auto f = run_ranks(dir, "full", 2, {"train", "--config", full});
  REQUIRE(f[0].exit_code == 0);
  const std::string part = write_config(dir, "part.json", config("part"));
  auto p1 = run_ranks(dir, "part1", 2, {"train", "--config", part}, {{0, {"DISTILL_TEST_STOP_AFTER_STEP=6"}}});
  INFO("rank 0:\n" << p1[0].log << "\nrank 1:\n" << p1[1].log);
  REQUIRE(p1[0].exit_code == 75);
  // The checkpoint holds rank 1's stream beside rank 0's, and they differ (rank 1 does not repeat rank 0's
  // dropout masks).
  {
    const auto ck = distill::load_safetensors(dir / "part/checkpoints/step-00000006.safetensors");
    const at::Tensor* r0 = ck.find("rng.cpu");
    const at::Tensor* r1 = ck.find("rng.cpu.rank1");
    REQUIRE(r0);
    REQUIRE(r1);
    CHECK_FALSE(torch::equal(*r0, *r1));
  }
  auto p2 = run_ranks(dir, "part2", 2, {"train", "--config", part, "--resume", "auto"});
  INFO("rank 0:\n" << p2[0].log << "\nrank 1:\n" << p2[1].log);
  REQUIRE(p2[0].exit_code == 0);
  REQUIRE(p2[1].exit_code == 0);
  check_same_weights(dir / "full/student.safetensors", dir / "part/student.safetensors", 0.0);
}

TEST_CASE("dist: a rank that dies makes the others stop with a clear error, not hang") {
  if (!gloo_in_build()) return;
  ScratchDir dir("dist-dead-rank");
  json c = {{"run", {{"out_dir", dir / "run"}, {"seed", 3}, {"threads", 1}, {"device", "cpu"}}},
            {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"train_rows", 400}}},
            {"student", {{"arch", "mlp"}, {"hidden", {16}}}},
            {"train", {{"epochs", 3}, {"batch_size", 20}}},
            {"dist", {{"timeout_s", 20}}}};
  const auto start = std::chrono::steady_clock::now();
  auto ranks = run_ranks(dir, "dead", 2, {"train", "--config", write_config(dir, "c.json", c)}, {{1, {"DISTILL_TEST_KILL_AFTER_STEP=2"}}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("rank 0:\n" << ranks[0].log);
  CHECK(ranks[1].exit_code == 128 + SIGKILL);
  CHECK(ranks[0].exit_code == 1);
  CHECK(distill::test::count_lines_starting(ranks[0].log, "error: ") == 1);
  CHECK_THAT(ranks[0].log, Catch::Contains("error: dist: rank 0 of 2: ") && Catch::Contains("another rank stopped"));
  CHECK(seconds < 60);
}

TEST_CASE("dist: ranks started with different jobs, or that cannot start, stop every rank, and one-process commands refuse a launch") {
  ScratchDir dir("dist-mismatch");
  json c = {{"run", {{"out_dir", dir / "run"}, {"seed", 3}, {"threads", 1}, {"device", "cpu"}}},
            {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"train_rows", 300}}},
            {"student", {{"arch", "mlp"}, {"hidden", {16}}}},
            {"train", {{"epochs", 1}, {"batch_size", 20}}},
            {"dist", {{"timeout_s", 30}}}};
  const std::string config = write_config(dir, "c.json", c);
  // A command that writes one output, launched as one of two processes: refused before it writes anything.
  auto cache = run_distill("cache-teacher --config " + config, "RANK=1 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=1");
  CHECK(cache.exit_code == 1);
  CHECK_THAT(cache.output, Catch::StartsWith("error: cache-teacher: runs as one process") && Catch::Contains("--nproc_per_node 1"));
  if (!gloo_in_build()) return;
  // Rank 1 with another micro-batch: both ranks stop at the start with one error line each.
  auto ranks = run_ranks(dir, "mismatch", 2, {"train", "--config", config}, {}, {{1, {"--set", "train.batch_size=10"}}});
  INFO("rank 0:\n" << ranks[0].log << "\nrank 1:\n" << ranks[1].log);
  for (int r = 0; r < 2; ++r) {
    CHECK(ranks[static_cast<size_t>(r)].exit_code == 1);
    CHECK(distill::test::count_lines_starting(ranks[static_cast<size_t>(r)].log, "error: ") == 1);
    CHECK_THAT(ranks[static_cast<size_t>(r)].log,
               Catch::Contains("error: dist: rank " + std::to_string(r) + "'s job differs from another rank's"));
  }
  CHECK_FALSE(distill::paths::exists(dir / "run/checkpoints"));
  // Rank 1 cannot start at all (a micro-batch larger than the data): it says why, and rank 0 stops at once
  // instead of waiting dist.timeout_s for it.
  const auto start = std::chrono::steady_clock::now();
  auto failed = run_ranks(dir, "failed", 2, {"train", "--config", config}, {}, {{1, {"--set", "train.batch_size=100000"}}});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  INFO("rank 0:\n" << failed[0].log << "\nrank 1:\n" << failed[1].log);
  CHECK(failed[1].exit_code == 1);
  CHECK_THAT(failed[1].log, Catch::Contains("error: train.batch_size: 100000 is larger than"));
  CHECK(failed[0].exit_code == 1);
  CHECK_THAT(failed[0].log, Catch::Contains("error: dist: another rank could not start this job"));
  CHECK(seconds < 25);  // well inside dist.timeout_s = 30
}

TEST_CASE("dist: launched by PyTorch's torch.distributed.run (its agent store), as by plain variables") {
  if (!gloo_in_build()) return;
  // Debian's python3-torch provides the launcher; its default --redirects breaks on Python 3.11 (an IntFlag
  // change), so redirects and tee are given per local rank.
  if (std::system("/usr/bin/python3 -c 'import torch.distributed.run' > /dev/null 2>&1") != 0) {
    WARN("skipped: /usr/bin/python3 has no torch.distributed.run (Debian: apt-get install python3-torch)");
    return;
  }
  ScratchDir dir("dist-torchrun");
  json c = {{"run", {{"out_dir", dir / "torchrun"}, {"seed", 3}, {"threads", 1}, {"device", "cpu"}}},
            {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"train_rows", 300}}},
            {"student", {{"arch", "mlp"}, {"hidden", {16}}}},
            {"train", {{"epochs", 2}, {"batch_size", 25}}},
            {"dist", {{"timeout_s", 60}}}};
  const std::string config = write_config(dir, "c.json", c);
  const std::string cmd = "cd " + dir.path + " && /usr/bin/python3 -m torch.distributed.run --nproc_per_node 2 --master_addr 127.0.0.1 "
                          "--master_port " + std::to_string(free_port()) + " -r 0:1,1:1 -t 0:1,1:1 --log_dir " + (dir / "logs") +
                          " --no_python " + DISTILL_BINARY + " train --config " + config + " > " + (dir / "torchrun.out") + " 2>&1";
  const int rc = std::system(cmd.c_str());
  INFO(distill::test::read_text(dir / "torchrun.out"));
  REQUIRE(rc == 0);
  REQUIRE(distill::paths::exists(dir / "torchrun/student.safetensors"));
  const std::string log = distill::test::read_text(dir / "torchrun/train.log");
  CHECK_THAT(log, Catch::Contains("data parallel: gloo, 2 ranks") && Catch::Contains("torchrun's agent store"));
  c["run"]["out_dir"] = dir / "env";
  auto ranks = run_ranks(dir, "env", 2, {"train", "--config", write_config(dir, "env.json", c)});
  REQUIRE(ranks[0].exit_code == 0);
  check_same_weights(dir / "torchrun/student.safetensors", dir / "env/student.safetensors", 0.0);
}
