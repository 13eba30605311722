#!/usr/bin/env python3
"""The KD loss composite in PyTorch, eager and torch.compile, forward+backward, on the GPU machine, plus the
device-to-device copy bandwidth, for comparison with `distill bench loss` in the same call.
The composite is exactly distill's (kd_loss.h): forward KL at T with T^2 scaling, cross-entropy at T = 1,
alpha mixing, sum over rows / N; math in fp32 after upcasting. Prints one JSON object per line.
Usage: python3 bench/loss_bench.py --shapes 16384x128256 4096x32000 --dtype bf16"""
import argparse
import json

import torch
import torch.nn.functional as F
from triton.testing import do_bench


def composite(s, t, y, T=2.0, alpha=0.5):
    n = s.shape[0]
    log_q = F.log_softmax(s.float() / T, -1)
    log_p = F.log_softmax(t.float() / T, -1)
    kd = F.kl_div(log_q, log_p, log_target=True, reduction="sum") * (T * T)
    ce = F.cross_entropy(s.float(), y, reduction="sum")
    return (alpha * kd + (1 - alpha) * ce) / n


def copy_bandwidth():
    x = torch.randn(1 << 29, device="cuda")  # 2 GiB
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=50, rep=300, return_mode="median")
    return 2 * x.numel() * x.element_size() / (ms * 1e-3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["16384x128256"])
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--copy-only", action="store_true", help="only the copy bandwidth line")
    args = ap.parse_args()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    print(json.dumps({"what": "copy", "device": torch.cuda.get_device_name(), "bytes_per_s": copy_bandwidth(),
                      "torch": torch.__version__}), flush=True)
    if args.copy_only:
        return
    compiled = torch.compile(composite)
    for shape in args.shapes:
        n, v = (int(x) for x in shape.split("x"))
        torch.manual_seed(0)
        s = (torch.randn(n, v, device="cuda") * 2).to(dtype).requires_grad_(True)
        t = (torch.randn(n, v, device="cuda") * 2).to(dtype)
        y = torch.randint(0, v, (n,), device="cuda")
        out = {"what": "composite", "rows": n, "vocab": v, "dtype": args.dtype,
               "model_bytes": 3 * n * v * s.element_size()}
        for name, fn in [("eager", composite), ("compile", compiled)]:
            def step():
                s.grad = None
                fn(s, t, y).backward()
            try:
                torch.cuda.reset_peak_memory_stats()
                before = torch.cuda.memory_allocated()
                ms = do_bench(step, warmup=25, rep=200, return_mode="median")
                out[name] = {"median_ms": ms, "extra_peak_bytes": torch.cuda.max_memory_allocated() - before}
            except Exception as e:  # e.g. out of memory at the largest shapes
                out[name] = {"error": str(e).splitlines()[0][:200]}
            torch.cuda.empty_cache()
        print(json.dumps(out), flush=True)
        del s, t, y
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
