"""``seqlab bench``: probe sweeps and their reports (registered by ``seqlab/cli.py``).

    seqlab bench run PROBE --mixers attention,mamba,hybrid --dims 32,64,128 [--lengths 512,1024]
                     [--seeds 0,1] [--steps N] [--batch-size B] [--lr LR[,LR...]] [--layers N]
                     [--sparsity S[,S...]] [--set probe.FIELD=V] [--set model.FIELD=V]
                     [--set train.FIELD=V] [--set sparsity.FIELD=V]
                     [--out FILE] [--smoke]
    seqlab bench run --data-file PATH [--task classify|regress] --mixers ... (the same options)
    seqlab bench report RESULTS [--out DIR]
    seqlab bench probes

Bad input raises ConfigError (or BenchError for a results file), which the
``seqlab`` entry point prints as ``seqlab bench: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from seqlab.config import ConfigError  # stdlib-only module: cheap to import for every command

# A seconds-long sweep: a handful of small steps and a small test set per cell.
SMOKE = {"steps": 8, "batch_size": 8, "warmup": 2, "eval_batches": 2, "eval_batch_size": 8}
SECTIONS = ("probe", "model", "train", "sparsity")   # sparsity: train.sparsity, as in seqlab train


def _number_list(text: str | None, flag: str, convert, allowed, expected: str, example: str) -> tuple:
    """``text`` split at commas and converted; () when the flag was not given."""
    if text is None:
        return ()
    try:
        values = tuple(convert(p) for p in text.split(",") if p.strip())
    except ValueError:
        values = ()
    if not values or not all(allowed(v) for v in values):
        raise ConfigError(f"{flag} {text!r} is not allowed: expected comma-separated {expected}, "
                            f"e.g. {flag} {example}")
    return values


def _int_list(text: str | None, flag: str, minimum: int = 1) -> tuple[int, ...]:
    return _number_list(text, flag, int, lambda v: v >= minimum, f"ints >= {minimum}", "32,64")


def _float_list(text: str | None, flag: str) -> tuple[float, ...]:
    return _number_list(text, flag, float, lambda v: v > 0, "positive numbers", "1e-3,1e-2")


def sweep_from_args(args: argparse.Namespace):
    """The SweepConfig a ``bench run`` command line asks for."""
    from seqlab.bench.sweep import SweepConfig
    from seqlab.models.pattern import split_patterns
    from seqlab.train.config import apply_overrides

    probe, file_params = probe_and_file(args)
    sets = apply_overrides({s: {} for s in SECTIONS}, args.set or [])
    unknown = sorted(set(sets) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"--set {unknown[0]}.… is not allowed: the sections are probe (the probe's "
                            "parameters), model (LMConfig fields, e.g. model.mixer_options.attention."
                            "heads=1), train (e.g. train.warmup=10) and sparsity (e.g. "
                            "sparsity.method=random_graph)")
    mixers = tuple(split_patterns(args.mixers or ""))   # top-level commas: one cell per pattern
    if not mixers:
        raise ConfigError("--mixers is empty: name one or more mixers, e.g. --mixers attention,mamba")
    flags = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
    lrs = _float_list(args.lr, "--lr")
    sparsities = _number_list(args.sparsity, "--sparsity", float, lambda v: 0 <= v < 1,
                              "fractions in [0, 1)", "0,0.5,0.9")
    # Later wins: --smoke's budget, then the flags, then --set.
    train = {**(SMOKE if args.smoke else {}), **flags, **sets["train"]}
    if sets["sparsity"]:
        train["sparsity"] = {**train.get("sparsity", {}), **sets["sparsity"]}
    return SweepConfig.from_dict({
        "probe": probe, "mixers": mixers, "dims": _int_list(args.dims, "--dims"),
        "seeds": _int_list(args.seeds, "--seeds", minimum=0),
        "train_lengths": _int_list(args.train_lengths, "--train-lengths", minimum=2),
        "test_lengths": _int_list(args.lengths, "--lengths", minimum=2),
        "lrs": lrs, "sparsities": sparsities, "layers": args.layers,
        "probe_params": {**file_params, **sets["probe"]}, "model": sets["model"],
        "train": train})


def probe_and_file(args: argparse.Namespace) -> tuple[str, dict]:
    """The probe a ``bench run`` command line names, and the file probe's parameters that
    ``--data-file`` and ``--task`` give (``--set probe.FIELD`` may override them)."""
    if args.data_file is None:
        if args.task is not None:
            raise ConfigError("--task goes with --data-file: it says whether the file's labels are "
                              "classes (classify) or numbers to predict (regress)")
        if args.probe is None:
            raise ConfigError("name a probe (seqlab bench probes lists them), or bring your own data "
                              "with --data-file PATH --task classify|regress")
        return args.probe, {}
    if args.probe not in (None, "file"):
        raise ConfigError(f"--data-file reads your data with the file probe; drop the probe name "
                          f"{args.probe!r}")
    return "file", {"path": args.data_file, **({"task": args.task} if args.task else {})}


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``45m``, ``2h`` or ``1h30m`` (argparse type)."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; use seconds (3600), or h/m/s units (45m, 1h30m)")
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = 3600 * h + 60 * m + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the time limit must be more than 0 seconds")
    return seconds


def _command_line(args: argparse.Namespace) -> str:
    parts = ["seqlab bench run", *([args.probe] if args.probe else []), "--mixers", args.mixers,
             "--dims", args.dims]
    for flag, value in (("--data-file", args.data_file), ("--task", args.task),
                        ("--lengths", args.lengths), ("--train-lengths", args.train_lengths),
                        ("--seeds", args.seeds), ("--layers", args.layers), ("--steps", args.steps),
                        ("--batch-size", args.batch_size), ("--lr", args.lr),
                        ("--sparsity", args.sparsity)):
        if value is not None:
            parts += [flag, str(value)]
    parts += [f"--set {s}" for s in args.set or []]
    if args.smoke:
        parts.append("--smoke")
    return " ".join(parts) + f" --out {args.out}"


def _cmd_run(args: argparse.Namespace) -> int:
    from seqlab.bench.alloc import retain_freed_memory
    from seqlab.bench.run import run_sweep
    from seqlab.train.trainer import resolve_device

    if args.out is None:
        probe, _ = probe_and_file(args)
        name = f"file-{Path(args.data_file).name.split('.')[0]}" if args.data_file else probe
        args.out = f"runs/bench/{name}.jsonl"
    sweep = sweep_from_args(args)
    # Process-wide, so done here at the entry point: ~20% faster CPU steps (see seqlab/bench/alloc.py).
    tuned = resolve_device(args.device, what="--device").type == "cpu" and retain_freed_memory()
    summary = run_sweep(sweep, args.out, device=args.device, progress=not args.quiet,
                        command=_command_line(args), time_limit=args.time_limit)
    if tuned and not args.quiet:
        print("cpu allocator: freed memory stayed in the heap between steps (glibc mallopt)")
    errors = [r for r in summary.ran if r["status"] == "error"]
    nans = [r for r in summary.ran if r["status"] == "nan"]
    print(f"{len(summary.ran)} cells run ({len(nans)} diverged, {len(errors)} failed), "
          f"{summary.skipped} already finished; results in {args.out}")
    for r in errors:
        print(f"  {r['mixer']} d={r['dim']} seed={r['seed']}: {r['message']}", file=sys.stderr)
    stopped = [r for r in summary.ran if r["status"] == "time-limit"]
    if stopped or summary.not_started:
        print(f"time limit reached: {len(stopped)} cell stopped part-way and "
              f"{summary.not_started} not started; run the same command again to continue "
              "(finished cells are skipped)")
    print(f"report: seqlab bench report {args.out}")
    return 1 if errors else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from seqlab.bench.report import write_report

    files = write_report(args.results, args.out)
    if files.skipped_lines:
        print(f"warning: skipped unreadable lines {files.skipped_lines[:10]} of {args.results}",
              file=sys.stderr)
    print(f"wrote {files.markdown}" + (f" and {len(files.plots)} plots" if files.plots else ""))
    return 0


def _cmd_probes(args: argparse.Namespace) -> int:
    from seqlab.tasks import probes

    names = probes.names()
    if not names:
        print("no probes are registered")
    width = max((len(n) for n in names), default=0) + 2
    for name in names:
        cls = probes.get(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        params = ", ".join(f"{k}={v!r}" for k, v in cls.Config().to_dict().items())
        print(f"{name:{width}s}{cls.kind:10s}{doc}\n{'':{width + 10}s}{params}")
    return 0


def _guarded(fn):
    """Report a BenchError like the entry point reports a ConfigError (exit status 2)."""

    def run(args: argparse.Namespace) -> int:
        from seqlab.bench.results import BenchError

        try:
            return fn(args)
        except BenchError as e:
            print(f"seqlab bench: error: {e}", file=sys.stderr)
            return 2

    return run


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` and its actions on the ``seqlab`` command's subparsers."""
    b = sub.add_parser("bench", help="probe sweeps: train and evaluate every cell, then report",
                       description="Train and evaluate sequence models on a synthetic probe over a "
                       "grid of mixers, widths, lengths and seeds; render tables and plots.")
    actions = b.add_subparsers(dest="bench_command", required=True, metavar="ACTION")

    r = actions.add_parser("run", help="run a sweep, appending one JSON line per cell",
                           description="Run probe x mixer x dim x train length x seed. Cells already "
                           "in --out are skipped, so an interrupted sweep continues where it stopped.")
    r.add_argument("probe", nargs="?", help="probe name (seqlab bench probes lists them); "
                   "omitted with --data-file")
    r.add_argument("--data-file", metavar="PATH",
                   help="your own labelled sequences (.npz/.npy, CSV/.tsv, MNIST idx, UCR/UEA .ts; "
                   "see seqlab/tasks/seqfiles.py) instead of a probe; more options with "
                   "--set probe.FIELD (e.g. probe.test_path=X_TEST.ts, probe.label_column=last)")
    r.add_argument("--task", choices=("classify", "regress"),
                   help="with --data-file: the labels are classes (classify, the default; accuracy) "
                   "or numbers to predict (regress; mse and r2)")
    r.add_argument("--mixers", required=True,
                   help="comma-separated layer patterns, one cell each, in seqlab train's syntax: "
                   "a mixer name, layers joined by '+' with options in parentheses "
                   "(mamba+attention(window=64)), or hybrid (= mamba+attention)")
    r.add_argument("--dims", default="64", help="model widths, e.g. 32,64,128 (default 64)")
    r.add_argument("--lengths", help="test lengths besides the trained one (length extrapolation)")
    r.add_argument("--train-lengths", help="training lengths, one cell each (default: the probe's seq_len)")
    r.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 (default 0)")
    r.add_argument("--layers", type=int, default=2, help="layers per model; the pattern repeats (default 2)")
    r.add_argument("--steps", type=int, help="training steps per cell")
    r.add_argument("--batch-size", type=int, help="training sequences per step")
    r.add_argument("--lr", help="peak learning rate, or several (1e-3,1e-2): a cell each, and the "
                   "report keeps each mixer's best")
    r.add_argument("--sparsity", help="sparsity targets of the mixers' matrices, a cell each, e.g. "
                   "0,0.5,0.9 (0: dense); how is set by --set sparsity.FIELD (seqlab.train.sparsity)")
    r.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="probe.FIELD (probe parameters), model.FIELD (LMConfig, e.g. "
                   "model.mixer_options.attention.heads=1), train.FIELD (e.g. train.warmup=10) or "
                   "sparsity.FIELD (e.g. sparsity.method=random_graph); repeatable")
    r.add_argument("--out", help="results file (default runs/bench/PROBE.jsonl)")
    r.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    r.add_argument("--smoke", action="store_true", help="a seconds-long sweep (8 small steps per cell)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--time-limit", type=duration, metavar="DURATION",
                   help="wall time for this call, e.g. 3600, 45m or 1h30m: no cell starts after "
                   "it and the cell training then stops (status time-limit); the same command "
                   "later runs both in full")
    r.set_defaults(fn=_guarded(_cmd_run))

    p = actions.add_parser("report", help="markdown table and PNG plots of a results file")
    p.add_argument("results", help="a results file written by seqlab bench run")
    p.add_argument("--out", help="folder for report.md and the plots (default RESULTS-report/)")
    p.set_defaults(fn=_guarded(_cmd_report))

    ls = actions.add_parser("probes", help="list the registered probes and their parameters")
    ls.set_defaults(fn=_guarded(_cmd_probes))
