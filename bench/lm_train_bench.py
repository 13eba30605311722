#!/usr/bin/python3
"""Language-model distillation throughput: `distill train` against the same loop in plain PyTorch, side by side.

Both sides train the same random-init Llama student from the same random-init Llama teacher on the same random
token shard, with the same LibTorch (Debian's python3-torch 1.13 and the libtorch distill links), the same
thread count, fp32, batch B x seq_len S, forward KL at T = 2 with T^2 scaling plus cross-entropy, alpha 0.5,
AdamW, one micro-batch per step:

  distill   `distill train --config <run>/config.json` as a subprocess (under /usr/bin/time -v for its peak RSS);
            tokens/s is the median of the per-step "train" events of <out>/metrics.jsonl (log_every 1) after the
            warm-up steps, so loading, the final validation and the checkpoint are not counted.
  pytorch   the loop of tests/fixtures/make_lm_parity.py in a child Python process (a fresh process per run, as
            distill's): batch from the shard, teacher forward under no_grad, student forward to full logits
            [B*S, V], the loss, backward, gradient norm (distill computes it every step too), AdamW step,
            loss.item(). Two loss spellings (--torch-loss):
              parity   per-position KD composed of log_softmax / exp / sum, as make_lm_parity.py writes it
              kl_div   F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True, reduction="sum") + F.cross_entropy
                       (the shortest plain-PyTorch spelling; what bench/loss_bench.py calls the composite)
            Each step is timed with time.perf_counter around the whole step; its peak RSS is getrusage's ru_maxrss.

The runs alternate (distill, pytorch parity, pytorch kl_div, then the reverse order in the next round, ...) for
--rounds rounds, so that load on the shared machine falls on all sides; medians per side and the ratio
distill / side are printed, and everything (every step of every run, the PyTorch loop's phase times) goes to
--json. Each run also records the share of the machine's CPU time that other processes used while it ran
(from /proc/stat, less the run's own CPU time; niced work counted apart, as it takes little from a run at
normal priority): with --max-others X --retries R a run during which others used
more than X is discarded (kept in the JSON's "discarded") and rerun, and --wait-idle S waits up to S seconds
for idle CPUs before each run. On 2 cores with OpenMP's spinning barriers, one busy neighbour process can
halve a run's throughput, so compare only quiet runs.

Usage:
  /usr/bin/python3 bench/lm_train_bench.py --size demo  --steps 12 --warmup 3 --rounds 5 --threads 2 \
      --wait-idle 1200 --max-others 0.1 --retries 4 --json demo.json
  /usr/bin/python3 bench/lm_train_bench.py --size large --steps 8  --warmup 2 --rounds 3 --threads 2 \
      --wait-idle 1200 --max-others 0.1 --retries 4 --json large.json
  --distill-set 'loss.chunk_rows=1024' adds a distill run with those --set overrides to each round, and
  --distill-env 'GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432' one with that variable set.
  (--distill PATH, default build-bench/distill, then build/distill; --work DIR for the shards and folders)
"""
import argparse
import json
import os
import re
import resource
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))

# Model sizes. "demo": the LM demo's teacher and student; "large": a 32000-token vocabulary at hidden 512.
# intermediate_size keeps the demo's ratio (688 / 256 = 2.6875).
SIZES = {
    "demo": {"vocab": 1024, "seq_len": 256, "batch": 8,
             "teacher": {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4},
             "student": {"hidden_size": 128, "intermediate_size": 344, "num_hidden_layers": 2, "num_attention_heads": 4}},
    "large": {"vocab": 32000, "seq_len": 256, "batch": 4,
              "teacher": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 4, "num_attention_heads": 8},
              "student": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 2, "num_attention_heads": 8}},
}
TEMPERATURE, ALPHA, LR = 2.0, 0.5, 1e-4
# The PyTorch loop's phases, timed in every step (phase_ms in --json, with the minor page faults of each in
# phase_minor_faults): the student's forward includes its head (full logits), the backward the loss's and the head's.
PHASES = ("batch", "teacher_forward", "student_forward", "loss", "backward", "grad_norm", "adamw")


def hf_config(vocab, seq_len, arch):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "rope_scaling": None, "tie_word_embeddings": False,
         "max_position_embeddings": max(512, seq_len), "initializer_range": 0.02, "hidden_act": "silu",
         "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0, "bos_token_id": 1,
         "eos_token_id": 2, "use_cache": True}
    c.update(arch)
    c["num_key_value_heads"] = arch["num_attention_heads"]
    return c


