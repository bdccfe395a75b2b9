#!/usr/bin/env python3
"""PyTorch timings on the shapes the GPU runner benchmarks, for its comparison table.

Run on the GPU machine (PyTorch with CUDA), then give the JSON to the runner:
    python3 torch_compare.py torch.json
    ./UioLlm.GpuRunner --bench-only --torch torch.json
Names match the runner's benchmark names. fp32 throughout; TF32 is switched off so torch.matmul is an
exact-ish fp32 GEMM like ours (pass --tf32 to see the tensor-core number too, under other names).
"""
import json
import sys

import torch
import torch.nn.functional as F


def timed(fn, reps=50):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / reps)
    times.sort()
    return times[len(times) // 2]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "torch.json"
    tf32 = "--tf32" in sys.argv
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    results = {}

    gemms = [(4096, 4096, 4096, False), (4096, 4096, 4096, True), (2048, 2048, 2048, False), (1024, 1024, 1024, False),
             (256, 288, 288, True), (256, 768, 288, True), (256, 288, 768, True), (256, 32000, 288, True), (1, 32000, 288, True)]
    for m, n, k, tb in gemms:
        a = torch.randn(m, k, device=dev)
        b = torch.randn(n, k, device=dev) if tb else torch.randn(k, n, device=dev)
        c = torch.empty(m, n, device=dev)
        fn = (lambda: torch.matmul(a, b.t(), out=c)) if tb else (lambda: torch.matmul(a, b, out=c))
        name = f"gemm {'NT' if tb else 'NN'} {m}x{n}x{k}"
        results[name] = timed(fn)
        if tf32:
            torch.backends.cuda.matmul.allow_tf32 = True
            results[name + " tf32"] = timed(fn)
            torch.backends.cuda.matmul.allow_tf32 = False

    attns = [(1, 6, 256, 48, True), (4, 16, 1024, 64, True), (4, 32, 2048, 128, True), (4, 32, 2048, 128, False), (1, 16, 4096, 64, True)]
    for b, h, t, d, causal in attns:
        # SDPA takes [B, H, T, D]; ours is [B, T, H, D] (same work).
        q = torch.randn(b, h, t, d, device=dev, requires_grad=True)
        k = torch.randn(b, h, t, d, device=dev, requires_grad=True)
        v = torch.randn(b, h, t, d, device=dev, requires_grad=True)
        name = f"sdpa {'causal' if causal else 'full'} B={b} H={h} T={t} D={d}"
        with torch.no_grad():
            results[name + " fwd"] = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        g = torch.randn_like(o)
        results[name + " bwd"] = timed(lambda: torch.autograd.grad(o, (q, k, v), g, retain_graph=True))

    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    for name, ms in results.items():
        print(f"{name:60s} {ms:10.4f} ms")
    print(f"wrote {out} ({torch.__version__}, {torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
