"""``seccam``: the command a person types. Each subcommand lives in
``seccam/commands/NAME.py`` and is found there; this module only dispatches.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args, config)``. Optional:

* ``NEEDS_CONFIG = False`` lets it run without a configuration file; a
  function ``needs_config(args)`` instead decides per command line.
* ``open_files(args, config, files)`` opens the files named on the command
  line (``files`` is a :class:`seccam.privilege.CommandFiles`) *before* the
  command switches from root to the spool's owner, so that a file in the
  invoking person's home can be read, and one written for them is theirs.
* ``USES_GPG = True``: a gpg-agent that the command started is stopped when
  it ends (seccam.gpg.watch_agents); one that was already running (the
  service's) is left alone. No process outlives a command.

Command modules import their heavy dependencies inside ``run`` so that
``seccam trigger`` starts as fast as Python can.
"""

import argparse
import importlib
import os
import shlex
import sys

from . import __version__, privilege, runtime

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


def _needs_config(module, args):
    if hasattr(module, "needs_config"):
        return module.needs_config(args)
    return getattr(module, "NEEDS_CONFIG", True)


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    runtime.setup_logging(f"{PROG} {args.command}", args.verbose)
    module = args.module
    command_line = shlex.join([PROG, *(sys.argv[1:] if argv is None else argv)])
    config = None
    if _needs_config(module, args):
        from . import config as _config
        privilege.check_config_readable(_config.resolve_path(args.config), command_line)
        config = _config.load(args.config)
        privilege.check_access(config, command_line)
    files = privilege.CommandFiles()
    if hasattr(module, "open_files"):
        module.open_files(args, config, files)

    def work():
        if not getattr(module, "USES_GPG", False):
            return module.run(args, config)
        from . import gpg
        gpg.watch_agents()
        try:
            return module.run(args, config)
        finally:
            gpg.stop_watched_agents()

    return privilege.run_as_spool_owner(config, work, files)


def main(argv=None):
    return runtime.run(PROG, _main, argv)