def write_llmc_shard(path, tokens, vocab):
    """llm.c's shard: 256 little-endian int32 header words ([0] magic, [1] 1 = uint16 / 2 = uint32, [2] count)."""
    import numpy as np
    wide = vocab > 65536
    header = [0] * 256
    header[0], header[1], header[2] = 20240520, 2 if wide else 1, len(tokens)
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(np.asarray(tokens, dtype="<u4" if wide else "<u2").tobytes())


def read_llmc_shard(path):
    import numpy as np
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(1024))
        assert header[0] == 20240520, path
        data = np.frombuffer(f.read(), dtype="<u4" if header[1] == 2 else "<u2", count=header[2])
    return data


def setup(work, size, steps, threads):
    """Shards, teacher and student folders, distill's config. Idempotent (a stamp records what was made)."""
    import torch
    import llama_ref as L
    s = SIZES[size]
    os.makedirs(work, exist_ok=True)
    stamp = os.path.join(work, "setup.json")
    want = {"size": s, "steps": steps}
    if os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == want:
                return
    V, S, B = s["vocab"], s["seq_len"], s["batch"]
    g = torch.Generator().manual_seed(1234)
    # Enough windows that no run reaches an epoch's end (which would validate and checkpoint mid-run).
    n_train = (steps + 4) * B * S + 1
    write_llmc_shard(os.path.join(work, "train.bin"), torch.randint(0, V, (n_train,), generator=g).tolist(), V)
    write_llmc_shard(os.path.join(work, "val.bin"), torch.randint(0, V, (B * S + 1,), generator=g).tolist(), V)
    for role, seed in (("teacher", 1), ("student", 2)):
        m = L.init_like_transformers(hf_config(V, S, s[role]), seed)
        L.save_folder(m, os.path.join(work, role), dtype=torch.float32)
        del m
    with open(stamp, "w") as f:
        json.dump(want, f)


def distill_config(work, size, steps, threads, out):
    s = SIZES[size]
    return {
        "run": {"out_dir": out, "seed": 0, "threads": threads, "device": "cpu"},
        "data": {"format": "tokens", "path": os.path.join(work, "train.bin"), "val_path": os.path.join(work, "val.bin"),
                 "seq_len": s["seq_len"], "shuffle": True, "vocab_size": s["vocab"]},
        "teacher": {"path": os.path.join(work, "teacher")},
        "student": {"init": os.path.join(work, "student")},
        "loss": {"kind": "forward_kl", "temperature": TEMPERATURE, "alpha": ALPHA, "t2_scale": True},
        "optim": {"name": "adamw", "lr": LR, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                  "schedule": "constant"},
        "train": {"max_steps": steps, "batch_size": s["batch"], "grad_accum": 1, "log_every": 1},
        "checkpoint": {"every": 0},
    }


