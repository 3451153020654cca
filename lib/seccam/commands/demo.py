"""``seccam demo``: one full cycle on simulated hardware, delivered into a local Maildir (seccam.demo)."""

HELP = "run one full cycle on mock sensors and test cameras, delivered into a local Maildir (no network)"
NEEDS_CONFIG = False


def add_arguments(parser):
    parser.add_argument("--dir", metavar="DIR",
                        help="where to write the demo's spool, Maildir and decrypted images (default: "
                             "/var/lib/seccam/demo when installed and writable, else a new /tmp/seccam-demo-*)")


def run(args, config):
    from .. import demo

    demo.run(args.dir)
    return 0
