"""``seccam cameras``: try each configured camera once and report; with ``--detect``, list
the cameras that are attached and print ``[[camera]]`` blocks for them.

``--detect`` is for setting up, before a configuration exists, so it needs
no configuration file; trying the configured cameras does (a missing or
invalid file is the usual ConfigError, exit 78).

The cameras are tried as the service user (under sudo too), so a camera the
service cannot open fails here as well, with the reason. ``--keep DIR``
keeps the pictures in DIR (created if missing), named
``CAMERA-YYYYMMDD-HHMMSS[.preview].jpg``; they belong to the person who ran
the command (seccam.privilege).
"""

import time

HELP = "try each configured camera once and report (nothing is recorded or sent); --detect: find cameras"


def needs_config(args):
    return not args.detect


def add_arguments(parser):
    parser.add_argument("--keep", metavar="DIR", help="keep the test images in DIR instead of deleting them")
    parser.add_argument("--detect", action="store_true",
                        help="list camera modules and USB cameras that are attached and print ready-to-paste "
                             "[[camera]] blocks (needs no configuration)")


def open_files(args, config, files):
    """With --keep: DIR and one new file per picture, made with the invoking user's rights."""
    if not args.keep or config is None:
        return
    outdir = files.make_dir(args.keep)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.keep_files = {}
    for cam in config.cameras:
        args.keep_files[cam.name] = tuple(
            (f"{outdir}/{cam.name}-{stamp}{kind}.jpg", files.create(f"{outdir}/{cam.name}-{stamp}{kind}.jpg", 0o644))
            for kind in ("", ".preview"))


def run(args, config):
    if args.detect:
        return _detect()
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


def _keep(files, full, preview):
    """Copy the pictures into the files opened for --keep; return the kept full picture's name."""
    import shutil
    (full_name, full_out), (_, preview_out) = files
    for src, out in ((full, full_out), (preview, preview_out)):
        with out, open(src, "rb") as fh:
            shutil.copyfileobj(fh, out)
    return full_name


def _try(args, config):
    import shutil
    import tempfile
    from pathlib import Path

    from ..camera import capture_all

    if not config.cameras:
        print("no [[camera]] configured (seccam cameras --detect prints blocks for the cameras attached)")
        return 78
    # The pictures are taken into a private directory of the service user; --keep copies them
    # into the files opened for the person before the switch (a picture that failed leaves its
    # file empty, and seccam.privilege removes it).
    outdir = Path(tempfile.mkdtemp(prefix="seccam-cameras-"))
    try:
        results = capture_all(config.cameras, outdir)
        for cam, r in zip(config.cameras, results):
            what = cam.device if cam.backend == "fswebcam" else f"camera module {cam.index}"
            if r.ok:
                kept = f"  -> {_keep(args.keep_files[cam.name], r.full, r.preview)}" if args.keep else ""
                print(f"{r.camera:12} ok      {r.seconds:5.2f}s  {what}  "
                      f"{r.full.stat().st_size} B full, {r.preview.stat().st_size} B preview{kept}")
            else:
                print(f"{r.camera:12} FAILED  {r.seconds:5.2f}s  {what}  {r.error}")
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 69
