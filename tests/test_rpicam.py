"""The rpicam backend (camera modules through rpicam-still), on the stand-in tests/standins/rpicam-still.

rpicam-still cannot run here (see the stand-in's header); everything else is
real: fswebcam scales the preview and plays the USB webcam (its test source).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from seccam import camera, config

STANDINS = Path(__file__).resolve().parent / "standins"
STANDIN = STANDINS / "rpicam-still"
BASE = 'spool_dir = "/tmp/s"\nstate_dir = "/tmp/t"\n'
MODULE = '[[camera]]\nname = "night"\nindex = 0\nresolution = "640x480"\npreview_resolution = "160x120"\n' \
         'warmup_ms = 100\n'
WEBCAM = '[[camera]]\nname = "day"\ndevice = "test"\nresolution = "320x240"\n'


def cams(text):
    return config.parse(BASE + text).cameras


def jpeg_size(path):
    """(width, height) from the JPEG's SOF0 segment."""
    data = Path(path).read_bytes()
    sof = data.index(b"\xff\xc0")
    return int.from_bytes(data[sof + 7:sof + 9], "big"), int.from_bytes(data[sof + 5:sof + 7], "big")


@pytest.fixture
def standin(monkeypatch, tmp_path):
    """rpicam-still is the stand-in; returns a function giving the argument vectors it was called with."""
    monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("RPICAM_STANDIN_MODE", raising=False)
    log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("RPICAM_STANDIN_ARGV", str(log))

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return calls


def test_rpicam_command_line_is_exactly_as_documented(monkeypatch):
    monkeypatch.setattr(camera, "_utc_offset", lambda: "+01:00")
    [cam] = cams('[[camera]]\nname = "yard"\nindex = 1\nresolution = "1640x1232"\nquality = 90\nwarmup_ms = 600\n')
    assert camera.rpicam_command(cam, Path("/spool/tmp/x.set/yard.jpg"), Path("/spool/tmp/x.set/yard.preview.jpg")) \
        == ["rpicam-still", "--nopreview", "--camera", "1", "--timeout", "600", "--width", "1640",
            "--height", "1232", "--quality", "90", "--encoding", "jpg", "--thumb", "none",
            "--autofocus-mode", "continuous", "--exif", "IFD0.ImageDescription=yard",
            "--exif", "EXIF.OffsetTimeOriginal=+01:00", "--output", "yard.jpg"]


def test_default_warmup_is_750_ms():
    [cam] = cams('[[camera]]\nname = "m"\nindex = 0\n')
    cmd = camera.rpicam_command(cam, Path("m.jpg"), Path("m.preview.jpg"))
    assert (cam.backend, cmd[cmd.index("--timeout") + 1]) == ("rpicam", "750")


def test_camera_module_and_usb_webcam_capture_in_parallel(tmp_path, standin):
    started = time.monotonic()
    night, day = camera.capture_all(cams(MODULE + WEBCAM), tmp_path)
    assert (night.ok, day.ok) == (True, True), (night.error, day.error)
    assert time.monotonic() - started < 10
    assert jpeg_size(night.full) == (640, 480) and jpeg_size(night.preview) == (160, 120)
    assert camera.validate_jpeg(night.full) is None and camera.validate_jpeg(night.preview) is None
    assert jpeg_size(day.full) == (320, 240)
    assert night.as_meta()["preview"] == "night.preview.jpg"
    # The stand-in accepted the command line, and it was exactly rpicam_command's.
    [argv] = standin()
    assert ["rpicam-still", *argv] == camera.rpicam_command(cams(MODULE)[0], night.full, night.preview)


def test_no_camera_module_fails_with_rpicam_stills_message(tmp_path, standin, monkeypatch):
    monkeypatch.setenv("RPICAM_STANDIN_MODE", "nocamera")
    night, day = camera.capture_all(cams(MODULE + WEBCAM), tmp_path)
    assert (night.ok, night.error) == (False, "rpicam-still: no cameras available (exit 255)")
    assert night.as_meta()["error"] == night.error
    assert day.ok
    assert not (tmp_path / "night.jpg").exists() and not (tmp_path / "night.preview.jpg").exists()


