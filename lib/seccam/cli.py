"""``seccam``: the command a person types. Each subcommand lives in
``seccam/commands/NAME.py`` and is found there; this module only dispatches.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args, config)``; ``NEEDS_CONFIG = False`` lets it run without a
configuration file. Command modules import their heavy dependencies inside
``run`` so that ``seccam trigger`` starts as fast as Python can.
"""

import argparse
import importlib
import os

from . import __version__, runtime

PROG = "seccam"


def _command_names():
    here = os.path.join(os.path.dirname(__file__), "commands")
    return sorted(name[:-3] for name in os.listdir(here)
                  if name.endswith(".py") and not name.startswith("_"))


def build_parser():
    parser = argparse.ArgumentParser(prog=PROG, description="seccam: the end-to-end encrypted security camera.")
    parser.add_argument("--version", action="version", version=f"seccam {__version__}")
    runtime.add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _command_names():
        module = importlib.import_module(f"seccam.commands.{name}")
        cmd = sub.add_parser(name.replace("_", "-"), help=module.HELP, description=module.HELP)
        runtime.add_common_arguments(cmd, subcommand=True)
        module.add_arguments(cmd)
        cmd.set_defaults(module=module)
    return parser


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    runtime.setup_logging(f"{PROG} {args.command}", args.verbose)
    config = None
    if getattr(args.module, "NEEDS_CONFIG", True):
        from . import config as _config
        config = _config.load(args.config)
        runtime.become_spool_owner(config)
    return args.module.run(args, config)


def main(argv=None):
    return runtime.run(PROG, _main, argv)
