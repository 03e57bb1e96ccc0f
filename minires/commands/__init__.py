"""The `minires` subcommands, one module each (train, degradation, gradients), and what they share.

Each module defines `add_arguments(parser)` and `run(args) -> exit code` (see minires/cli.py,
which imports them lazily). What they share lives in minires/commands/common.py: the argparse
types, the output folder's lock and checks, and turning OSError and Ctrl-C into one line.
"""