def test_missing_camera_index_is_reported(tmp_path, standin):
    [r] = camera.capture_all(cams(MODULE.replace("index = 0", "index = 1")), tmp_path)
    assert (r.ok, r.error) == (False, "rpicam-still: selected camera is not available (exit 255)")


def test_hanging_rpicam_times_out_while_the_webcam_succeeds(tmp_path, standin, monkeypatch):
    monkeypatch.setenv("RPICAM_STANDIN_MODE", "hang")
    started = time.monotonic()
    night, day = camera.capture_all(cams(MODULE + "timeout_s = 1.5\n" + WEBCAM), tmp_path)
    elapsed = time.monotonic() - started
    assert (night.ok, night.error) == (False, "timed out after 1.5 s")
    assert day.ok
    assert 1.4 < elapsed < 6


def test_broken_output_is_a_failure_even_with_exit_0(tmp_path, standin, monkeypatch):
    monkeypatch.setenv("RPICAM_STANDIN_MODE", "badoutput")
    [r] = camera.capture_all(cams(MODULE), tmp_path)
    assert (r.ok, r.error) == (False, "truncated JPEG (no end marker)")
    assert not (tmp_path / "night.jpg").exists()


def test_stale_image_never_passes_for_rpicam(tmp_path, standin, monkeypatch):
    (tmp_path / "night.jpg").write_bytes(b"\xff\xd8\xff" + b"old" + b"\xff\xd9")
    monkeypatch.setenv("RPICAM_STANDIN_MODE", "nocamera")
    [r] = camera.capture_all(cams(MODULE), tmp_path)
    assert not r.ok and not (tmp_path / "night.jpg").exists()


def test_long_output_directory_works(tmp_path, standin):
    """rpicam-still copies --output into a 128-byte buffer; seccam passes a bare name and sets the cwd."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert len(str(deep / "night.jpg")) > 128
    [r] = camera.capture_all(cams(MODULE), deep)
    assert r.ok, r.error
    assert r.full == deep / "night.jpg"


def test_rpicam_still_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    [r] = camera.capture_all(cams(MODULE), tmp_path)
    assert (r.ok, r.error) == (False, "rpicam-still not installed")


@pytest.mark.parametrize("args, message", [
    (["--foo"], "ERROR: *** unrecognised option '--foo' ***"),
    (["--immediate"], "ERROR: *** unrecognised option '--immediate' ***"),  # real, but seccam never passes it
    (["--nopreview", "--output"], "ERROR: *** the required argument for option '--output' is missing ***"),
    (["--width", "wide"], "ERROR: *** the argument ('wide') for option '--width' is invalid ***"),
])
def test_standin_rejects_other_options_like_rpicam_still(args, message, tmp_path):
    res = subprocess.run([str(STANDIN), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "RPICAM_STANDIN_MODE": "ok"})
    assert (res.returncode, res.stderr.strip().splitlines()[-1]) == (255, message)
    assert not list(tmp_path.iterdir())


def test_standin_accepts_seccams_command_line(tmp_path):
    [cam] = cams(MODULE)
    cmd = camera.rpicam_command(cam, tmp_path / "night.jpg", tmp_path / "night.preview.jpg")
    res = subprocess.run([str(STANDIN), *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "RPICAM_STANDIN_MODE": "ok"})
    assert res.returncode == 0, res.stderr
    assert jpeg_size(tmp_path / "night.jpg") == (640, 480)


def test_seccam_cameras_reports_each_backend_by_name(short_tmp, run):
    from conftest import write_config

    cfg = write_config(short_tmp, cameras=MODULE + WEBCAM)
    env = {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}", "RPICAM_STANDIN_MODE": "nocamera"}
    res = run("bin/seccam", "cameras", config=cfg, env=env)
    assert res.returncode == 69, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["night", "FAILED"]
    assert lines[0].endswith("camera module 0  rpicam-still: no cameras available (exit 255)")
    assert lines[1].split()[:2] == ["day", "ok"]
    res = run("bin/seccam", "cameras", config=cfg, env={**env, "RPICAM_STANDIN_MODE": "ok"})
    assert res.returncode == 0 and [ln.split()[1] for ln in res.stdout.splitlines()] == ["ok", "ok"]


def test_camera_that_finished_in_time_is_not_timed_out_by_a_slower_one(tmp_path, standin):
    """Results are collected in config order; a capture that ended before its deadline counts as done
    even when an earlier, hanging camera kept capture_all waiting past that deadline."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    hang = f'[[camera]]\nname = "hang"\ndevice = "raw:{fifo}"\npalette = "RGB24"\nresolution = "320x240"\n' \
           'timeout_s = 2.5\n'
    hang_result, night = camera.capture_all(cams(hang + MODULE + "timeout_s = 1\n"), tmp_path)
    assert hang_result.error == "timed out after 2.5 s"
    assert night.ok, night.error


