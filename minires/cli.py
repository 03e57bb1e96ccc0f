"""The `minires` command (also `python -m minires`): one subcommand per entry of SUBCOMMANDS.

    minires train --data synthetic --epochs 2 --out runs/demo
    minires train --help

Each subcommand lives in its own module, which defines the same two functions:

    add_arguments(parser)   add the subcommand's options to its argparse parser
    run(args) -> int        do the work, return the exit code; raise SystemExit("message") for a
                            user error (a bad option value, missing data), so no traceback shows

The command modules sit together in minires/commands/ (train, degradation, gradients; the
classroom's `assignment` command is minires/assignments/cli.py, beside the code it drives).
Adding a subcommand is one line in SUBCOMMANDS below, for example
    Command("report", "minires.commands.report", "write a report"),
Modules are imported lazily: `minires --help` imports none of them, `minires train ...` imports
only minires.commands.train (and what it uses).
"""
import argparse
import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    """A subcommand: its name, the module that implements it (with `add_arguments(parser)` and
    `run(args)`), the one-line help shown by `minires --help`, and whether it trains networks
    (then it owns its process: see `set_up_process_for_training`)."""
    name: str
    module: str
    help: str
    trains: bool = False


SUBCOMMANDS = (
    Command("gradients", "minires.commands.gradients",
            "plain vs residual gradient norms per layer and the +1 split, at initialisation"),
    Command("train", "minires.commands.train",
            "train a network on CIFAR-10 or synthetic data (the paper's recipe by default)",
            trains=True),
    Command("degradation", "minires.commands.degradation",
            "Figure 6: plain vs residual nets trained at each depth (resumable)", trains=True),
    Command("assignment", "minires.assignments.cli",
            "classroom assignments: list them, make a student workspace, grade one"),
)


def main(argv=None):
    """Parse `argv` (default: sys.argv[1:]), run the chosen subcommand, return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((c for c in SUBCOMMANDS if argv and argv[0] == c.name), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)
    if chosen is None:  # `minires` alone: list the commands
        parser.print_help()
        return 2
    if chosen.trains:
        set_up_process_for_training()
    return importlib.import_module(chosen.module).run(args)


def set_up_process_for_training():
    """What a training command sets for its whole process, which is its own: glibc keeps freed
    memory for the next step instead of giving it back and faulting it in anew
    (minires/_process.py says how, and what it measured). A library call never does this."""
    from ._process import keep_freed_memory

    keep_freed_memory()


def build_parser(chosen=None):
    """The parser with every subcommand listed; only `chosen` gets its options (and its import)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="minires", description="minires: residual networks from scratch, for teaching.")
    parser.add_argument("--version", action="version", version=f"minires {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for command in SUBCOMMANDS:
        sub = subparsers.add_parser(command.name, help=command.help, description=command.help)
        if command is chosen:
            importlib.import_module(command.module).add_arguments(sub)
    return parser
