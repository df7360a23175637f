"""Peak memory and time of sequence log-probs: aipo_core.logprobs vs naive log_softmax + gather.

Two situations, each measured for both methods on identical inputs (fixed seed):

- `from-logits`: the logits [B, T, V] float32 already exist (a model forward returned them).
  naive = logits.log_softmax(-1).gather(...) (a second [B, T, V] tensor);
  ours  = aipo_core.logprobs.token_logps (float32 logsumexp, DEFAULT_CHUNK_ROWS rows at a time).
- `from-hidden`: what the trainer has, final hidden states [B, T, H] and the LM head [V, H].
  naive = hidden @ W.T, then log_softmax + gather;
  ours  = aipo_core.logprobs.hidden_token_logps on the response positions only (vocab tiles,
          TRL's ChunkedLogProbFunction), which sequence_logps_from_hidden sums per sequence.
With --backward the gradient is included (a training step's needs): w.r.t. the logits in
from-logits (ours then takes its logsumexp branch, which saves no [B, T, V] tensor for backward),
w.r.t. hidden and W in from-hidden.

Memory is the process's peak resident set (VmHWM) during the computation minus the resident
set just before it (inputs already allocated): the memory the computation itself needs. Every
measurement runs in a fresh subprocess, after one warm-up call on tiny inputs, with the peak
reset through /proc/self/clear_refs and glibc's mmap threshold pinned at 128 KiB (freed
buffers go back to the OS at once, so the resident set tracks live tensors, not malloc's
cache). Linux only on CPU; on CUDA torch's max_memory_allocated is used instead.

    python bench/logprobs.py                       # B=8, T=1024, V=49,152 (≈1 min on 2 idle cores)
    python bench/logprobs.py --batch 2 --length 256 --backward
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

from aipo_core.logprobs import hidden_token_logps, token_logps

METHODS = ("naive", "ours")


def rss_mib(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1)) / 1024


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux ≥ 4.0)


def make_inputs(args, device):
    gen = torch.Generator().manual_seed(0)
    b, t = args.batch, args.length
    hidden = torch.randn(b, t, args.hidden, generator=gen)  # [B, T, H]
    weight = torch.randn(args.vocab, args.hidden, generator=gen) / args.hidden**0.5  # [V, H]
    targets = torch.randint(0, args.vocab, (b, t), generator=gen)  # [B, T]
    # Response = everything after a 25% prompt, up to a per-row length (right padding).
    lengths = torch.randint(t // 2, t + 1, (b,), generator=gen)
    positions = torch.arange(t)
    mask = ((positions >= t // 4) & (positions.unsqueeze(0) < lengths.unsqueeze(1))).long()  # [B, T]
    return [x.to(device) for x in (hidden, weight, targets, mask)]


def naive_token_logps(logits, targets):
    logps = logits.log_softmax(-1)  # [B, T, V]: the second full-size tensor
    return logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]


def compute(args, method, inputs, weight, targets, mask):
    """Per-token log-probs of the response positions [M] (a sequence's log-prob is their masked sum).

    from-logits: `inputs` are the logits [B, T, V]; from-hidden: the hidden states [B, T, H].
    With --backward, the sum is back-propagated to the logits (from-logits) or to hidden and W.
    """
    selected = mask.bool()  # [B, T]
    if args.scenario == "from-logits":
        per_token = naive_token_logps(inputs, targets) if method == "naive" else token_logps(inputs, targets)
        out = per_token[selected]  # [M]
    elif method == "naive":
        out = naive_token_logps(inputs @ weight.T, targets)[selected]  # [M]
    else:
        out = hidden_token_logps(inputs[selected], weight, targets[selected])  # [M]
    if args.backward:
        out.sum().backward()
    return out.detach()


def prepare(args, hidden, weight):
    """The scenario's inputs: (logits [B, T, V], W) for from-logits, (hidden, W) for from-hidden."""
    if args.scenario == "from-logits":
        with torch.no_grad():
            hidden = hidden @ weight.T  # [B, T, V] float32 logits, part of the inputs
        return hidden.requires_grad_(args.backward), weight
    return hidden.requires_grad_(args.backward), weight.requires_grad_(args.backward)


def warm_up(args, device) -> None:
    """Run the method once on tiny inputs: one-off costs (lazy imports inside TRL's backward, thread
    pools, kernel caches) then do not count as the computation's memory or time."""
    tiny = argparse.Namespace(**{**vars(args), "batch": 1, "length": 8, "vocab": 64})
    hidden, weight, targets, mask = make_inputs(tiny, device)
    hidden, weight = prepare(args, hidden, weight)
    with torch.set_grad_enabled(args.backward):
        compute(tiny, args.method, hidden, weight, targets, mask)


def worker(args) -> None:
    """One (scenario, method) measurement in this fresh process; prints a JSON line."""
    device = torch.device(args.device)
    warm_up(args, device)
    hidden, weight, targets, mask = make_inputs(args, device)
    hidden, weight = prepare(args, hidden, weight)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        reset_peak()
        before = rss_mib("VmRSS")
    start = time.perf_counter()
    with torch.set_grad_enabled(args.backward):
        values = compute(args, args.method, hidden, weight, targets, mask)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else rss_mib("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_mib": peak - before, "values": values.cpu().tolist()}))


def run_isolated(args, scenario: str, method: str) -> dict:
    command = [sys.executable, __file__, "--worker", "--scenario", scenario, "--method", method]
    for name in ("batch", "length", "vocab", "hidden", "threads", "device"):
        command += [f"--{name}", str(getattr(args, name))]
    if args.backward:
        command.append("--backward")
    # A fixed glibc mmap threshold returns every freed buffer ≥ 128 KiB to the OS at once, so the
    # resident set follows live tensors instead of what malloc chose to keep cached.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{scenario}/{method} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--hidden", type=int, default=576, help="SmolLM2-135M's hidden size")
    parser.add_argument("--backward", action="store_true", help="include the backward pass")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return

    print(
        f"batch={args.batch} length={args.length} vocab={args.vocab} hidden={args.hidden} "
        f"device={args.device} threads={torch.get_num_threads()} backward={args.backward}"
    )
    print(f"one [B, T, V] float32 tensor = {args.batch * args.length * args.vocab * 4 / 2**20:,.0f} MiB")
    header = f"{'scenario':<12} {'method':<6} {'peak MiB':>10} {'seconds':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    for scenario in ("from-logits", "from-hidden"):
        for method in METHODS:
            r = results[scenario, method] = run_isolated(args, scenario, method)
            print(f"{scenario:<12} {method:<6} {r['peak_mib']:>10,.1f} {r['seconds']:>9.2f}")
    print()
    for scenario in ("from-logits", "from-hidden"):
        n, o = results[scenario, "naive"], results[scenario, "ours"]
        diff = max(abs(a - b) for a, b in zip(n["values"], o["values"], strict=True))
        print(
            f"{scenario}: peak memory naive/ours = {n['peak_mib'] / max(o['peak_mib'], 1e-9):.1f}x, "
            f"time naive/ours = {n['seconds'] / o['seconds']:.2f}x, "
            f"max |diff| per token = {diff:.1e} over {len(n['values']):,} response tokens"
        )


if __name__ == "__main__":
    main()