def test_preview_scaling_failure_is_reported(tmp_path):
    [cam] = cams(MODULE)
    full = tmp_path / "night.jpg"
    full.write_text("not an image")
    problem = camera._scale_preview(cam, full, tmp_path / "night.preview.jpg", 10)
    assert problem.startswith("no image written")


@pytest.mark.parametrize("stderr, expected", [
    (b"[0:01.2] [42]  INFO Camera camera_manager.cpp:325 libcamera v0.3.0\nERROR: *** no cameras available ***\n",
     "no cameras available"),
    (b"[0:01.2] [42]  INFO Camera x\n[0:02.0] [42] ERROR V4L2 v4l2_videodevice.cpp:2049 Dequeue timer expired\n",
     "[0:02.0] [42] ERROR V4L2 v4l2_videodevice.cpp:2049 Dequeue timer expired"),
    (b"[0:01.2] [42]  INFO Camera x\nStill capture image received\n", None),
])
def test_rpicam_reason_prefers_the_tools_error(stderr, expected):
    assert camera._rpicam_reason(stderr) == expected


def test_an_rpicam_capture_into_a_missing_directory_fails_to_start_and_the_others_go_on(tmp_path, standin):
    night, day = camera.capture_all(cams(MODULE + WEBCAM), tmp_path / "no" / "dir")
    assert (night.ok, night.error) == (False, "cannot start capture: No such file or directory")
    assert not day.ok and "no image written" in day.error
    assert night.as_meta()["error"] == night.error


def test_preview_scaling_without_fswebcam_is_reported(tmp_path, monkeypatch):
    [cam] = cams(MODULE)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert camera._scale_preview(cam, tmp_path / "night.jpg", tmp_path / "night.preview.jpg", 10) \
        == "fswebcam not installed"


def test_preview_scaling_that_hangs_times_out(tmp_path):
    [cam] = cams(MODULE)
    fifo = tmp_path / "night.jpg"
    os.mkfifo(fifo)  # fswebcam's file: source waits for a writer that never comes
    assert camera._scale_preview(cam, fifo, tmp_path / "night.preview.jpg", 0.5) == "scaling timed out after 0.5 s"
    assert not (tmp_path / "night.preview.jpg").exists()


# -- the whole scene, focus, ZSL, evidence (issue 12) ------------------------------------------

PI4 = Path(__file__).resolve().parent / "fixtures" / "pi4"


def test_a_module_without_resolution_gets_its_whole_field_of_view_from_sysfs(monkeypatch):
    """1280x720 (the old default) makes rpicam-still pick a cropped mode; the 2x2-binned size does not."""
    monkeypatch.setattr(camera, "SYSFS_V4L", str(PI4 / "sys" / "class" / "video4linux"))
    [cam] = cams('[[camera]]\nname = "m"\nindex = 0\n')
    assert cam.resolution is None and cam.preview_resolution is None
    cmd = camera.rpicam_command(cam, Path("m.jpg"), Path("m.preview.jpg"))
    assert cmd[cmd.index("--width") + 1:cmd.index("--width") + 4] == ["1640", "--height", "1232"]  # imx219 / 2


