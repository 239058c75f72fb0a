"""The ``seqlab`` command line. Thin: parses arguments, calls the package, prints."""

from __future__ import annotations

import argparse
import sys

from seqlab.config import ConfigError


def _cmd_mixers(args: argparse.Namespace) -> int:
    import seqlab

    for name in seqlab.mixers.names():
        cls = seqlab.mixers.get(name)
        opts = ", ".join(f"{k}={v!r}" for k, v in cls.Config().to_dict().items())
        print(f"{name:18s} {cls.cost}\n{'':18s} options: {opts}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from seqlab.demo import run_demo

    return run_demo(dim=args.dim, length=args.length)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqlab", description="Sequence models with two faces: "
                                "parallel for training, recurrent for inference.")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="show every mixer's two faces agreeing on real text",
                       description="Build a small hybrid byte LM from every registered mixer, run "
                       "a real Python source file through its parallel face and its recurrent "
                       "face, and report agreement, speed and state size.")
    d.add_argument("--dim", type=int, default=64, help="model width (default 64)")
    d.add_argument("--length", type=int, default=256, help="bytes of text to run (default 256)")
    d.set_defaults(fn=_cmd_demo)
    m = sub.add_parser("mixers", help="list the registered mixers, their costs and options")
    m.set_defaults(fn=_cmd_mixers)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"seqlab: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
