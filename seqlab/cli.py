"""The ``seqlab`` command line. Thin: parses arguments, builds configs, calls the package.

    seqlab train [CONFIG] [--mixers attention+mamba*2 --dim 256 --layers 6 --data PATH ...]
    seqlab train-pairs [CONFIG] [--model encdec|lm --teacher RUN --steps N --out DIR ...]
    seqlab eval CKPT [--data PATH]
    seqlab generate CKPT --prompt TEXT [--max-new-tokens N --stream --temperature T ...]
    seqlab train-draft TARGET --kind chimera|transfer|heads [--data PATH --steps N --out DIR]
    seqlab serve CKPT [--port 8000 --strategy prompt-lookup --draft RUN ...]
    seqlab info CKPT
    seqlab demo
    seqlab mixers
    seqlab bench run PROBE --mixers a,b --dims 32,64 [--lengths ...] | report RESULTS
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from seqlab.config import ConfigError


class CLIError(Exception):
    """An error already phrased for the user."""


# -- train ---------------------------------------------------------------------------
def _model_kinds() -> list[str]:
    from seqlab.models.kinds import MODELS

    return list(MODELS)


def _run_config_from_args(args: argparse.Namespace):
    from seqlab.models.pattern import parse_layers, repeat_to
    from seqlab.train.config import RunConfig, apply_overrides, read_config_file, read_run_file

    data: dict[str, Any] = {}
    out = Path(args.out) if args.out else None
    if args.resume and out is not None and (out / "config.yaml").is_file():
        data = read_run_file(out / "config.yaml")
    from_file = read_config_file(args.config) if args.config else {}
    data = _merge(data, from_file)
    flags: dict[str, dict[str, Any]] = {"model": {}, "data": {}, "train": {}}
    if args.model is not None:
        if args.init:
            raise ConfigError(f"--model {args.model} with --init {args.init}: the pretrained model "
                              "brings its own family; drop one of them")
        have = _kind(data)
        if args.resume and data and have != args.model:
            raise ConfigError(f"--model {args.model}: the run in {args.out} is a {have!r} model; "
                              "resume it without --model, or use another --out")
        flags["model"]["kind"] = args.model
    if args.layers is not None and args.layers < 1:
        raise ConfigError(f"--layers {args.layers} is not allowed: expected a positive number of "
                          "layers (the pattern of --mixers repeats to fill them)")
    if args.init:
        _check_init_without_shape(args, from_file)
    if args.mixers or args.layers:
        # One pattern syntax (seqlab/models/pattern.py) for this flag, bench's and config files.
        kind = args.model or _kind(data)
        saved = _shape_of(data.get("model", {}), kind).get("layers")
        pattern = parse_layers(_one_pattern(args.mixers), "--mixers") if args.mixers else \
            parse_layers(saved or _shape_of(_default_model(kind), kind)["layers"], "model.layers")
        layers = repeat_to(pattern, args.layers or len(pattern))
        _shape_of(flags["model"], kind, create=True)["layers"] = [s.to_dict() for s in layers]
    if args.dim is not None:
        _shape_of(flags["model"], args.model or _kind(data), create=True)["dim"] = args.dim
    for key, section, field in [("data", "data", "paths"),
                                ("tokenizer", "data", "tokenizer"), ("steps", "train", "steps"),
                                ("batch_size", "train", "batch_size"), ("seq_len", "train", "seq_len"),
                                ("lr", "train", "lr"), ("device", "train", "device"),
                                ("precision", "train", "precision"),
                                ("time_limit", "train", "time_limit"),
                                ("objective", "train", "objective")]:
        value = getattr(args, key)
        if value is not None:
            flags[section][field] = value
    if args.compile:
        flags["train"]["compile"] = True
    if args.init:
        data["init"] = args.init
    data = _merge(data, {k: v for k, v in flags.items() if v})
    if out is not None:
        data["out_dir"] = str(out)
    data = apply_overrides(data, args.set or [])
    return RunConfig.from_dict(data)


def _kind(data: dict) -> str:
    """The model family a run's plain data names ("lm" unless its model section says)."""
    model = data.get("model")
    return model.get("kind", "lm") if isinstance(model, dict) else "lm"


def _default_model(kind: str) -> dict:
    """A family's default config as plain data."""
    from seqlab.models.kinds import MODELS

    return MODELS[kind][0]().to_dict() if kind in MODELS else {}


def _shape_of(model: dict, kind: str, create: bool = False) -> dict:
    """Where --dim and --mixers go in a model section: the section itself, or its
    ``backbone`` for a family that wraps an LM (hmt)."""
    from seqlab.models.kinds import MODELS

    fields = MODELS[kind][0].field_names() if kind in MODELS else []
    if "backbone" in fields and "dim" not in fields:
        if create:
            return model.setdefault("backbone", {})
        return model.get("backbone") or {}
    return model


def _check_init_without_shape(args: argparse.Namespace, from_file: dict) -> None:
    """--init brings its own shape: a shape asked for as well would be silently ignored."""
    given = [flag for flag, value in [("--mixers", args.mixers), ("--layers", args.layers),
                                      ("--dim", args.dim)] if value is not None]
    given += [s.split("=")[0] for s in args.set or [] if s.startswith("model.")]
    if from_file.get("model"):
        given.append(f"the model section of {args.config}")
    if given:
        raise ConfigError(f"--init {args.init} takes its shape from the pretrained model: drop "
                          f"{', '.join(given)} (or drop --init to train a fresh model of that shape)")


