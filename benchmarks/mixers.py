"""Benchmark every registered seqlab mixer on this machine's CPU, float32.

What it measures, for each mixer in ``seqlab.mixers.names()`` (but those that read token
ids, ``needs_tokens``) and each sequence
length L (batch B = max(1, tokens // L), so every cell sees about the same
number of tokens):

* training throughput of the parallel face: tokens/s of forward + backward
  (loss = mean(y^2), input requires grad), median of a few repetitions after a
  warm-up iteration;
* recurrent-face latency: ``m.step`` per token in ms, median over a run of
  steps, at batch 1 and at batch B, after prefilling L tokens with the parallel
  face (attention's step cost grows with its KV cache, so the prefix matters);
* state bytes per sequence at L: ``m.state_size(L) * 4`` checked against the
  prefilled state's ``nbytes() / B``.

A cell is skipped, and the table says why, when its estimated training memory
exceeds the limit (activations saved for backward are measured at four small
lengths and extrapolated) or when its predicted iteration time exceeds the per
cell time budget (extrapolated from the mixer's previous length).

Then, in the same process and measured back to back (interleaved repetitions),
four comparisons, each printed with its goal and PASS/MISS:

  (a) mamba parallel face vs a token-by-token ``m.step`` loop (forward only);
  (b) s4d FFT parallel face vs its ``m.step`` recurrence (forward only);
  (c) the attention mixer vs hand-written ``F.scaled_dot_product_attention``
      code on the same projections and rotary (overhead %, fwd and fwd+bwd);
  (d) the mamba mixer vs mambapy's ``MambaBlock`` with the same weights:
      training throughput and per-token step latency.

Results go to a table on stdout and to JSON lines (one object per measurement,
the first line holds the machine facts) in ``benchmarks/out/mixers.jsonl``.

Run it:
    python benchmarks/mixers.py                  # full run, ~20 min on 2 cores
    python benchmarks/mixers.py --quick          # seconds-long smoke run
    python benchmarks/mixers.py --lengths 256 1024 --mixers mamba attention
    python benchmarks/mixers.py --help
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import seqlab

GIB = 2 ** 30
HERE = Path(__file__).resolve().parent

# Options each mixer is built with (everything else is the mixer's default).
MIXER_OPTIONS: dict[str, dict] = {"mamba": {"d_state": 16, "expand": 2, "d_conv": 4}}


@dataclass(frozen=True)
class Settings:
    """Everything a run depends on; written into the machine record."""

    lengths: tuple[int, ...]
    mixers: tuple[str, ...]
    dim: int
    tokens: int                 # tokens per batch: batch = max(1, tokens // L)
    batch: int | None           # fixed batch instead of the tokens rule
    warmup: int                 # warm-up iterations before timed ones
    reps: int                   # timed training repetitions per cell
    compare_reps: int           # timed repetitions in the comparisons
    steps: int                  # timed m.step calls per latency measurement
    step_warmup: int
    loop_tokens: int            # step-loop prefix in comparisons (a), (b)
    compare_length: int         # L of comparisons (a), (b), (d)
    attention_lengths: tuple[int, ...]   # L of comparison (c)
    mambapy_batch: int
    cell_budget_s: float        # time budget of one training measurement
    mem_limit_gib: float
    threads: int
    compare: bool               # run the side-by-side comparisons
    quick: bool


# -- small utilities ---------------------------------------------------------------------


def batch_for(length: int, s: Settings) -> int:
    return s.batch if s.batch is not None else max(1, s.tokens // length)


def build(name: str, dim: int, **extra) -> seqlab.mixers.Mixer:
    torch.manual_seed(0)
    return seqlab.mixers.build(name, dim=dim, **{**MIXER_OPTIONS.get(name, {}), **extra})


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_reps(fn: Callable[[], object], reps: int, warmup: int) -> list[float]:
    """Seconds per call of ``fn`` for ``reps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(reps)]