def test_module_size_knows_the_sensors_and_gives_up_when_it_cannot_tell(tmp_path):
    def tree(*names):
        root = tmp_path / str(len(list(tmp_path.iterdir())))
        for i, name in enumerate(names):
            (root / f"v4l-subdev{i}").mkdir(parents=True)
            (root / f"v4l-subdev{i}" / "name").write_text(name + "\n")
        (root / "video0").mkdir(parents=True)  # not a sub-device
        return root

    assert camera.module_size(0, tree("imx708 10-001a")) == (2304, 1296)  # Camera Module 3: 16:9, whole width
    assert camera.module_size(1, tree("imx477 10-001a", "imx477 11-001a")) == (2028, 1520)  # two HQ cameras
    assert camera.module_size(0, tree("imx219 10-0010", "imx708 11-001a")) is None  # which is index 0?
    assert camera.module_size(0, tree("ov7251 10-0060")) is None  # unknown sensor
    assert camera.module_size(0, tmp_path / "missing") is None
    assert camera.module_size(0, tree("")) is None  # an empty name


def test_without_a_known_size_rpicam_still_takes_the_full_sensor_and_the_preview_keeps_its_aspect(
        tmp_path, standin, monkeypatch):
    monkeypatch.setattr(camera, "SYSFS_V4L", str(tmp_path / "no-sysfs"))
    [night] = camera.capture_all(cams('[[camera]]\nname = "night"\nindex = 0\nwarmup_ms = 10\n'), tmp_path)
    assert night.ok, night.error
    [argv] = standin()
    assert "--width" not in argv and "--height" not in argv
    assert jpeg_size(night.full) == (3280, 2464)  # the stand-in's sensor, as libcamera's default still size
    assert jpeg_size(night.preview) == (320, 240)


@pytest.mark.parametrize("text, message", [
    ('resolution = "1641x1232"', "camera[0].resolution: a camera module needs an even width and height"),
    ('resolution = "1640x1231"', "camera[0].resolution: a camera module needs an even width and height"),
    ('focus = "sharp"', 'camera[0].focus: expected "continuous", "hyperfocal" or a distance in dioptres'),
    ("focus = 40", "camera[0].focus: must be at most 32"),
    ("stamp = 1", "camera[0].stamp: expected true or false"),
    ('title = "' + "x" * 65 + '"', "camera[0].title: expected at most 64 printable characters"),
])
def test_odd_sizes_and_bad_settings_are_refused_at_config_time_in_one_line(text, message):
    with pytest.raises(config.ConfigError) as exc:
        cams(f'[[camera]]\nname = "night"\nindex = 0\n{text}\n')
    assert message in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith("seccam.toml:")


def test_a_webcam_may_have_an_odd_size_but_no_focus():
    [cam] = cams('[[camera]]\nname = "day"\ndevice = "test"\nresolution = "641x481"\n')
    assert cam.resolution == (641, 481)
    with pytest.raises(config.ConfigError, match=r"camera\[0\]\.focus: only camera modules"):
        cams('[[camera]]\nname = "day"\ndevice = "test"\nfocus = "continuous"\n')


@pytest.mark.parametrize("focus, expected", [
    (None, ["--autofocus-mode", "continuous"]),
    ('"hyperfocal"', ["--lens-position", "default"]),
    ("0.5", ["--lens-position", "0.5"]),
    ("0", ["--lens-position", "0"]),
])
def test_focus_settles_within_the_warmup_or_is_fixed(focus, expected):
    [cam] = cams('[[camera]]\nname = "m"\nindex = 0\nresolution = "2304x1296"\n'
                 + (f"focus = {focus}\n" if focus else ""))
    cmd = camera.rpicam_command(cam, Path("m.jpg"), Path("m.preview.jpg"))
    i = cmd.index(expected[0])
    assert cmd[i:i + 2] == expected
    assert "--autofocus-on-capture" not in cmd  # that would scan after the warm-up, adding to it


