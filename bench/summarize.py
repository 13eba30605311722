#!/usr/bin/env python3
"""Joins `distill bench loss --json` lines with bench/loss_bench.py lines into one table (GPU check).
With --tune: one table of the dev/cuda programs' JSON lines (scripts/gpu-check.sh's tune stage: each
program's settings and the production kernel it timed beside them) against the copy bandwidth line. It also
reads the tune lines of before dev/cuda ({"tune": DISTILL_KD_CUDA_TUNE setting, "result": distill bench loss
JSON}, e.g. bench/results/h200-2026-11-23/tune-before.jsonl): one row per kernel variant they timed."""
import json
import sys


def tune_table(path):
    copy, rows = None, []
    for line in open(path):
        if not line.strip().startswith("{"):
            continue
        r = json.loads(line)
        if r.get("what") == "copy":
            copy = r["bytes_per_s"]
        elif "program" in r:
            rows.append(r)
        elif "tune" in r:  # before dev/cuda: every variant of one `distill bench loss` under one setting
            res = r["result"]
            for name in ("block_per_row", "cluster_per_row", "cluster_persistent"):
                if name in res["kernel"]:
                    k = res["kernel"][name]
                    rows.append({**{key: res[key] for key in ("rows", "vocab", "dtype", "kind", "model_bytes")},
                                 "program": name, "setting": r["tune"], "median_ms": k["median_ms"], "ok": True,
                                 "shape": k["shape"]})
    if copy:
        print(f"copy bandwidth {copy / 1e12:.3f} TB/s")
    print(f"{'shape':>22} {'program':<27} {'setting':<24} {'ms':>8} {'%copy':>6} {'check':<5}  launch")
    for r in sorted(rows, key=lambda r: (-r["model_bytes"], r["dtype"], r["kind"], r["program"], r["setting"] != "production")):
        shape = f"[{r['rows']},{r['vocab']}] {r['dtype']}" + ("" if r["kind"] == "forward_kl" else f" {r['kind']}")
        frac = r["model_bytes"] / (r["median_ms"] * 1e-3) / copy if copy else float("nan")
        check = "ok" if r["ok"] else "FAIL"
        print(f"{shape:>22} {r['program']:<27} {r['setting']:<24} {r['median_ms']:8.3f} {100 * frac:5.1f}% {check:<5}  "
              f"{r['shape']}")


if len(sys.argv) > 2 and sys.argv[1] == "--tune":
    tune_table(sys.argv[2])
    sys.exit(0)

ours, theirs, copy = {}, {}, None
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if r.get("what") == "copy":
            copy = r
        elif r.get("what") == "composite":
            theirs[(r["rows"], r["vocab"], r["dtype"])] = r
        elif "fused" in r:
            ours[(r["rows"], r["vocab"], r["dtype"])] = r
if copy:
    print(f"device {copy['device']}, torch {copy['torch']}, copy bandwidth {copy['bytes_per_s'] / 1e12:.2f} TB/s")
print(f"{'shape':>18} {'dtype':>5} {'fused ms':>9} {'%copy':>6} {'aten ms':>8} {'eager ms':>9} {'compile ms':>10} "
      f"{'x eager':>8} {'x compile':>9} {'peak MB':>8}")
for key, r in sorted(ours.items()):
    fused = r["fused"]["median_ms"]
    frac = r["model_bytes"] / (fused * 1e-3) / copy["bytes_per_s"] if copy else float("nan")
    t = theirs.get(key, {})
    eager = t.get("eager", {}).get("median_ms", float("nan"))
    comp = t.get("compile", {}).get("median_ms", float("nan"))
    aten = r.get("composite", {}).get("median_ms", float("nan"))
    peak = r["fused"].get("extra_peak_bytes", -1) / 1e6
    print(f"{key[0]:>8}x{key[1]:<9} {key[2]:>5} {fused:9.3f} {100 * frac:5.1f}% {aten:8.3f} {eager:9.3f} {comp:10.3f} "
          f"{eager / fused:8.2f} {comp / fused:9.2f} {peak:8.1f}")
    for name, k in r.get("kernel", {}).items():
        kfrac = r["model_bytes"] / (k["median_ms"] * 1e-3) / copy["bytes_per_s"] if copy else float("nan")
        print(f"{'':>20} kernel {name:<16} {k['median_ms']:8.3f} ms {100 * kfrac:5.1f}%  {k['shape']}")