def run_distill(args, tag, extra_sets=(), extra_env=None):
    out = os.path.join(args.work, "runs", tag)
    cfg = distill_config(args.work, args.size, args.steps, args.threads, out)
    path = os.path.join(args.work, f"config-{tag}.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)
    cmd = ["/usr/bin/time", "-v", args.distill, "train", "--config", path, "--overwrite"]
    for kv in extra_sets:
        cmd += ["--set", kv]
    t0 = time.time()
    env = dict(os.environ, **(extra_env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"distill failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    steps = []
    with open(os.path.join(out, "metrics.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event") == "train":
                steps.append({"step": e["step"], "tokens_per_s": e["tokens_per_s"], "loss": e["loss"]})
    rates = [e["tokens_per_s"] for e in steps if e["step"] > args.warmup]
    return {"side": "distill", "tag": tag, "steps": steps, "tokens_per_s": statistics.median(rates),
            "peak_rss_bytes": int(m.group(1)) * 1024 if m else None, "wall_s": wall, "sets": list(extra_sets),
            "env": extra_env or {}}


def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def torch_worker(args):
    """One PyTorch run in this (child) process; prints one JSON line."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    import llama_ref as L
    torch.set_num_threads(args.threads)
    s = SIZES[args.size]
    V, S, B, T = s["vocab"], s["seq_len"], s["batch"], TEMPERATURE
    tokens = torch.from_numpy(read_llmc_shard(os.path.join(args.work, "train.bin")).astype(np.int64))
    n_windows = (tokens.numel() - 1) // S
    teacher = L.load_folder(os.path.join(args.work, "teacher"))
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = L.load_folder(os.path.join(args.work, "student"))
    student.train()
    params = list(student.parameters())
    opt = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(0))

    def loss_parity(s_logits, t_logits, y):  # make_lm_parity.py's kd_per_position + cross_entropy
        log_q = F.log_softmax(s_logits.float() / T, dim=-1)
        log_p = F.log_softmax(t_logits.float() / T, dim=-1)
        kd = T * T * (log_p.exp() * (log_p - log_q)).sum(-1)
        ce = F.cross_entropy(s_logits.reshape(-1, V), y.reshape(-1), reduction="none")
        return ALPHA * kd.sum() + (1 - ALPHA) * ce.sum()

    def loss_kl_div(s_logits, t_logits, y):
        s2, t2 = s_logits.reshape(-1, V).float(), t_logits.reshape(-1, V).float()
        kd = F.kl_div(F.log_softmax(s2 / T, -1), F.log_softmax(t2 / T, -1), log_target=True, reduction="sum") * (T * T)
        ce = F.cross_entropy(s2, y.reshape(-1), reduction="sum")
        return ALPHA * kd + (1 - ALPHA) * ce

    loss_fn = loss_parity if args.torch_loss == "parity" else loss_kl_div
    steps = []
    for step in range(args.steps):
        t, f = [time.perf_counter()], [minflt()]
        starts = order[step * B:(step + 1) * B] * S
        ex = torch.stack([tokens[int(a):int(a) + S + 1] for a in starts])
        x, y = ex[:, :-1].contiguous(), ex[:, 1:].contiguous()
        n_valid = y.numel()
        opt.zero_grad(set_to_none=True)
        t.append(time.perf_counter()), f.append(minflt())
        with torch.no_grad():
            t_logits = teacher(x)
        t.append(time.perf_counter()), f.append(minflt())
        s_logits = student(x)
        t.append(time.perf_counter()), f.append(minflt())
        loss = loss_fn(s_logits, t_logits, y) / n_valid
        del t_logits, s_logits
        t.append(time.perf_counter()), f.append(minflt())
        loss.backward()
        t.append(time.perf_counter()), f.append(minflt())
        grad_norm = torch.sqrt(sum((p.grad ** 2).sum() for p in params))
        gn = float(grad_norm)
        t.append(time.perf_counter()), f.append(minflt())
        opt.step()
        value = float(loss)
        t.append(time.perf_counter()), f.append(minflt())
        phases = dict(zip(PHASES, (1e3 * (b - a) for a, b in zip(t, t[1:]))))
        faults = dict(zip(PHASES, (b - a for a, b in zip(f, f[1:]))))
        steps.append({"step": step + 1, "tokens_per_s": B * S / (t[-1] - t[0]), "loss": value, "grad_norm": gn,
                      "phase_ms": phases, "phase_minor_faults": faults})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"steps": steps, "peak_rss_bytes": peak}))


def run_torch(args, tag):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--size", args.size, "--steps", str(args.steps),
           "--threads", str(args.threads), "--work", args.work, "--torch-loss", tag]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"pytorch worker failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    rates = [e["tokens_per_s"] for e in r["steps"] if e["step"] > args.warmup]
    return {"side": "pytorch_" + tag, "steps": r["steps"], "tokens_per_s": statistics.median(rates),
            "peak_rss_bytes": r["peak_rss_bytes"], "wall_s": wall}


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cpu_ticks():
    """(busy at normal priority, busy niced, total) jiffies of the whole machine, from /proc/stat. Niced work
    (another engineer's `nice` build) takes little from a run at normal priority, so it is counted apart."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle, nice = v[3] + v[4], v[1]
    return sum(v) - idle - nice, nice, sum(v)


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_idle(max_wait_s, want_idle=0.9):
    """Waits (up to max_wait_s) until the machine's CPUs were >= want_idle idle over 3 s; returns that idle share."""
    deadline = time.time() + max_wait_s
    while True:
        b0, _, t0 = cpu_ticks()
        time.sleep(3)
        b1, _, t1 = cpu_ticks()
        idle = 1 - (b1 - b0) / max(1, t1 - t0)
        if idle >= want_idle or time.time() >= deadline:
            return idle


def measured(fn):
    """Runs fn(); adds the share of the machine's CPU time that other processes used meanwhile (0 = quiet): at
    normal priority (others_cpu_share) and niced (others_nice_share)."""
    b0, n0, t0 = cpu_ticks()
    c0 = children_cpu_s()
    r = fn()
    b1, n1, t1 = cpu_ticks()
    own = (children_cpu_s() - c0) * os.sysconf("SC_CLK_TCK")
    r["others_cpu_share"] = max(0.0, (b1 - b0) - own) / max(1, t1 - t0)
    r["others_nice_share"] = (n1 - n0) / max(1, t1 - t0)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="demo")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="first steps of each run left out of its median")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch-loss", default="parity,kl_div", help="comma list of parity | kl_div")
    ap.add_argument("--distill", default=None)
    ap.add_argument("--distill-set", action="append", default=[],
                    help="extra distill run: a ';'-separated list of --set key=value (e.g. loss.chunk_rows=512)")
    ap.add_argument("--distill-env", action="append", default=[],
                    help="extra distill run with one environment variable NAME=VALUE (e.g. GLIBC_TUNABLES=...)")
    ap.add_argument("--work", default=None)
    ap.add_argument("--json", default=None, help="write every run's steps here")
    ap.add_argument("--wait-idle", type=float, default=0,
                    help="before each run, wait up to this many seconds for the CPUs to be 90%% idle")
    ap.add_argument("--max-others", type=float, default=1.0,
                    help="rerun a run during which other processes used more than this share of the CPUs")
    ap.add_argument("--retries", type=int, default=0, help="reruns allowed per run under --max-others")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work = os.path.abspath(args.work or os.path.join("/tmp", f"lm_train_bench-{args.size}"))
    if args.worker:
        torch_worker(args)
        return
    if args.distill is None:
        for cand in ("build-bench/distill", "build/distill"):
            if os.path.exists(os.path.join(ROOT, cand)):
                args.distill = os.path.join(ROOT, cand)
                break
    if not args.distill or not os.path.exists(args.distill):
        sys.exit("no distill binary: build it, or pass --distill PATH")
    if args.warmup >= args.steps:
        sys.exit("--warmup must be below --steps")
    setup(args.work, args.size, args.steps, args.threads)
    torch_losses = [t for t in args.torch_loss.split(",") if t]
    variants = [("distill", (), None)] + [(f"distill[{v}]", tuple(v.split(";")), None) for v in args.distill_set]
    variants += [(f"distill[{v}]", (), dict([v.split("=", 1)])) for v in args.distill_env]
    runs, discarded = [], []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for rnd in range(args.rounds):
        order = [("d", v) for v in variants] + [("t", t) for t in torch_losses]
        if rnd % 2 == 1:
            order.reverse()  # ABBA: neither side always goes first
        for kind, what in order:
            for attempt in range(args.retries + 1):
                idle = wait_idle(args.wait_idle) if args.wait_idle > 0 else None
                load = loadavg()
                if kind == "d":
                    tag = f"r{rnd}-" + ("distill" if what[0] == "distill" else f"variant{variants.index(what)}")
                    r = measured(lambda: run_distill(args, tag, what[1], what[2]))
                    r["side"] = what[0]
                else:
                    r = measured(lambda: run_torch(args, what))
                r["round"], r["loadavg_before"], r["idle_before"], r["attempt"] = rnd, load, idle, attempt
                if r["others_cpu_share"] <= args.max_others or attempt == args.retries:
                    break
                discarded.append(r)
                print(f"round {rnd} {r['side']:<28} {r['tokens_per_s']:10.1f} tokens/s  discarded: others used "
                      f"{100 * r['others_cpu_share']:.0f}% of the CPUs", flush=True)
            runs.append(r)
            print(f"round {rnd} {r['side']:<28} {r['tokens_per_s']:10.1f} tokens/s  peak RSS "
                  f"{(r['peak_rss_bytes'] or 0) / 2**20:8.1f} MiB  (load {load:.2f}, others used "
                  f"{100 * r['others_cpu_share']:.0f}% of the CPUs, niced {100 * r['others_nice_share']:.0f}%, "
                  f"{r['wall_s']:.0f} s)", flush=True)
    sides = []
    for r in runs:
        if r["side"] not in sides:
            sides.append(r["side"])
    summary = {}
    for side in sides:
        rs = [r for r in runs if r["side"] == side]
        summary[side] = {"median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                         "runs_tokens_per_s": [round(r["tokens_per_s"], 1) for r in rs],
                         "others_cpu_share": [round(r["others_cpu_share"], 3) for r in rs],
                         "others_nice_share": [round(r["others_nice_share"], 3) for r in rs],
                         "peak_rss_bytes": max(r["peak_rss_bytes"] or 0 for r in rs)}
    base = summary["distill"]["median_tokens_per_s"]
    print(f"\n{args.size}: {SIZES[args.size]}, threads {args.threads}, {args.steps} steps ({args.warmup} warm-up), "
          f"{args.rounds} rounds")
    print(f"{'side':<28} {'tokens/s':>10} {'distill / side':>15} {'peak RSS MiB':>13}  runs")
    for side, v in summary.items():
        print(f"{side:<28} {v['median_tokens_per_s']:10.1f} {base / v['median_tokens_per_s']:14.2f}x "
              f"{v['peak_rss_bytes'] / 2**20:13.1f}  {v['runs_tokens_per_s']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "sizes": SIZES[args.size], "threads": args.threads, "steps": args.steps,
                       "warmup": args.warmup, "rounds": args.rounds, "started": started,
                       "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                       "distill": args.distill, "max_others": args.max_others, "summary": summary, "runs": runs,
                       "discarded": discarded}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