def _one_pattern(text: str) -> str:
    """``--mixers`` of ``seqlab train``: exactly one layer pattern."""
    from seqlab.models.pattern import split_patterns

    patterns = split_patterns(text)
    if len(patterns) != 1:
        joined = "+".join(patterns) or "attention+mamba"
        raise ConfigError(f"--mixers {text!r} is not allowed: seqlab train takes one layer "
                          f"pattern, with layers joined by '+' (a comma separates the patterns "
                          f"of a bench sweep), e.g. --mixers {joined}")
    return patterns[0]


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    from seqlab.train import train

    paired = _train_paired_family(args)
    if paired is not None:
        return paired
    run = _run_config_from_args(args)
    result = train(run, resume=args.resume, progress=not args.quiet)
    if result.evals:
        ev = result.evals[-1]
        print(f"step {result.step}: validation {ev['bpb']:.3f} bits per byte (loss {ev['loss']:.4f})")
    if result.message:
        print(result.message, file=sys.stderr if result.stopped == "nan" else sys.stdout)
    if result.checkpoint:
        print(f"checkpoint: {result.checkpoint}")
    if result.stopped == "interrupted":
        # The command is on its way out: one more Ctrl-C would only land in interpreter
        # shutdown as a traceback, so further interruptions are ignored from here.
        import signal
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        return 128 + (result.signal or 2)   # 130 after Ctrl-C, 143 after SIGTERM, as shells do
    return 1 if result.stopped == "nan" else 0


# Families trained on (source, target) pairs by seqlab.train.seq2seq rather than on a stream.
PAIR_FAMILIES = ("encdec", "pointer")
# seqlab train's flags that shape a stream run and mean nothing to a paired one.
_STREAM_ONLY = [("--mixers", "mixers"), ("--layers", "layers"), ("--data", "data"),
                ("--tokenizer", "tokenizer"), ("--seq-len", "seq_len"),
                ("--precision", "precision"), ("--compile", "compile"),
                ("--objective", "objective"), ("--init", "init")]


