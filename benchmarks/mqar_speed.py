"""Time to 99% MQAR test accuracy on Zoology's figure-2 cell, on this machine's CPU.

The cell (Arora, Eyuboglu et al. 2023, "Zoology", figure 2, its iclr24 config):
vocabulary 8192, sequence length 256, 16 key-value pairs, query gaps drawn
with power law a = 0.01, filler token 0 (``random_non_queries=False``),
2 layers of width 64, one attention head, no MLP (Zoology's state mixer is
``Identity``), batch 256. Zoology takes ~5 s per step on a 2-core CPU and is
at 0.2% accuracy after 13 minutes (numbers from the issue).

seqlab trains the same cell with ``seqlab.bench.fit_probe`` (the loop ``seqlab
bench run`` uses): rotary attention, AdamW, warm-up then cosine decay, fresh
batches every step, and the vocabulary head applied only at the 16 scored
positions of each row. Every ``--eval-every`` steps, and more often once the
training loss is low, it scores the test split (a disjoint generator stream);
the run stops at the first test score >= ``--target`` or at ``--time-limit``,
then scores a larger test set once more.

    python benchmarks/mqar_speed.py                 # the full run: <= 15 minutes
    python benchmarks/mqar_speed.py --profile 8     # time 8 steps, show where time goes, project
    python benchmarks/mqar_speed.py --quick         # seconds-long smoke run of a tiny cell
Writes one JSON line per run to benchmarks/out/mqar_speed.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from seqlab.bench.alloc import retain_freed_memory
from seqlab.bench.fit import ProbeTrainConfig, evaluate_probe, fit_probe, probe_loss
from seqlab.models import build_lm
from seqlab.tasks import probes
from seqlab.train.optim import make_optimizer

HERE = Path(__file__).resolve().parent
ZOOLOGY = {"s_per_step": 5.0, "accuracy_after_13_min": 0.002}
# Steps to 99% in a reference run of the full cell with the defaults below (fp32, lr 1e-2):
# used only by --profile to project a time from its s/step.
REFERENCE_STEPS_TO_TARGET = 350


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1500, help="length of the cosine schedule (an upper bound)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--time-limit", type=float, default=900.0, help="seconds (default 15 minutes)")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--eval-batches", type=int, default=2, help="test batches per check (of --batch rows)")
    ap.add_argument("--final-eval-batches", type=int, default=8)
    ap.add_argument("--precision", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="leave glibc's allocator thresholds alone (see seqlab/bench/alloc.py)")
    ap.add_argument("--profile", type=int, metavar="N", help="time N steps only and project")
    ap.add_argument("--quick", action="store_true", help="tiny cell, seconds-long smoke run")
    ap.add_argument("--out", default=str(HERE / "out" / "mqar_speed.jsonl"))
    return ap.parse_args(argv)


def build(args):
    cell = {"vocab_size": 8192, "seq_len": 256, "num_pairs": 16, "power_a": 0.01, "random_filler": False}
    if args.quick:
        cell.update(vocab_size=256, seq_len=32, num_pairs=4)
    probe = probes.build("mqar", **cell)
    torch.manual_seed(args.seed)
    model = build_lm(vocab_size=probe.vocab_size, dim=64, layers=["attention", "attention"],
                     mlp_hidden=0, mixer_options={"attention": {"heads": 1}})
    cfg = ProbeTrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup=args.warmup,
                           precision=args.precision, eval_batches=args.eval_batches,
                           eval_batch_size=args.batch)
    return probe, model, cfg, cell


def profile(args, probe, model, cfg) -> dict:
    """Median seconds per training step over ``args.profile`` steps, and the top ops."""
    opt = make_optimizer(model, cfg)
    amp = torch.bfloat16 if args.precision == "bfloat16" else None

    def step(i: int) -> float:
        t0 = time.perf_counter()
        batch = probe.batch("train", i, cfg.batch_size, args.seed)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            loss, _ = probe_loss(model, probe, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(0)  # warm-up: first-touch allocations, oneDNN kernel selection
    times = [step(i) for i in range(1, args.profile + 1)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step(args.profile + 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    s_per_step = statistics.median(times)
    return {"mode": "profile", "steps_timed": len(times), "s_per_step": s_per_step,
            "steps_per_s": 1 / s_per_step, "step_times": times,
            "projected_time_to_target_s": s_per_step * REFERENCE_STEPS_TO_TARGET,
            "reference_steps_to_target": REFERENCE_STEPS_TO_TARGET}


def train(args, probe, model, cfg) -> dict:
    """Train until the test accuracy reaches the target or the time limit passes."""
    curve: list[dict] = []
    t0 = time.perf_counter()
    eval_s = 0.0
    state = {"reached_at": None, "last_eval_step": 0}

    def on_step(step: int, loss: float) -> bool:
        nonlocal eval_s
        elapsed = time.perf_counter() - t0
        due = step % args.eval_every == 0 or (loss < 0.1 and step - state["last_eval_step"] >= 5)
        if due:
            te = time.perf_counter()
            acc = evaluate_probe(model, probe, batches=args.eval_batches, batch_size=cfg.batch_size,
                                 seed=args.seed, amp=amp)["accuracy"]
            eval_s += time.perf_counter() - te
            state["last_eval_step"] = step
            elapsed = time.perf_counter() - t0
            curve.append({"step": step, "elapsed_s": elapsed, "loss": loss, "test_accuracy": acc})
            print(f"step {step:5d}  {elapsed:7.1f} s  loss {loss:7.4f}  test accuracy {acc:.4f}", flush=True)
            if acc >= args.target:
                state["reached_at"] = {"step": step, "elapsed_s": elapsed}
                return True
        return elapsed > args.time_limit

    amp = torch.bfloat16 if args.precision == "bfloat16" else None
    fit = fit_probe(model, probe, cfg, seed=args.seed, on_step=on_step)
    total = time.perf_counter() - t0
    final = evaluate_probe(model, probe, batches=args.final_eval_batches, batch_size=cfg.batch_size,
                           seed=args.seed + 1, amp=amp)["accuracy"]
    reached = state["reached_at"]
    return {"mode": "train", "status": fit.status, "message": fit.message, "steps": fit.steps,
            "wall_s": total, "eval_s": eval_s, "s_per_step": (total - eval_s) / max(fit.steps, 1),
            "steps_per_s": max(fit.steps, 1) / (total - eval_s),
            "reached_target": reached is not None,
            "time_to_target_s": reached["elapsed_s"] if reached else None,
            "steps_to_target": reached["step"] if reached else None,
            "final_test_accuracy": final, "final_test_sequences": args.final_eval_batches * cfg.batch_size,
            "curve": curve}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.batch, args.time_limit, args.eval_every = 60, 32, 60.0, 10
        args.profile = min(args.profile, 2) if args.profile else None
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = False if args.no_malloc_tuning else retain_freed_memory()
    probe, model, cfg, cell = build(args)
    load = os.getloadavg()[0]
    print(f"MQAR cell {cell}, batch {cfg.batch_size}, 2 x attention (1 head) width 64, no MLP; "
          f"{model.num_parameters():,} parameters; lr {cfg.lr}, warm-up {cfg.warmup}, cosine over "
          f"{cfg.steps} steps, {args.precision}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, load avg {load:.1f}, malloc tuning {'on' if malloc else 'off'}")
    if load > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine is busy: other processes compete for the cores and torch's "
              "threads wait on each other, so steps will be slower than on a quiet machine "
              "(--threads 1 suffers least)")
    result = profile(args, probe, model, cfg) if args.profile else train(args, probe, model, cfg)
    record = {"benchmark": "mqar_speed", "time": time.time(), "cell": cell, "batch": cfg.batch_size,
              "train": cfg.to_dict(), "seed": args.seed, "quick": args.quick, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "loadavg_start": load,
              "machine": platform.processor() or platform.machine(), "malloc_tuning": malloc,
              "zoology_reference": ZOOLOGY, **result}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(json.dumps(record) + "\n")

    print(f"\n{'':28s} {'s/step':>8s} {'steps/s':>8s} {'time to ' + format(args.target, '.0%'):>14s}")
    print(f"{'Zoology (from the issue)':28s} {ZOOLOGY['s_per_step']:8.2f} {1 / ZOOLOGY['s_per_step']:8.2f} "
          f"{'not in 13 min':>14s}")
    if result["mode"] == "profile":
        print(f"{'seqlab (profile)':28s} {result['s_per_step']:8.3f} {result['steps_per_s']:8.2f} "
              f"{result['projected_time_to_target_s']:>12.0f} s  (projected: {REFERENCE_STEPS_TO_TARGET} "
              "steps x s/step)")
    else:
        when = (f"{result['time_to_target_s']:.0f} s" if result["reached_target"]
                else f"not in {result['wall_s']:.0f} s")
        print(f"{'seqlab':28s} {result['s_per_step']:8.3f} {result['steps_per_s']:8.2f} {when:>14s}")
        print(f"steps {result['steps']}, of which to target {result['steps_to_target']}; evaluation "
              f"{result['eval_s']:.1f} s of {result['wall_s']:.0f} s; final test accuracy "
              f"{result['final_test_accuracy']:.4f} on {result['final_test_sequences']} sequences")
    print(f"JSON line appended to {out}")


if __name__ == "__main__":
    main()
