"""``seccam cameras``: try each configured camera once and report."""

HELP = "try each configured camera once and report (nothing is recorded or sent)"


def add_arguments(parser):
    parser.add_argument("--keep", metavar="DIR", help="keep the test images in DIR instead of deleting them")


def run(args, config):
    import shutil
    import tempfile
    from pathlib import Path

    from ..camera import capture_all

    if not config.cameras:
        print("no [[camera]] configured")
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