def test_zsl_only_on_a_pi_5(tmp_path, monkeypatch):
    [cam] = cams(MODULE)
    for model, compatible, zsl in (("pi5", b"raspberrypi,5-model-b\0brcm,bcm2712\0", True),
                                   ("pi4", b"raspberrypi,4-model-b\0brcm,bcm2711\0", False)):
        tree = tmp_path / model
        tree.mkdir()
        (tree / "compatible").write_bytes(compatible)
        monkeypatch.setattr(camera, "DEVICE_TREE", str(tree))
        assert ("--zsl" in camera.rpicam_command(cam, Path("n.jpg"), Path("n.p.jpg"))) is zsl
    monkeypatch.setattr(camera, "DEVICE_TREE", str(tmp_path / "none"))
    assert not camera.is_pi5()


def test_the_standin_accepts_the_pi5_command_line_with_every_option(tmp_path, monkeypatch):
    tree = tmp_path / "dt"
    tree.mkdir()
    (tree / "compatible").write_bytes(b"brcm,bcm2712\0")
    monkeypatch.setattr(camera, "DEVICE_TREE", str(tree))
    [cam] = cams(MODULE.replace("warmup_ms = 100", 'warmup_ms = 100\nfocus = 1.5\ntitle = "Back 100%"'))
    cmd = camera.rpicam_command(cam, tmp_path / "night.jpg", tmp_path / "night.preview.jpg")
    assert "--zsl" in cmd and "IFD0.ImageDescription=Back 100%" in cmd
    res = subprocess.run([str(STANDIN), *cmd[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=30,
                         env={**os.environ, "RPICAM_STANDIN_MODE": "ok"})
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, message", [
    (["--thumb", "small"], "bad thumbnail parameters small"),
    (["--lens-position", "near"], "Invalid lens position: near"),
    (["--autofocus-mode", "fast"], "Invalid AfMode:fast"),
    (["--width", "641", "--height", "480", "--output", "x.jpg"], "both width and height must be even"),
    (["--exif", "ImageDescription", "--output", "x.jpg"], "failed to read EXIF IFD and tag"),
    (["--exif", "IFD9.Artist=me", "--output", "x.jpg"], "bad IFD name IFD9"),
])
def test_standin_checks_option_values_like_rpicam_still(args, message, tmp_path):
    res = subprocess.run([str(STANDIN), "--timeout", "1", *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, env={**os.environ, "RPICAM_STANDIN_MODE": "ok"})
    assert (res.returncode, res.stderr.strip().splitlines()[-1]) == (255, f"ERROR: *** {message} ***")
    assert not (tmp_path / "x.jpg").exists()


def test_the_module_picture_carries_exif_text_and_its_preview_the_banner_with_the_frame_time(
        tmp_path, standin, monkeypatch):
    banners = []
    real = camera.banner

    def spy(cam, when=None):
        banners.append(when)
        return real(cam, when)

    monkeypatch.setattr(camera, "banner", spy)
    before = time.time()
    [night] = camera.capture_all(cams(MODULE), tmp_path)
    assert night.ok, night.error
    [argv] = standin()
    assert "IFD0.ImageDescription=night" in argv
    offset = argv[argv.index("IFD0.ImageDescription=night") + 2]
    assert offset.startswith("EXIF.OffsetTimeOriginal=") and offset[-3] == ":"
    # The preview's banner shows when rpicam-still took the frame (it exits right after encoding it).
    [when] = banners
    assert before + 0.1 <= when == night.taken <= time.time()
    cmd = real(night_cam := cams(MODULE)[0], when)
    assert cmd[cmd.index("--timestamp") + 1] == camera.local_stamp(when)
    assert night_cam.stamp and night.as_meta()["captured"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(when)))


def test_stamp_false_leaves_pictures_plain(tmp_path, standin):
    [cam] = cams(MODULE + "stamp = false\n")
    assert not any(a.startswith("IFD0.") for a in camera.rpicam_command(cam, Path("a.jpg"), Path("b.jpg")))
    assert camera.banner(cam) == ["--no-banner"] and camera.banner(cam, time.time()) == ["--no-banner"]


def test_utc_offset_is_written_as_exif_wants_it(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        assert camera._utc_offset(1_800_000_000) == "+05:30"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