def time_interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int) -> dict[str, list[float]]:
    """Like ``time_reps`` for several functions, alternating them so drift hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            out[k].append(timed(fn))
    return out


def train_step_fn(m: torch.nn.Module, x: torch.Tensor,
                  forward: Callable[[torch.Tensor], object] | None = None) -> Callable[[], None]:
    """One forward + backward of ``m`` (or of ``forward``, which uses m's weights) on ``x``.

    ``x`` requires grad, as a mixer's input does inside a model.
    """
    forward = forward or m

    def run() -> None:
        m.zero_grad(set_to_none=True)
        x.grad = None
        y = forward(x)
        y = y[0] if isinstance(y, tuple) else y
        y.pow(2).mean().backward()
    return run


def step_latencies(step: Callable, x_t: torch.Tensor, state, steps: int, warmup: int) -> list[float]:
    """Seconds per ``step(x_t, state) -> (y_t, state)`` call, each timed on its own (no grad)."""
    out = []
    with torch.no_grad():
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            _, state = step(x_t, state)
            if i >= warmup:
                out.append(time.perf_counter() - t0)
    return out


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt_s(seconds: float) -> str:
    """A duration with 3 significant digits in s or ms."""
    return f"{seconds:.3g} s" if seconds >= 1 else f"{seconds * 1e3:.3g} ms"


# -- memory and time estimates -------------------------------------------------------------


class SavedBytes:
    """Counts the bytes autograd keeps for backward (distinct storages) inside ``with``."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        self.storages[st.data_ptr()] = st.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def __enter__(self) -> "SavedBytes":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def saved_bytes(m: torch.nn.Module, batch: int, length: int, dim: int) -> int:
    """Bytes autograd keeps for backward after one forward of ``m`` at (batch, length)."""
    x = torch.randn(batch, length, dim, requires_grad=True)
    with SavedBytes() as sb:
        y, _ = m(x)
    return sb.total + y.nbytes


def estimate_train_gib(m: torch.nn.Module, batch: int, length: int, dim: int) -> float:
    """Rough peak memory of one training step at (batch, length), in GiB.

    The activations saved for backward are measured at L/4 and L/2 (same
    batch) and extrapolated to L along their log-log slope (clamped to [0, 2]:
    constant to quadratic in L); this is exact for a pure power of L and
    overestimates sums of powers and L log L. The peak is taken as twice that (their
    gradients during backward) plus parameters, their gradients and the input.
    """
    if length < 64:
        saved = float(saved_bytes(m, batch, length, dim))
    else:
        s4, s2 = (saved_bytes(m, batch, length // k, dim) for k in (4, 2))
        slope = min(2.0, max(0.0, math.log2(s2 / s4)))
        saved = s2 * 2 ** slope
    params = sum(p.numel() * p.element_size() for p in m.parameters())
    return (2 * saved + 2 * params + 2 * batch * length * dim * 4) / GIB


def predict_iter_s(history: list[tuple[int, float]], length: int) -> float | None:
    """Training-iteration time at ``length`` from this mixer's earlier lengths.

    With tokens per batch held constant the time per iteration grows like
    L^p, p = 0 for linear-time mixers and p = 1 for quadratic ones (p = 2 with
    a fixed batch); p is the log-log slope of the last two points (1 when only
    one is known).
    """
    if not history:
        return None
    (l1, t1) = history[-1]
    p = 1.0
    if len(history) >= 2:
        (l0, t0) = history[-2]
        p = min(2.0, max(0.0, math.log(t1 / t0) / math.log(l1 / l0)))
    return t1 * (length / l1) ** p


# -- one cell: mixer x length ----------------------------------------------------------------


def measure_cell(name: str, length: int, s: Settings, history: list[tuple[int, float]]) -> dict:
    """All per-cell measurements of mixer ``name`` at ``length``; a flat result dict."""
    m = build(name, s.dim)
    B = batch_for(length, s)
    res: dict = {"mixer": name, "L": length, "batch": B, "dim": s.dim,
                 "options": m.cfg.to_dict(),
                 "state_bytes_per_seq": m.state_size(length) * 4}

    pred = predict_iter_s(history, length)
    if pred is not None and pred / 3 > s.cell_budget_s:      # even the prefill (one forward) would not fit
        res["skipped"] = (f"over time budget (~{fmt_s(pred)} per training iteration predicted, "
                          f"budget {fmt_s(s.cell_budget_s)})")
        return res
    est = estimate_train_gib(m, B, length, s.dim)
    res["est_train_bytes"] = int(est * GIB)
    if est > s.mem_limit_gib:
        res["skipped"] = f"needs ~{fmt_bytes(est * GIB)} (limit {fmt_bytes(s.mem_limit_gib * GIB)})"
        return res
    if pred is not None and pred > s.cell_budget_s:
        res["train_skipped"] = (f"over time budget (~{fmt_s(pred)} per iteration predicted, "
                                f"budget {fmt_s(s.cell_budget_s)})")
    else:
        res.update(measure_train(m, B, length, s, history))
    res.update(measure_steps(m, B, length, s))
    return res


def measure_train(m, B: int, length: int, s: Settings, history: list[tuple[int, float]]) -> dict:
    """Forward + backward tokens/s; appends (length, median seconds) to ``history``."""
    x = torch.randn(B, length, s.dim, requires_grad=True)
    run = train_step_fn(m, x)
    with SavedBytes() as sb:        # the first warm-up also checks the memory estimate
        first = [timed(run)]
    first += [timed(run) for _ in range(s.warmup - 1)]
    # Fit the timed repetitions into the budget, judging by the last warm-up.
    reps = max(1, min(s.reps, int(s.cell_budget_s // max(first[-1], 1e-9)) - 1))
    times = [timed(run) for _ in range(reps)]
    t = med(times)
    history.append((length, t))
    return {"train_tok_s": B * length / t, "train_iter_s": times, "train_reps": reps,
            "saved_bytes": sb.total}


def measure_steps(m, B: int, length: int, s: Settings) -> dict:
    """Prefill ``length`` tokens, then time ``m.step`` at batch 1 and at batch B."""
    x = torch.randn(B, length, s.dim)
    with torch.no_grad():
        t0 = time.perf_counter()
        _, state = m(x)
        prefill = time.perf_counter() - t0
    out = {"prefill_tok_s": B * length / prefill,
           "state_nbytes_per_seq": state.nbytes() / B}
    x1 = torch.randn(1, s.dim)
    t1 = step_latencies(m.step, x1, state.select([0]), s.steps, s.step_warmup)
    out["step_ms_b1"] = med(t1) * 1e3
    if B == 1:
        out["step_ms_bB"] = out["step_ms_b1"]
    else:
        tB = step_latencies(m.step, torch.randn(B, s.dim), state, s.steps, s.step_warmup)
        out["step_ms_bB"] = med(tB) * 1e3
    return out


# -- comparisons ---------------------------------------------------------------------------------


@dataclass
class Goal:
    label: str
    value: float
    unit: str          # "x" (ratio) or "%"
    target: float
    higher_is_better: bool
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def goal_text(self) -> str:
        return f"{'>=' if self.higher_is_better else '<='} {self.target:g}{self.unit}"


def compare_parallel_vs_loop(name: str, target: float, s: Settings,
                             **extra) -> tuple[list[Goal], dict]:
    """(a)/(b): forward time of the parallel face vs a ``m.step`` loop on the same input.

    Measured at batch 1 (one sequence) and at the cell batch for L. The loop
    costs the same per token at every position (constant state), so it is
    timed on the first ``loop_tokens`` tokens (fewer if that would exceed the
    cell budget) and scaled linearly to L.
    """
    L = s.compare_length
    m = build(name, s.dim, **extra)
    letter = "a" if name == "mamba" else "b"
    label = name + "".join(f"[{k}={v}]" for k, v in extra.items())
    goals, rec = [], {"comparison": letter, "mixer": name, "options": extra, "L": L}
    for B in sorted({1, batch_for(L, s)}):
        x = torch.randn(B, L, s.dim)
        loop_reps = max(1, min(3, s.compare_reps))

        def loop(n: int) -> torch.Tensor:
            st, ys = m.init_state(B), []
            for t in range(n):
                y_t, st = m.step(x[:, t], st)
                ys.append(y_t)
            return torch.stack(ys, 1)

        with torch.no_grad():
            t_par = time_reps(lambda: m(x), s.compare_reps, s.warmup)
            # The warm-up loop also sizes the prefix so that the timed loops fit the budget.
            per_token = timed(lambda: loop(16)) / 16
            P = max(16, min(L, s.loop_tokens, int(s.cell_budget_s / loop_reps / per_token)))
            t_loop = time_reps(lambda: loop(P), loop_reps, 0)
            err = (m(x)[0][:, :P] - loop(P)).abs().max().item()
        full_loop = med(t_loop) * L / P
        ratio = full_loop / med(t_par)
        scaled = f"loop timed on the first {P} tokens, scaled x{L / P:.3g}; " if P < L else ""
        goals.append(Goal(f"({letter}) {label} parallel vs step loop, B={B}, L={L}", ratio, "x", target, True,
                          f"{scaled}parallel {fmt_s(med(t_par))}, loop {fmt_s(full_loop)}, "
                          f"max|diff| {err:.1e}"))
        rec[f"batch_{B}"] = {"loop_tokens": P, "parallel_s": t_par, "loop_prefix_s": t_loop,
                             "loop_full_s_extrapolated": full_loop, "ratio": ratio, "max_abs_diff": err}
    return goals, rec


def sdpa_baseline(attn, x: torch.Tensor) -> torch.Tensor:
    """The minimal code a user would write: project, rotate (rotate-half rotary), SDPA, project."""
    B, T, D = x.shape
    H, Dh = attn.heads, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, Dh).transpose(1, 2)
    k = attn.k_proj(x).view(B, T, H, Dh).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, H, Dh).transpose(1, 2)
    inv_freq = attn.cfg.rope_theta ** (-torch.arange(0, Dh, 2, dtype=torch.float32) / Dh)
    ang = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    ang = torch.cat([ang, ang], -1)                                  # (T, Dh)
    cos, sin = ang.cos(), ang.sin()

    def rotate(t: torch.Tensor) -> torch.Tensor:
        t1, t2 = t.chunk(2, -1)
        return t * cos + torch.cat([-t2, t1], -1) * sin

    y = F.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
    return attn.o_proj(y.transpose(1, 2).reshape(B, T, D))


def compare_attention(L: int, s: Settings) -> tuple[list[Goal], dict]:
    """(c): attention mixer vs ``sdpa_baseline`` on the same weights and input."""
    B = batch_for(L, s)
    m = build("attention", s.dim)
    assert m.kv_heads == m.heads and m.cfg.rotary and m.cfg.window is None, "baseline assumes plain MHA"
    x = torch.randn(B, L, s.dim)
    with torch.no_grad():
        err = (m(x)[0] - sdpa_baseline(m, x)).abs().max().item()
        fwd = time_interleaved({"mixer": lambda: m(x), "sdpa": lambda: sdpa_baseline(m, x)},
                               s.compare_reps, s.warmup)
    xg = torch.randn(B, L, s.dim, requires_grad=True)
    bwd = time_interleaved({"mixer": train_step_fn(m, xg),
                            "sdpa": train_step_fn(m, xg, lambda t: sdpa_baseline(m, t))},
                           s.compare_reps, s.warmup)
    over_f = (med(fwd["mixer"]) / med(fwd["sdpa"]) - 1) * 100
    over_b = (med(bwd["mixer"]) / med(bwd["sdpa"]) - 1) * 100
    goals = [
        Goal(f"(c) attention overhead vs SDPA, fwd, L={L}", over_f, "%", 10, False,
             f"B={B}, mixer {fmt_s(med(fwd['mixer']))}, SDPA {fmt_s(med(fwd['sdpa']))}, "
             f"max|diff| {err:.1e}"),
        Goal(f"(c) attention overhead vs SDPA, fwd+bwd, L={L}", over_b, "%", 10, False,
             f"B={B}, mixer {fmt_s(med(bwd['mixer']))}, SDPA {fmt_s(med(bwd['sdpa']))}"),
    ]
    rec = {"comparison": "c", "L": L, "batch": B, "fwd_s": fwd, "fwd_bwd_s": bwd,
           "overhead_fwd_pct": over_f, "overhead_fwd_bwd_pct": over_b, "max_abs_diff": err}
    return goals, rec


def mambapy_twin(m):
    """mambapy's MambaBlock with the same shape and weights as seqlab mamba mixer ``m``."""
    from mambapy.mamba import MambaBlock, MambaConfig

    c = m.cfg
    cfg = MambaConfig(d_model=m.dim, n_layers=1, d_state=c.d_state, expand_factor=c.expand,
                      d_conv=c.d_conv, dt_rank=m.dt_rank, bias=c.bias, conv_bias=c.conv_bias,
                      pscan=True, use_cuda=False)
    ref = MambaBlock(cfg)
    with torch.no_grad():
        for a, b in [("in_proj", "in_proj"), ("x_proj", "x_proj"), ("dt_proj", "dt_proj"),
                     ("out_proj", "out_proj")]:
            getattr(ref, a).load_state_dict(getattr(m, b).state_dict())
        ref.conv1d.weight.copy_(m.conv_weight[:, None, :])
        if c.conv_bias:
            ref.conv1d.bias.copy_(m.conv_bias)
        ref.A_log.copy_(m.A_log)
        ref.D.copy_(m.D)
    return ref


def compare_mambapy(s: Settings, **extra) -> tuple[list[Goal], dict]:
    """(d): seqlab mamba vs mambapy MambaBlock (pscan), same dims and weights."""
    L, B = s.compare_length, s.mambapy_batch
    m = build("mamba", s.dim, **extra)
    label = "mamba" + "".join(f"[{k}={v}]" for k, v in extra.items())
    ref = mambapy_twin(m)
    x = torch.randn(B, L, s.dim)
    with torch.no_grad():
        err = (m(x)[0] - ref(x)).abs().max().item()
    xg = torch.randn(B, L, s.dim, requires_grad=True)
    tr = time_interleaved({"seqlab": train_step_fn(m, xg), "mambapy": train_step_fn(ref, xg)},
                          s.compare_reps, s.warmup)
    ratio = med(tr["mambapy"]) / med(tr["seqlab"])
    goals = [Goal(f"(d) {label} vs mambapy train tok/s, B={B}, L={L}", ratio, "x", 4, True,
                  f"seqlab {B * L / med(tr['seqlab']):,.0f} tok/s, mambapy {B * L / med(tr['mambapy']):,.0f} "
                  f"tok/s, max|diff| {err:.1e}")]
    rec = {"comparison": "d", "options": extra, "L": L, "batch": B, "train_s": tr, "train_ratio": ratio,
           "max_abs_diff": err}
    for b in sorted({1, B}):
        xt = torch.randn(b, s.dim)
        ours = step_latencies(m.step, xt, m.init_state(b), s.steps, s.step_warmup)
        E = ref.config.d_inner
        cache = (torch.zeros(b, E, ref.config.d_state), torch.zeros(b, E, ref.config.d_conv - 1))
        theirs = step_latencies(ref.step, xt, cache, s.steps, s.step_warmup)
        ratio_step = med(ours) / med(theirs)
        goals.append(Goal(f"(d) {label} step / mambapy step, batch {b}", ratio_step, "x", 1, False,
                          f"seqlab {fmt_s(med(ours))}, mambapy {fmt_s(med(theirs))}"))
        rec[f"step_ms_b{b}"] = {"seqlab": med(ours) * 1e3, "mambapy": med(theirs) * 1e3}
    return goals, rec


# -- output ----------------------------------------------------------------------------------------


def machine_facts(s: Settings) -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"record": "machine", "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "loadavg_start": os.getloadavg(), "mem_available_gib": round(mem_available_gib(), 1),
            "settings": asdict(s), "mixer_options": MIXER_OPTIONS}


def mem_available_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 8.0


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def fmt_ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def fmt_bytes(n: float) -> str:
    for unit, k in (("GiB", GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n:.0f} B"


def cell_table(cells: list[dict]) -> str:
    head = f"{'mixer':<17}{'L':>6}{'B':>4} {'train tok/s':>11} {'step ms B=1':>11} {'step ms B':>10} " \
           f"{'state/seq':>10}  note"
    rows = [head, "-" * len(head)]
    for c in cells:
        notes = [f"{what}: {c[key]}" for key, what in
                 (("skipped", "skipped"), ("train_skipped", "train skipped"))
                 if key in c]
        real = c.get("state_nbytes_per_seq")
        if real is not None and real != c["state_bytes_per_seq"]:
            notes.append(f"state_size*4 != nbytes ({real:.0f})")
        rows.append(f"{c['mixer']:<17}{c['L']:>6}{c['batch']:>4} {fmt_rate(c.get('train_tok_s')):>11} "
                    f"{fmt_ms(c.get('step_ms_b1')):>11} {fmt_ms(c.get('step_ms_bB')):>10} "
                    f"{fmt_bytes(c['state_bytes_per_seq']):>10}  {'; '.join(notes)}")
    return "\n".join(rows)


def goal_table(goals: list[Goal], skipped: list[str]) -> str:
    w = max([len(g.label) for g in goals] + [20])
    rows = [f"{'comparison':<{w}} {'measured':>9} {'goal':>8}  result  details", "-" * (w + 40)]
    for g in goals:
        val = f"{g.value:.1f}{g.unit}" if g.unit == "%" else f"{g.value:.2f}{g.unit}"
        rows.append(f"{g.label:<{w}} {val:>9} {g.goal_text():>8}  {'PASS' if g.passed else 'MISS':<6}  {g.note}")
    rows += [f"{line:<{w}} skipped: {why}" for line, why in skipped]
    return "\n".join(rows)


# -- main ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[Settings, Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="seconds-long smoke run: dim 64, L 64 and 256, 2 repetitions, small comparisons")
    p.add_argument("--lengths", type=int, nargs="+", help="sequence lengths (default 256 1024 4096 16384)")
    p.add_argument("--mixers", nargs="+", help="mixers to measure (default: all registered)")
    p.add_argument("--dim", type=int, help="model width (default 256)")
    p.add_argument("--tokens", type=int, help="tokens per batch; batch = max(1, tokens // L) (default 16384)")
    p.add_argument("--batch", type=int, help="fixed batch size for every L (overrides --tokens)")
    p.add_argument("--reps", type=int, help="timed repetitions (default 3 per cell, 5 in comparisons)")
    p.add_argument("--steps", type=int, help="timed m.step calls per latency (default 64)")
    p.add_argument("--cell-budget", type=float, help="seconds allowed for one training measurement (default 60)")
    p.add_argument("--mem-limit-gib", type=float, help="skip cells estimated above this (default 70%% of MemAvailable)")
    p.add_argument("--no-compare", action="store_true", help="skip the side-by-side comparisons")
    p.add_argument("--threads", type=int,
                   help="torch threads (default: all cores; 1 with --quick, which then stays fast on a "
                        "busy machine where threads would wait on each other)")
    p.add_argument("--out", type=Path, help="JSON lines output (default benchmarks/out/mixers.jsonl, "
                                            "mixers-quick.jsonl with --quick)")
    a = p.parse_args(argv)

    def pick(value, full, quick):
        """The flag's value if given, else the default of the full or the quick run."""
        return value if value is not None else (quick if a.quick else full)

    # Mixers that read token ids (the n-gram layer) are measured inside an LM, not on x alone.
    names = [n for n in seqlab.mixers.names() if not seqlab.mixers.get(n).needs_tokens]
    for n in a.mixers or ():
        if n not in names:
            p.error(f"unknown mixer {n!r} or one that reads token ids; measured here: {', '.join(names)}")
    s = Settings(
        lengths=tuple(pick(a.lengths, (256, 1024, 4096, 16384), (64, 256))),
        mixers=tuple(a.mixers or names), dim=pick(a.dim, 256, 64), tokens=pick(a.tokens, 16384, 256),
        batch=a.batch, warmup=1, reps=pick(a.reps, 3, 2), compare_reps=pick(a.reps, 5, 2),
        steps=pick(a.steps, 64, 4), step_warmup=pick(None, 8, 1), loop_tokens=pick(None, 1024, 64),
        compare_length=pick(None, 4096, 256), attention_lengths=pick(None, (1024, 4096), (128, 256)),
        mambapy_batch=4, cell_budget_s=pick(a.cell_budget, 60.0, 10.0),
        mem_limit_gib=a.mem_limit_gib if a.mem_limit_gib is not None else 0.7 * mem_available_gib(),
        threads=pick(a.threads, os.cpu_count() or 1, 1), compare=not a.no_compare, quick=a.quick)
    out = a.out or HERE / "out" / ("mixers-quick.jsonl" if a.quick else "mixers.jsonl")
    return s, out


Job = tuple[str, str, Callable[[], tuple[list[Goal], dict]]]   # label, mixer it needs, run


def comparison_jobs(s: Settings) -> list[Job]:
    jobs: list[Job] = [
        ("(a) mamba parallel vs loop", "mamba", lambda: compare_parallel_vs_loop("mamba", 10, s)),
        # The opt-in C++ scan kernel (seqlab/ops), measured beside the default pure-torch scan.
        ("(a) mamba[scan=cpp] parallel vs loop", "mamba",
         lambda: compare_parallel_vs_loop("mamba", 10, s, scan="cpp")),
        ("(b) s4d parallel vs loop", "s4d", lambda: compare_parallel_vs_loop("s4d", 20, s)),
    ]
    for L in s.attention_lengths:
        jobs.append((f"(c) attention vs SDPA L={L}", "attention", lambda L=L: compare_attention(L, s)))
    jobs.append(("(d) mamba vs mambapy", "mamba", lambda: compare_mambapy(s)))
    jobs.append(("(d) mamba[scan=cpp] vs mambapy", "mamba", lambda: compare_mambapy(s, scan="cpp")))
    return jobs


def run_comparison(job: Job) -> tuple[list[Goal], dict, str | None]:
    """Run one comparison; a missing mixer or package is reported, never hidden."""
    label, needs, run = job
    if needs not in seqlab.mixers.names():
        return [], {}, f"mixer {needs!r} is not registered"
    if label.startswith("(d)"):
        try:
            import mambapy.mamba  # noqa: F401
        except ImportError:
            return [], {}, "mambapy is not installed (pip install -e '.[bench]')"
    goals, rec = run()
    return goals, rec, None


def main(argv: list[str] | None = None) -> int:
    s, out = parse_args(argv)
    torch.set_num_threads(s.threads)
    t_start = time.perf_counter()
    facts = machine_facts(s)
    records: list[dict] = [facts]
    jobs = comparison_jobs(s) if s.compare else []
    print(f"seqlab mixer benchmark: torch {facts['torch']}, {facts['torch_threads']} threads, "
          f"{facts['cpu_model']}, load avg {facts['loadavg_start'][0]:.1f}, "
          f"mem limit {s.mem_limit_gib:.1f} GiB")
    if facts["loadavg_start"][0] > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine is busy (load average above half the cores): timings will be "
              "noisy, and small ops can stall for whole scheduler ticks while torch's threads wait on "
              "each other")

    cells: list[dict] = []
    goals: list[Goal] = []
    skipped: list[tuple[str, str]] = []
    bar = tqdm(total=len(s.mixers) * len(s.lengths) + len(jobs), unit="cell", dynamic_ncols=True)
    for name in s.mixers:
        history: list[tuple[int, float]] = []
        for L in sorted(s.lengths):
            bar.set_description(f"{name} L={L}")
            cell = measure_cell(name, L, s, history)
            cells.append(cell)
            records.append({"record": "cell", **cell})
            bar.update()
    for job in jobs:
        label = job[0]
        bar.set_description(label)
        g, rec, why = run_comparison(job)
        goals += g
        if why:
            skipped.append((label, why))
            records.append({"record": "comparison", "label": label, "skipped": why})
        else:
            records.append({"record": "comparison", "label": label, **rec,
                            "goals": [{**asdict(x), "passed": x.passed} for x in g]})
        bar.update()
    bar.close()

    wall = time.perf_counter() - t_start
    records[0]["wall_s"] = wall
    records[0]["loadavg_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")

    print(f"\nper mixer x L (dim {s.dim}, float32; train = fwd+bwd; step after an L-token prefill; "
          f"state = state_size(L) * 4 bytes per sequence)")
    print(cell_table(cells))
    if goals or skipped:
        print("\ncomparisons (back to back in this process, interleaved repetitions)")
        print(goal_table(goals, skipped))
        if s.quick:
            print("(--quick: tiny shapes, the goals are not meaningful here)")
    print(f"\nwrote {len(records)} records to {out}; total wall time {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