def _pairs_run_from_args(args: argparse.Namespace, data: dict):
    """The PairsRunConfig of ``seqlab train-pairs`` (or of ``seqlab train`` on a paired family)."""
    from seqlab.train.config import apply_overrides
    from seqlab.train.seq2seq import PairsRunConfig

    if args.model is not None:
        model = data.get("model") if isinstance(data.get("model"), dict) else {}
        if model and model.get("kind", "lm") != args.model:
            raise ConfigError(f"--model {args.model}, but the model section of {args.config} is "
                              f"of kind {model.get('kind', 'lm')!r}: drop --model, or give a "
                              f"config whose model kind is {args.model}")
        data["model"] = {**model, "kind": args.model}
    if getattr(args, "dim", None) is not None:
        data.setdefault("model", {"kind": "encdec"})["dim"] = args.dim
    train = data.setdefault("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"the train section of {args.config} must be a mapping of options")
    for key, value in [("teacher", getattr(args, "teacher", None)), ("steps", args.steps),
                       ("batch_size", args.batch_size), ("lr", args.lr),
                       ("time_limit", args.time_limit), ("device", getattr(args, "device", None))]:
        if value is not None:
            train[key] = value
    if args.out:
        data["out_dir"] = args.out
    return PairsRunConfig.from_dict(apply_overrides(data, args.set or []))


def _train_pairs(args: argparse.Namespace, data: dict) -> int:
    from seqlab.train.seq2seq import train_pairs

    result = train_pairs(_pairs_run_from_args(args, data), resume=args.resume,
                         progress=not args.quiet)
    if result.evals:
        ev = result.evals[-1]
        scores = "".join(f", {name.replace('_', ' ')} {ev[name]:.3f}" for name in
                         ("accuracy", "tour_over_optimal", "tour_over_nearest_neighbour")
                         if name in ev)   # a pointer task's own score, decoded greedily
        print(f"step {result.step}: validation {ev['loss']:.4f} nats per target token "
              f"({ev['bits']:.3f} bits){scores}")
    if result.message:
        print(result.message, file=sys.stderr if result.stopped == "nan" else sys.stdout)
    print(f"run: {result.out}")
    return 1 if result.stopped == "nan" else 0


def _cmd_train_pairs(args: argparse.Namespace) -> int:
    from seqlab.train.config import read_config_file

    return _train_pairs(args, read_config_file(args.config) if args.config else {})


def _train_paired_family(args: argparse.Namespace) -> int | None:
    """``seqlab train`` on a family of PAIR_FAMILIES: the paired loop (None: not one)."""
    from seqlab.train.config import read_config_file, read_run_file
    from seqlab.train.seq2seq import CONFIG_FILE

    data = read_config_file(args.config) if args.config else {}
    saved = Path(args.out or "") / CONFIG_FILE
    if args.resume and args.out and saved.is_file():
        data = _merge(read_run_file(saved), data)   # the run's own config, then changes
    kind = args.model or _kind(data)
    if kind not in PAIR_FAMILIES:
        return None
    stray = [flag for flag, name in _STREAM_ONLY if getattr(args, name, None) not in (None, False)]
    if stray:
        raise ConfigError(f"{', '.join(stray)}: the {kind} family trains on (source, target) "
                          "pairs (train.task), not on a stream of text; drop "
                          f"{'it' if len(stray) == 1 else 'them'} (model.encoder_layers and "
                          "model.decoder_layers set its stacks, e.g. --set "
                          "model.encoder_layers='attention*4')")
    return _train_pairs(args, data)


# -- loading a model from the command line --------------------------------------------------
def is_pretrained_source(source: str) -> bool:
    """A GGUF file, a Hugging Face folder or a packaged alias (rather than a seqlab run)."""
    import json

    p = Path(source)
    if p.suffix == ".gguf":
        return True
    if (p / "config.json").is_file():
        try:
            return "model_type" in json.loads((p / "config.json").read_text())
        except ValueError:
            return False
    from seqlab.models.pretrained import ALIASES

    return source in ALIASES and not p.exists()


def load_for_cli(path: str, device: str = "cpu", weights: str = "float", activations: str = "int8"):
    """(model, tokenizer, run config or None) from a run folder, checkpoint folder or pretrained
    source; ``weights`` "q8" / "q4" quantizes its linear layers (seqlab.models.quantize)."""
    from seqlab.models.io import load
    if weights != "float" and str(device) != "cpu":
        raise CLIError(f"--weights {weights} runs on the CPU only; add --device cpu, or drop "
                       "--weights for float weights on another device")
    if is_pretrained_source(path):
        from seqlab.models.pretrained import load_pretrained

        model, tokenizer = load_pretrained(path, device=device, weights=weights,
                                           activations=activations)
        return model.eval(), tokenizer, None
    from seqlab.tokenizer import load_tokenizer
    from seqlab.train.checkpoint import resolve_model_dir
    from seqlab.train.config import RunConfig, read_run_file

    model_dir = resolve_model_dir(path)
    model = load(model_dir, device=device).eval()
    tokenizer = load_tokenizer(model_dir)
    run = None
    for cand in (Path(path) / "config.yaml", model_dir.parent.parent / "config.yaml"):
        if cand.is_file():
            run = RunConfig.from_dict(read_run_file(cand))
            break
    # Ids past the tokenizer's are an objective's own (the MLM mask id), never text; a model
    # of other inputs (a pointer network's points) has no text at all.
    if getattr(model, "reads_text", True) and tokenizer.vocab_size > model.cfg.vocab_size:
        raise CLIError(f"{model_dir}: the model has a vocabulary of {model.cfg.vocab_size} but its "
                       f"tokenizer has {tokenizer.vocab_size}; the tokenizer.json beside it is missing "
                       "or belongs to another model")
    if weights != "float":
        from seqlab.models.quantize import quantize_lm

        model = quantize_lm(model.float(), weights, activations)
    return model, tokenizer, run


def _cmd_eval(args: argparse.Namespace) -> int:
    from seqlab.tasks.corpus import DataConfig, load_corpus
    from seqlab.train.trainer import evaluate, resolve_device

    device = resolve_device(args.device, what="--device")
    model, tokenizer, run = load_for_cli(args.checkpoint, device=str(device))
    data_cfg = run.data if (run is not None and not args.data) else DataConfig(paths=tuple(args.data or ()))
    corpus = load_corpus(data_cfg, tokenizer=tokenizer)
    seq_len = args.seq_len or (run.train.seq_len if run else 256)
    objective = args.objective or (run.train.objective if run else "clm")
    if objective == "mlm" and model.vocab_size <= corpus.vocab_size:
        raise CLIError(f"--objective mlm needs a model trained with it: this one has no mask id "
                       f"past the data's {corpus.vocab_size} tokens")
    ev = evaluate(model, corpus, seq_len, args.tokens, args.batch_size, device,
                  objective=objective, mlm_probability=run.train.mlm_probability if run else 0.15)
    scored = {"clm": "", "mlm": " masked", "prefix": " after-prefix"}[objective]
    print(f"{ev['bpb']:.4f} bits per byte, loss {ev['loss']:.4f} nats/token (perplexity "
          f"{math.exp(ev['loss']):.2f}) over {ev['tokens']:,}{scored} tokens at seq_len {seq_len} "
          f"({objective}); {ev['tokens_per_s']:,.0f} tokens/s on {device}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from seqlab.files import read_texts
    from seqlab.models.embedder import EmbedConfig, Embedder
    from seqlab.train.trainer import resolve_device

    texts = read_texts(args.input, CLIError, args.field)
    if not texts:
        raise CLIError(f"{args.input} holds no text (blank lines are skipped)")
    device = resolve_device(args.device, what="--device")
    model, tokenizer, run = load_for_cli(args.model, device=str(device))
    # An MLM-trained encoder reads both ways; a decoder (or a pretrained LM) causally.
    mask = args.mask or ("bidirectional" if run is not None and run.train.objective == "mlm"
                         else "causal")
    cfg = EmbedConfig(pooling=args.pooling, mask=mask, max_tokens=args.max_tokens,
                      batch_size=args.batch_size)
    vectors = Embedder(model, tokenizer, cfg).embed(
        texts, kind="query" if args.query else "document", progress=not args.quiet)
    if args.output is None:
        for i, v in enumerate(vectors.tolist()):
            print(json.dumps({"index": i, "embedding": [round(x, 6) for x in v]}))
        return 0
    out = Path(args.output)
    if out.suffix != ".npy":
        raise CLIError(f"--output {out}: write a .npy file (numpy.load reads it), e.g. vectors.npy")
    np.save(out, vectors.numpy())
    print(f"{len(texts)} embeddings of dim {vectors.shape[1]} ({cfg.pooling} pooling, {mask} mask) "
          f"-> {out}", file=sys.stderr)
    return 0


def _int_list(text: str, flag: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise CLIError(f"{flag} {text!r} is not a comma-separated list of ints, e.g. 2,2,1") from None


def _strategy_fields() -> dict[str, tuple[Any, str]]:
    """Every strategy option: name -> (its annotation, help), from the strategies' Configs."""
    import dataclasses
    import typing

    from seqlab.decoding import STRATEGIES

    out: dict[str, tuple[Any, str]] = {}
    for spec in STRATEGIES.values():
        hints = typing.get_type_hints(spec.Config)
        for f in dataclasses.fields(spec.Config):
            out.setdefault(f.name, (hints[f.name], f.metadata.get("help", spec.name)))
    return out


def _add_strategy_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per strategy option, typed from its Config field (so none is repeated here)."""
    for name, (tp, help_) in _strategy_fields().items():
        flag = "--" + name.replace("_", "-")
        args = getattr(tp, "__args__", (tp,))  # X | None -> (X, NoneType)
        if bool in args:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_)
        elif any(getattr(a, "__origin__", None) is tuple for a in args):
            parser.add_argument(flag, help=help_)  # parsed in _cmd_generate: a clear exit 2
        else:
            kind = next(a for a in args if a in (int, float, str))
            parser.add_argument(flag, type=kind, help=help_)


def _strategy_options(args: argparse.Namespace) -> dict[str, Any]:
    """The strategy options given as flags (generate() names those of another strategy)."""
    options = {name: getattr(args, name) for name in _strategy_fields()
               if getattr(args, name) is not None}
    for name, (tp, _) in _strategy_fields().items():  # comma lists such as --branching 2,2,1
        if name in options and any(getattr(a, "__origin__", None) is tuple
                                   for a in getattr(tp, "__args__", (tp,))):
            options[name] = _int_list(options[name], "--" + name.replace("_", "-"))
    return options


def _check_utf8(text: str, flag: str) -> None:
    """Python hands argv bytes that are not UTF-8 over as lone surrogates; name them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raw = ord(text[e.start]) - 0xDC00 if 0xDC80 <= ord(text[e.start]) <= 0xDCFF else None
        byte = f"byte 0x{raw:02x}" if raw is not None else f"character {text[e.start]!r}"
        raise CLIError(f"{flag} is not UTF-8 text ({byte} at position {e.start}); give it in "
                       "UTF-8 (a terminal in another encoding, e.g. Latin-1, sends other bytes)") from None


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from seqlab.decoding import STRATEGIES, generate
    from seqlab.decoding.stream import TextStreamer
    from seqlab.train.trainer import resolve_device

    _check_utf8(args.prompt, "--prompt")
    device = resolve_device(args.device, what="--device")
    model, tokenizer, _ = load_for_cli(args.checkpoint, device=str(device), weights=args.weights,
                                       activations=args.activations)
    text = args.prompt
    if args.chat:
        template = getattr(tokenizer, "apply_chat_template", None)
        if template is None or getattr(tokenizer, "chat_template", None) is None:
            raise CLIError(f"{args.checkpoint} has no chat template; drop --chat")
        text = template([{"role": "user", "content": args.prompt}], add_generation_prompt=True)
    prompt = tokenizer.encode(text)
    eos_id, cached, shown = getattr(tokenizer, "eos_id", None), None, args.prompt
    if model.capabilities.source:
        # The prompt is a source (an encoder-decoder's), encoded once into the state; the
        # output is the target after the start id, not a continuation: nothing is echoed.
        [prompt], cached = model.source_prompts([prompt])
        eos_id, shown, cached = model.end_id, "", cached if any(cached) else None

    def decode(ids) -> bytes:   # a model's own ids past the tokenizer's (start, end) are not text
        return tokenizer.decode_bytes([i for i in ids if i < tokenizer.vocab_size])

    stream = TextStreamer(decode) if args.stream else None
    if stream:
        sys.stdout.write(shown)
        sys.stdout.flush()
    spec = STRATEGIES[args.strategy] if args.strategy in STRATEGIES else None
    options = _strategy_options(args)
    draft = None
    if args.draft and (Path(args.draft) / "drafter.json").is_file():   # seqlab train-draft's
        from seqlab.decoding.drafters import load as load_drafter

        draft = load_drafter(args.draft).to(device)
    elif args.draft:
        draft = load_for_cli(args.draft, device=str(device), weights=args.weights,
                             activations=args.activations)[0]
    elif spec is not None and spec.needs_draft:
        raise CLIError(f"--strategy {args.strategy} needs a draft model: add --draft RUN (a run "
                       "folder, checkpoint or pretrained source with the same vocabulary)")
    temperature = args.temperature
    if temperature is None and args.strategy == "sample":
        temperature = 0.8  # this command's default for sampling; other strategies stay greedy
    with torch.no_grad():
        out = generate(model, [prompt], strategy=args.strategy, max_new_tokens=args.max_new_tokens,
                       draft=draft, **options, eos_id=eos_id, cached=cached,
                       temperature=temperature, top_k=args.top_k, top_p=args.top_p,
                       min_p=args.min_p, seed=args.seed,
                       on_token=stream)
    if stream:
        stream.finish()
        print()
    else:
        print(shown + decode(out.tokens[0]).decode("utf-8", "replace"))
    if args.stats:
        s = out.stats
        extra = f", {s.mean_accepted:.2f} draft tokens accepted per call" if s.verify_calls else ""
        print(f"[{s.new_tokens} tokens in {s.wall_s:.2f} s, {s.tokens_per_s:.1f} tokens/s, "
              f"{s.target_calls} model calls{extra}, strategy {s.strategy}]", file=sys.stderr)
        # The strategy's own figures (beam scores, draft calls, ...), one per line.
        figures = s.summary()
        figures.update(figures.pop("options"))  # the strategy's options, one per line too
        for key, value in figures.items():
            if key not in ("new_tokens", "wall_s", "tokens_per_s", "strategy") and value not in (0, None):
                value = f"{value:.4g}" if isinstance(value, float) else value
                print(f"  {key}: {value}", file=sys.stderr)
    return 0


def _cmd_train_draft(args: argparse.Namespace) -> int:
    """Cache the target's hidden states once, then train a drafter on them (bounded time)."""
    import json

    from seqlab.decoding.drafters import TRAINED
    from seqlab.decoding.drafters.train import (DraftTrainConfig, cache_features, default_texts,
                                                read_texts, train_drafter)

    if args.kind not in TRAINED:   # before loading a target for nothing
        raise CLIError(f"--kind {args.kind!r} is not a drafter; choose one of "
                       f"{', '.join(sorted(TRAINED))}")
    options = {k: v for k, v in dict(
        kind=args.kind, steps=args.steps, time_limit=args.time_limit, batch=args.batch,
        lr=args.lr, depth=args.depth, window=args.window, width=args.width,
        draft_vocab=args.draft_vocab, seq_len=args.seq_len, cache_tokens=args.cache_tokens,
        seed=args.seed).items() if v is not None}
    cfg = DraftTrainConfig.from_dict(options)
    texts = read_texts(args.data) if args.data else default_texts("train")
    if not is_pretrained_source(args.target) and not Path(args.target).exists():
        raise CLIError(f"target {args.target!r} not found: give a run folder, a checkpoint folder, "
                       "a .gguf file, a Hugging Face folder or an alias (smollm2)")
    model, tokenizer, _ = load_for_cli(args.target, device="cpu")
    name = Path(args.target).name or args.target
    cache = cache_features(model, tokenizer, texts, cfg, name, folder=args.cache)
    del model
    drafter, report = train_drafter(cache, cfg)
    out = Path(args.out) if args.out else Path("drafters") / f"{name}-{args.kind}"
    drafter.save(out)
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    after = report["held_out_after"]
    print(f"{args.kind} drafter for {name}: {report['steps']} steps in {report['seconds']:.0f} s, "
          f"loss {report['train_loss_first']:.3f} -> {report['train_loss_last']:.3f}; held out: "
          f"{after['accepted_per_call']:.2f} tokens per call would be accepted (greedy), top-1 "
          f"by depth {', '.join(f'{x:.2f}' for x in after['top1'])}")
    strategy = "speculative" if TRAINED[args.kind].autoregressive else "speculative or tree"
    print(f"saved to {out}; use it as the draft of {strategy}: seqlab generate {args.target} "
          f"--strategy speculative --draft {out} --temperature 0 --prompt ...")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from seqlab.serve import Server, ServerConfig, create_app
    except ImportError as e:
        raise CLIError(f"seqlab serve needs the serve extra ({e.name} is missing): "
                       "python -m pip install 'seqlab[serve]'") from None
    from seqlab.decoding import STRATEGIES, check_request
    from seqlab.train.trainer import resolve_device

    if args.max_batch < 1:
        raise CLIError(f"--max-batch {args.max_batch}: expected an int >= 1")
    if args.sessions < 0:
        raise CLIError(f"--sessions {args.sessions}: expected an int >= 0")
    if args.batch_window_ms < 0:
        raise CLIError(f"--batch-window-ms {args.batch_window_ms}: expected a number >= 0")
    device = resolve_device(args.device, what="--device")
    model, tokenizer, _ = load_for_cli(args.checkpoint, device=str(device), weights=args.weights,
                                       activations=args.activations)
    draft = load_for_cli(args.draft, device=str(device), weights=args.weights,
                         activations=args.activations)[0] if args.draft else None
    options = _strategy_options(args)
    spec = STRATEGIES[args.strategy]
    if spec.needs_draft and draft is None:
        raise CLIError(f"--strategy {args.strategy} needs a draft model: add --draft RUN")
    # the defaults must make a valid request on their own (greedy when they sample optionally)
    check_request(model, [[0]], args.strategy, 1, draft=draft if spec.needs_draft else None,
                  **options)
    name = args.name or Path(args.checkpoint.rstrip("/")).name or "model"
    server = Server(model, tokenizer, ServerConfig(name, args.strategy, options, args.max_tokens),
                    draft=draft, max_rows=args.max_batch, window_s=args.batch_window_ms / 1000,
                    sessions=args.sessions)
    print(f"seqlab serve: {name} on http://{args.host}:{args.port}/v1 (strategy {args.strategy}, "
          f"batches of up to {args.max_batch} rows); Ctrl-C stops", file=sys.stderr)
    uvicorn.run(create_app(server), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from seqlab.models.kinds import describe_layers, kind_of

    model, tokenizer, run = load_for_cli(args.checkpoint)
    cfg = model.cfg
    print(f"checkpoint : {args.checkpoint}")
    print(f"family     : {kind_of(model)}" + (f", block size {cfg.block_size}"
                                              if hasattr(cfg, "block_size") else ""))
    print(f"parameters : {model.num_parameters():,} ({model.num_parameters(exclude_embeddings=True):,} "
          "without the embedding)")
    groups = cfg.layer_groups()
    shape = ", ".join(f"{'' if name == 'layers' else name + ' '}dim {dim}, {len(layers)} layers"
                      for name, (dim, layers) in groups.items())
    mlp = f", MLP width {cfg.mlp_width}" if hasattr(cfg, "mlp_width") else ""
    ids = ("bytes" if tokenizer.bpe is None else "BPE") if getattr(model, "reads_text", True) \
        else "input positions and the end"
    print(f"vocabulary : {cfg.vocab_size} ({ids}), {shape}{mlp}")
    print(f"layers     : {describe_layers(cfg)}")
    for name, (_, layers) in groups.items():
        runs: list[list] = []   # [spec, first, last]: "layers 0-29" rather than thirty lines
        for i, spec in enumerate(layers):
            if runs and runs[-1][0] == spec:
                runs[-1][2] = i
            else:
                runs.append([spec, i, i])
        prefix = "" if name == "layers" else f"{name} "
        for spec, first, last in runs:
            where = prefix + (f"layer {first}" if first == last else f"layers {first}-{last}")
            opts = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "defaults"
            print(f"  {where:<{12 if len(groups) == 1 else 19}} {spec.mixer:<16} {opts}")
    print("state bytes per sequence (float32):")
    for n in (1024, 4096, 16384, 65536):
        print(f"  L={n:>6}: {model.state_bytes(n):>14,}")
    if run is not None:   # a stream run's config (a paired run keeps pairs-config.yaml)
        print(f"trained    : {run.train.steps} steps planned, batch {run.train.batch_size} x "
              f"{run.train.seq_len}, data {list(run.data.paths) or 'the Python standard library'}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from seqlab.models.pretrained.export import export_hf

    model, tokenizer, _ = load_for_cli(args.checkpoint)
    out = export_hf(model, args.out, tokenizer=tokenizer)
    print(f"wrote a Hugging Face Llama checkpoint to {out} (load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


# -- demo and mixers --------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from seqlab.demo import run_demo

    return run_demo(quick=args.quick, out=args.out, device=args.device)


def _cmd_mixers(args: argparse.Namespace) -> int:
    import seqlab

    for name in seqlab.mixers.names():
        cls = seqlab.mixers.get(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in cls.Config().to_dict().items())
        print(f"{name:18s} {cls.cost}\n{'':18s} options: {opts}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab", description="Sequence models with two faces: "
                                "parallel for training, recurrent for inference.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a language model", description="Train a language "
                       "model from a config file (YAML or TOML, see configs/) and/or flags. Flags "
                       "override the file; --set overrides both.")
    t.add_argument("config", nargs="?", help="run config file (.yaml, .yml or .toml)")
    t.add_argument("--model", choices=_model_kinds(), help="model family (default lm; block: the "
                   "Block Transformer); --mixers and --dim set its (global) stack")
    t.add_argument("--mixers", help="layer pattern: layers joined by '+', options in parentheses, "
                   "'*N' repeats, e.g. mamba*2+attention(window=512)")
    t.add_argument("--layers", type=int, help="number of layers (the pattern repeats)")
    t.add_argument("--dim", type=int, help="model width")
    t.add_argument("--data", nargs="+", metavar="PATH", help="files, folders or globs (default: "
                   "the Python standard library's source)")
    t.add_argument("--tokenizer", choices=["bytes", "bpe"], help="bytes (default) or a BPE trained on the data")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--seq-len", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    t.add_argument("--precision", choices=["auto", "float32", "bfloat16"])
    t.add_argument("--compile", action="store_true", help="torch.compile the model")
    t.add_argument("--time-limit", type=float, help="stop (with a checkpoint) after this many seconds")
    t.add_argument("--objective", choices=["clm", "mlm", "prefix"],
                   help="clm: causal LM (default, a decoder); mlm: masked LM with a bidirectional "
                        "mask (an encoder); prefix: prefix LM. One recipe for all three; "
                        "--init a run of one objective to go on under another")
    t.add_argument("--out", help="run folder (default runs/default)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--init", help="start from a pretrained model (alias such as smollm2, .gguf file or "
                   "Hugging Face folder); its tokenizer tokenizes the data")
    t.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override any option, e.g. --set train.warmup=100 (repeatable)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=_cmd_train)

    tp = sub.add_parser("train-pairs", help="train on (source, target) pairs: an encoder-"
                        "decoder, or a decoder-only model with the loss on the target",
                        description="Train on the standard library's (function source, "
                        "docstring first line) pairs (seqlab.train.seq2seq), optionally "
                        "distilled from a teacher. Flags override the file; --set overrides both.")
    tp.add_argument("config", nargs="?", help="config file with sections model, train "
                    "(e.g. configs/encdec-small.yaml)")
    tp.add_argument("--model", choices=_model_kinds(), help="model family (default encdec)")
    tp.add_argument("--teacher", help="distil from this saved model (run or model folder)")
    tp.add_argument("--steps", type=int)
    tp.add_argument("--batch-size", type=int)
    tp.add_argument("--lr", type=float)
    tp.add_argument("--time-limit", type=float, help="stop (and save) after this many seconds")
    tp.add_argument("--out", help="run folder (default runs/pairs)")
    tp.add_argument("--resume", action="store_true", help="continue the run in --out")
    tp.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                    help="override any option, e.g. --set train.distill_weight=0.7")
    tp.add_argument("--quiet", action="store_true", help="no progress bar")
    tp.set_defaults(fn=_cmd_train_pairs)

    e = sub.add_parser("eval", help="bits per byte of a checkpoint on a corpus")
    e.add_argument("checkpoint", help="run folder, checkpoint folder, .gguf file, Hugging Face "
                   "folder or alias (smollm2)")
    e.add_argument("--data", nargs="+", metavar="PATH", help="text to evaluate on (default: the "
                   "run's own validation split)")
    e.add_argument("--seq-len", type=int)
    e.add_argument("--tokens", type=int, default=262144, help="validation tokens to score")
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--objective", choices=["clm", "mlm", "prefix"],
                   help="what to score (default: the run's training objective, else clm)")
    e.add_argument("--device", default="auto")
    e.set_defaults(fn=_cmd_eval)

    td = sub.add_parser("train-draft", help="train a drafter on a target's own hidden states "
                        "(for speculative decoding)", description="Run the target once over "
                        "text (default: the Python docs and standard-library code), cache its "
                        "hidden states and greedy choices, and train a small drafter on them in "
                        "bounded CPU time. Use it with --strategy speculative (or tree) --draft DIR.")
    td.add_argument("target", help="run folder, checkpoint folder, .gguf file, Hugging Face folder "
                    "or alias (smollm2)")
    td.add_argument("--kind", required=True, help="heads (Medusa), chimera or transfer (Hidden "
                    "Transfer)")
    td.add_argument("--data", help="a text file or folder to train on (default: the standard "
                    "library's docs and code, its held-out tenth left out)")
    td.add_argument("--steps", type=int, help="optimizer steps at most (default 3000)")
    td.add_argument("--time-limit", type=float, help="seconds of training at most (default 600)")
    td.add_argument("--out", help="where to save it (default drafters/TARGET-KIND)")
    td.add_argument("--cache", help="where to cache the target's features (default "
                    "~/.cache/seqlab/draft-features/KEY)")
    for flag, tp, what in (("--batch", int, "positions per step"), ("--lr", float, "learning rate"),
                           ("--depth", int, "tokens drafted per round"),
                           ("--window", int, "hidden states read (chimera, transfer)"),
                           ("--width", int, "inner width"),
                           ("--draft-vocab", int, "rows of the drafter's head"),
                           ("--seq-len", int, "tokens per cached sequence"),
                           ("--cache-tokens", int, "tokens of text run through the target"),
                           ("--seed", int, "seed")):
        td.add_argument(flag, type=tp, help=what)
    td.set_defaults(fn=_cmd_train_draft)

    g = sub.add_parser("generate", help="continue a prompt")
    g.add_argument("checkpoint", help="run folder, checkpoint folder, .gguf file, Hugging Face "
                   "folder or alias (smollm2)")
    g.add_argument("--prompt", required=True)
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    g.add_argument("--max-new-tokens", type=int, default=200)
    from seqlab.decoding import STRATEGIES

    g.add_argument("--strategy", default="sample", choices=sorted(STRATEGIES),
                   help="how tokens are chosen (default: sample)")
    g.add_argument("--draft", help="speculative, tree: the draft model (run folder, checkpoint or "
                   "pretrained source) or a drafter from seqlab train-draft")
    _add_strategy_flags(g)
    g.add_argument("--temperature", type=float, help="sample at this temperature (default 0.8 for "
                   "--strategy sample; the drafting strategies are greedy unless it is given)")
    g.add_argument("--top-k", type=int)
    g.add_argument("--top-p", type=float)
    g.add_argument("--min-p", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    g.add_argument("--stats", action="store_true", help="print speed and call counts")
    g.add_argument("--device", default="auto")
    g.add_argument("--weights", default="float", choices=["float", "q8", "q4"],
                   help="q8 / q4: linear layers in 8- or 4-bit blocks run by seqlab's CPU kernels "
                   "(a GGUF file's Q4_0/Q4_1/Q8_0 tensors as they are); CPU only")
    g.add_argument("--activations", default="int8", choices=["int8", "float"],
                   help="with --weights q8/q4: int8 rounds each 32-block of a layer's input to "
                   "8 bits (llama.cpp's scheme, fast); float keeps it exact (slow)")
    g.set_defaults(fn=_cmd_generate)

    x = sub.add_parser("export", help="write a checkpoint in another format (Hugging Face Llama)")
    x.add_argument("checkpoint", help="run folder, checkpoint folder or pretrained source")
    x.add_argument("--format", choices=["hf"], default="hf", help="hf: a transformers Llama folder")
    x.add_argument("out", help="folder to write")
    x.set_defaults(fn=_cmd_export)

    v = sub.add_parser("serve", help="an OpenAI-compatible HTTP server for a model",
                       description="Serve a model over HTTP with OpenAI's completions and chat "
                       "endpoints (streaming included); requests that arrive together decode as "
                       "one batch. Needs the serve extra: pip install 'seqlab[serve]'.")
    v.add_argument("checkpoint", help="run folder, checkpoint folder, .gguf file, Hugging Face "
                   "folder or alias (smollm2)")
    v.add_argument("--draft", help="the draft model for the speculative and tree strategies")
    v.add_argument("--name", help="the model id clients send (default: the checkpoint's name)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument("--strategy", default="sample", choices=sorted(STRATEGIES),
                   help="default strategy (a request's seqlab.strategy overrides it); sample at "
                   "temperature 0 is greedy")
    v.add_argument("--max-batch", type=int, default=32, help="rows per engine call at most")
    v.add_argument("--batch-window-ms", type=float, default=5.0,
                   help="how long a request waits for companions to batch with")
    v.add_argument("--sessions", type=int, default=64, help="decode states kept for clients "
                   "that name a session (least recently used evicted first)")
    v.add_argument("--max-tokens", type=int, default=512,
                   help="budget of a chat request that sets none")
    v.add_argument("--device", default="auto")
    v.add_argument("--weights", default="float", choices=["float", "q8", "q4"],
                   help="q8 / q4: linear layers in 8- or 4-bit blocks run by seqlab's CPU kernels "
                   "(a GGUF file's Q4_0/Q4_1/Q8_0 tensors as they are); CPU only")
    v.add_argument("--activations", default="int8", choices=["int8", "float"],
                   help="with --weights q8/q4: int8 rounds each 32-block of a layer's input to "
                   "8 bits (llama.cpp's scheme, fast); float keeps it exact (slow)")
    v.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info",
                                                           "debug"])
    _add_strategy_flags(v)
    v.set_defaults(fn=_cmd_serve)

    em = sub.add_parser("embed", help="one vector per text: an encoder (mean pooling) or a "
                        "decoder LM as a zero-shot embedder (prompt pooling)")
    em.add_argument("model", help="run folder, checkpoint folder or pretrained source (smollm2)")
    em.add_argument("--input", required=True, help="text file (one text per line) or .jsonl")
    em.add_argument("--field", default="text", help="the .jsonl field holding the text")
    em.add_argument("--output", help=".npy file to write (default: JSON lines on stdout)")
    em.add_argument("--pooling", default="mean", choices=["mean", "last", "prompt"],
                    help="mean of the tokens, the last token, or the last token of an "
                         "embedding prompt around the text (decoders)")
    em.add_argument("--mask", choices=["causal", "bidirectional"],
                    help="default: bidirectional for a model trained with --objective mlm, "
                         "else causal")
    em.add_argument("--query", action="store_true", help="the texts are queries (the prompt's "
                    "query task line)")
    em.add_argument("--max-tokens", type=int, default=256)
    em.add_argument("--batch-size", type=int, default=16)
    em.add_argument("--device", default="auto")
    em.add_argument("--quiet", action="store_true", help="no progress bar")
    em.set_defaults(fn=_cmd_embed)

    i = sub.add_parser("info", help="parameters, layer pattern and state size of a checkpoint")
    i.add_argument("checkpoint")
    i.set_defaults(fn=_cmd_info)

    d = sub.add_parser("demo", help="what seqlab is for, in about two minutes: two faces proven "
                       "equal, a recall race, decoding strategies side by side on SmolLM2")
    d.add_argument("--quick", action="store_true", help="a few steps of everything (for CI)")
    d.add_argument("--out", default=None, help="folder for the plot and figures (default "
                   "runs/demo-<time>)")
    d.add_argument("--device", default="auto")
    d.set_defaults(fn=_cmd_demo)

    m = sub.add_parser("mixers", help="list the registered mixers, their costs and options")
    m.set_defaults(fn=_cmd_mixers)

    from seqlab.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)  # seqlab bench run|report|probes; the logic lives in seqlab/bench/cli.py
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:   # Ctrl-C while starting up (importing torch, parsing)
        print("seqlab: interrupted", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from seqlab.decoding.engine import PromptError
    from seqlab.models.io import CheckpointError
    from seqlab.models.pretrained.export import ExportError
    from seqlab.state import StateError
    from seqlab.tasks.corpus import DataError
    from seqlab.train.signals import exit_code, raise_on_sigterm, restore_sigterm

    args = build_parser().parse_args(argv)
    old_sigterm = raise_on_sigterm()   # SIGTERM stops like Ctrl-C: a line, no traceback
    try:
        return args.fn(args)
    except (ConfigError, CheckpointError, DataError, PromptError, StateError, CLIError,
            ExportError) as e:
        print(f"seqlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:   # Ctrl-C (or SIGTERM) outside a training loop
        print(f"seqlab {args.command}: interrupted", file=sys.stderr)
        return exit_code(e)
    finally:
        restore_sigterm(old_sigterm)


if __name__ == "__main__":
    sys.exit(main())
