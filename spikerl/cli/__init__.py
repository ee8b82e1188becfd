"""The `spikerl` command. Subcommands live by what they act on: single runs (runs.py), many runs (studies.py).

Every user-fixable problem is raised as SpikerlError and printed here as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from spikerl.cli import runs, studies
from spikerl.errors import SpikerlError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikerl", description="Deep reinforcement learning with spiking neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    runs.add_commands(sub)
    studies.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options (`train CONFIG --seeds 0:8 total_steps=1000`)
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except SpikerlError as exc:
        print(f"spikerl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spikerl: interrupted; continue with `spikerl train --resume RUN_DIR` from the last checkpoint",
              file=sys.stderr)
        return 130

