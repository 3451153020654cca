"""``seccam cameras``: try each configured camera once and report; with ``--detect``, list
the cameras that are attached and print ``[[camera]]`` blocks for them.

``--detect`` is for setting up, before a configuration exists, so this module
loads the configuration itself (``NEEDS_CONFIG = False``) and only when it
tries the configured cameras; a missing or invalid file is then the usual
ConfigError (exit 78).
"""

HELP = "try each configured camera once and report (nothing is recorded or sent); --detect: find cameras"
NEEDS_CONFIG = False


def add_arguments(parser):
    parser.add_argument("--keep", metavar="DIR", help="keep the test images in DIR instead of deleting them")
    parser.add_argument("--detect", action="store_true",
                        help="list camera modules and USB cameras that are attached and print ready-to-paste "
                             "[[camera]] blocks (needs no configuration)")


def run(args, config):
    if args.detect:
        return _detect()
    if config is None:
        from .. import config as _config

        config = _config.load(args.config)
    return _try(args, config)


def _detect():
    import sys

    from .. import discover
    from ..errors import PermanentError

    found = discover.detect()
    for note in found.notes:
        print(f"seccam cameras: note: {note}", file=sys.stderr)
    if not found.cameras and found.denied:
        raise PermanentError("no cameras found, but the camera devices could not be opened (see the note "
                             "above): run it as root or as a member of group video")
    if not found.cameras:
        raise PermanentError("no cameras found: no camera module in `rpicam-still --list-cameras` and no USB "
                             "video capture device (check the ribbon cable or the USB plug; see docs/setup.md)")
    sys.stdout.write(discover.render(found))
    return 0


def _try(args, config):
    import shutil
    import tempfile
    from pathlib import Path

    from ..camera import capture_all

    if not config.cameras:
        print("no [[camera]] configured (seccam cameras --detect prints blocks for the cameras attached)")
        return 78
    outdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="seccam-cameras-"))
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        results = capture_all(config.cameras, outdir)
        for cam, r in zip(config.cameras, results):
            what = cam.device if cam.backend == "fswebcam" else f"camera module {cam.index}"
            if r.ok:
                print(f"{r.camera:12} ok      {r.seconds:5.2f}s  {what}  "
                      f"{r.full.stat().st_size} B full, {r.preview.stat().st_size} B preview"
                      + (f"  -> {r.full}" if args.keep else ""))
            else:
                print(f"{r.camera:12} FAILED  {r.seconds:5.2f}s  {what}  {r.error}")
    finally:
        if not args.keep:
            shutil.rmtree(outdir, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 69
