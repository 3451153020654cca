"""Camera discovery (`seccam cameras --detect`) on a Pi 4's device set (tests/fixtures/pi4).

Camera modules come from the rpicam-still stand-in's --list-cameras; V4L2 nodes
from the fixture's sysfs tree, with `v4l2-ctl --info` answered from recorded
output (there are no /dev/video* devices here).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from seccam import cli, config, discover

TESTS = Path(__file__).resolve().parent
PI4 = TESTS / "fixtures" / "pi4"
STANDINS = TESTS / "standins"
BASE = 'spool_dir = "/tmp/s"\nstate_dir = "/tmp/t"\n'
WEBCAM_BY_ID = "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_A1B2C3D4-video-index0"
RUN_TOOL = discover.run_tool  # the real one, also while a test replaces discover.run_tool


def fixture_runner(info_dir=PI4 / "v4l2-ctl"):
    """v4l2-ctl answers from recorded output; rpicam-still is the stand-in, run for real."""
    def run(argv, timeout):
        if argv[0] == "v4l2-ctl":
            assert argv[1] == "--device" and argv[3] == "--info"
            node = os.path.basename(argv[2])
            try:
                text = (Path(info_dir) / f"{node}.txt").read_text()
            except FileNotFoundError:
                return subprocess.CompletedProcess(argv, 1, "", f"Cannot open device {argv[2]}, exiting.\n")
            return subprocess.CompletedProcess(argv, 0, text, "")
        return RUN_TOOL(argv, timeout)
    return run


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDINS}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RPICAM_STANDIN_MODE", "listing")


def test_pi4_fixture_offers_exactly_the_camera_module_and_the_webcam(standin):
    found = discover.detect(root=PI4, run=fixture_runner())
    assert found.modules == [discover.Module(0, "imx219", (3280, 2464), "/base/soc/i2c0mux/i2c@1/imx219@10")]
    assert [(c.node, c.device, c.card) for c in found.usb] == [("/dev/video2", WEBCAM_BY_ID, "HD Pro Webcam C920")]
    assert found.notes == []


def test_blocks_parse_as_configuration(standin):
    text = discover.render(discover.detect(root=PI4, run=fixture_runner()))
    cams = config.parse(BASE + text).cameras
    assert [(c.name, c.backend, c.index, c.device, c.resolution) for c in cams] == [
        ("module0", "rpicam", 0, None, (1640, 1232)),
        ("usb0", "fswebcam", None, WEBCAM_BY_ID, (1280, 720)),
    ]
    assert "now /dev/video2" in text and "--list-formats-ext" in text


@pytest.mark.parametrize("node", sorted(p.stem for p in (PI4 / "v4l2-ctl").glob("video*.txt")))
def test_only_the_usb_capture_node_can_be_used_by_fswebcam(node):
    """ISP capture nodes and unicam also say "Video Capture"; codecs are M2M; UVC's second node is metadata."""
    info = discover.parse_info((PI4 / "v4l2-ctl" / f"{node}.txt").read_text())
    assert info["device_caps"] is not None
    assert discover.is_usb_camera(info) == (node == "video2")


def test_parse_info_reads_the_driver_block_not_the_media_block():
    text = ("Driver Info:\n\tDriver name      : uvcvideo\n\tCard type        : Cam\n"
            "\tBus info         : usb-xhci-hcd.1-1\n\tCapabilities     : 0x84a00001\n"
            "\tDevice Caps      : 0x04200001\nMedia Driver Info:\n\tDriver name      : uvcvideo\n"
            "\tBus info         : usb-other\n")
    assert discover.parse_info(text) == {"driver": "uvcvideo", "card": "Cam", "bus": "usb-xhci-hcd.1-1",
                                         "device_caps": 0x04200001}


def test_stable_name_falls_back_to_by_path_then_to_the_node(tmp_path, standin):
    root = tmp_path / "root"
    shutil.copytree(PI4, root, symlinks=True)
    shutil.rmtree(root / "dev/v4l/by-id")
    [cam] = discover.detect(root=root, run=fixture_runner()).usb
    assert cam.device == "/dev/v4l/by-path/platform-fd500000.pcie-pci-0000:01:00.0-usb-0:1.3:1.0-video-index0"
    shutil.rmtree(root / "dev/v4l")
    found = discover.detect(root=root, run=fixture_runner())
    assert found.usb[0].device == "/dev/video2"
    assert "/dev/video2 may get another number after a reboot" in discover.render(found)


def test_listing_with_several_modules_keeps_rpicam_numbering():
    listing = ("Available cameras\n-----------------\n"
               "0 : imx708_wide_noir [4608x2592 10-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a)\n"
               "    Modes: 'SRGGB10_CSI2P' : 1536x864 [120.13 fps - (768, 432)/3072x1728 crop]\n\n"
               "1 : imx219 [3280x2464 8-bit RGGB] (/base/axi/pcie@120000/rp1/i2c@80000/imx219@10)\n"
               "    Modes: 'SRGGB8' : 640x480 [206.65 fps - (1000, 752)/1280x960 crop]\n\n")
    modules = discover.parse_listing(listing)
    assert [(m.index, m.model, m.suggested_resolution()) for m in modules] == [
        (0, "imx708_wide_noir", (2304, 1296)), (1, "imx219", (1640, 1232))]
    assert discover.parse_listing("No cameras available!\n") == []


def test_usb_entries_in_an_old_listing_are_left_to_fswebcam():
    def run(argv, timeout):
        listing = ("Available cameras\n-----------------\n"
                   "0 : uvcvideo [1920x1080] (/base/scb/pcie@7d500000/pci@0,0/usb@0,0-1:1.0-046d:082d)\n")
        return subprocess.CompletedProcess(argv, 0, listing, "")
    assert discover.camera_modules(run) == ([], [])


def test_missing_tools_are_notes_not_crashes():
    def run(argv, timeout):
        raise FileNotFoundError(argv[0])
    found = discover.detect(root=PI4, run=run)
    assert found.cameras == []
    assert [n.split(" is not installed")[0] for n in found.notes] == ["rpicam-still", "v4l2-ctl"]


def test_unreadable_node_and_failing_listing_are_notes(tmp_path):
    def run(argv, timeout):
        if argv[0] == "rpicam-still":
            return subprocess.CompletedProcess(argv, 255, "", "ERROR: the system appears to be configured for "
                                               "the legacy camera stack\n")
        return fixture_runner(tmp_path)(argv, timeout)  # no recorded output: "Cannot open device"
    found = discover.detect(root=PI4, run=run)
    assert found.cameras == []
    assert found.notes[0] == ("rpicam-still --list-cameras failed (exit 255): ERROR: the system appears to be "
                              "configured for the legacy camera stack")
    assert found.notes[1].startswith("/dev/video0: Cannot open device /dev/video0, exiting. (run as root")


def test_no_video4linux_at_all_gives_no_cameras(tmp_path):
    assert discover.usb_cameras(root=tmp_path) == ([], [])


def test_detect_command_works_without_a_configuration(tmp_path, standin, monkeypatch, capsys):
    monkeypatch.setattr(discover, "ROOT", PI4)
    monkeypatch.setattr(discover, "run_tool", fixture_runner())
    monkeypatch.setenv("SECCAM_CONFIG", str(tmp_path / "missing.toml"))
    assert cli.main(["cameras", "--detect"]) == 0
    out = capsys.readouterr().out
    assert [c.name for c in config.parse(BASE + out).cameras] == ["module0", "usb0"]
    assert out.count("[[camera]]") == 2


def test_detect_with_no_cameras_says_so(short_tmp, run):
    """End to end on this machine: no /dev/video*, and the stand-in's rpicam-still finds no module."""
    env = {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}", "RPICAM_STANDIN_MODE": "nocamera"}
    res = run("bin/seccam", "cameras", "--detect", config=short_tmp / "missing.toml", env=env)
    assert res.returncode == 69
    assert res.stdout == ""
    assert res.stderr.startswith("seccam: error: no cameras found: no camera module in `rpicam-still --list-cameras`")


def test_detect_end_to_end_finds_the_module(short_tmp, run):
    env = {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}", "RPICAM_STANDIN_MODE": "listing"}
    res = run("bin/seccam", "cameras", "--detect", env=env)
    assert res.returncode == 0, res.stderr
    [cam] = config.parse(BASE + res.stdout).cameras
    assert (cam.name, cam.backend, cam.index) == ("module0", "rpicam", 0)


def test_trying_cameras_still_needs_the_configuration(short_tmp, run):
    res = run("bin/seccam", "cameras", config=short_tmp / "missing.toml")
    assert res.returncode == 78
    assert "configuration file not found" in res.stderr


def test_a_module_without_a_sensor_size_gets_no_suggested_resolution():
    [module] = discover.parse_listing("0 : ov5647 [unknown] (/base/soc/i2c0mux/i2c@1/ov5647@36)\n")
    assert module.sensor is None and module.suggested_resolution() is None
    text = discover.render(discover.Detection(modules=[module], usb=[], notes=[]))
    [cam] = config.parse(BASE + text).cameras
    assert (cam.backend, cam.index) == ("rpicam", 0) and "resolution" not in text.split("[[camera]]")[1]


def test_capabilities_that_are_not_hex_count_as_unknown():
    info = discover.parse_info("Driver Info:\n\tBus info : usb-1\n\tDevice Caps : 0xZZ\n")
    assert info["device_caps"] is None and not discover.is_usb_camera(info)


def test_a_usb_memory_to_memory_device_is_not_a_camera_even_if_it_says_video_capture():
    caps = discover.V4L2_CAP_VIDEO_CAPTURE | discover.V4L2_CAP_VIDEO_M2M
    assert not discover.is_usb_camera({"device_caps": caps, "bus": "usb-xhci-hcd.1-1", "card": "", "driver": ""})


def test_tools_that_do_not_answer_in_time_are_notes(tmp_path, monkeypatch, capsys):
    def run(argv, timeout):
        if argv[0] == "rpicam-still" or argv[2] == "/dev/video0":
            raise subprocess.TimeoutExpired(argv, timeout)
        return fixture_runner()(argv, timeout)
    monkeypatch.setattr(discover, "ROOT", PI4)
    monkeypatch.setattr(discover, "run_tool", run)
    monkeypatch.setenv("SECCAM_CONFIG", str(tmp_path / "missing.toml"))
    assert cli.main(["cameras", "--detect"]) == 0  # the webcam on video2 was still found
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"seccam cameras: note: rpicam-still --list-cameras did not answer within {discover.LIST_TIMEOUT_S:g} s",
        f"seccam cameras: note: /dev/video0: v4l2-ctl did not answer within {discover.INFO_TIMEOUT_S:g} s"]
    assert [c.name for c in config.parse(BASE + captured.out).cameras] == ["usb0"]


def test_a_by_id_entry_that_is_not_a_link_is_ignored_and_by_path_is_explained(tmp_path, standin):
    root = tmp_path / "root"
    shutil.copytree(PI4, root, symlinks=True)
    by_id = root / "dev/v4l/by-id"
    for entry in by_id.iterdir():
        entry.unlink()
        entry.write_text("not a symlink")
    found = discover.detect(root=root, run=fixture_runner())
    assert found.usb[0].device.startswith("/dev/v4l/by-path/")
    assert "The by-path name stays with this USB port across reboots" in discover.render(found)


def test_detect_without_access_to_the_camera_devices_says_so_instead_of_no_module(short_tmp, run):
    """rpicam-still --list-cameras prints "No cameras available!" and exits 0 also when libcamera could not
    open /dev/dma_heap: --detect must not send the owner to check a ribbon cable that is fine."""
    env = {"PATH": f"{STANDINS}{os.pathsep}{os.environ['PATH']}", "RPICAM_STANDIN_MODE": "noaccess"}
    res = run("bin/seccam", "cameras", "--detect", config=short_tmp / "missing.toml", env=env)
    assert res.returncode == 69 and res.stdout == ""
    note, error = res.stderr.strip().splitlines()
    assert note.startswith("seccam cameras: note: no access to the camera devices:")
    assert "Could not open any dma-buf provider" in note and "group video" in note
    assert error.startswith("seccam: error: no cameras found, but the camera devices could not be opened")


@pytest.mark.parametrize("line", [
    "[0:00:01.2] [42] ERROR DmaHeap dma_heaps.cpp:53 Could not open any dmaHeap device",
    "[0:00:01.2] [42] ERROR V4L2 v4l2_device.cpp:90 'imx219 10-0010': Failed to open: Permission denied",
])
def test_older_libcamera_and_device_node_errors_count_as_no_access(line):
    def fake(argv, timeout):
        return subprocess.CompletedProcess(argv, 0, "No cameras available!\n", line + "\n")
    modules, notes = discover.camera_modules(fake)
    assert modules == [] and notes[0].startswith("no access to the camera devices") and line[-40:] in notes[0]


def test_an_empty_listing_without_errors_is_no_module_and_no_note():
    def fake(argv, timeout):
        return subprocess.CompletedProcess(argv, 0, "No cameras available!\n", "")
    assert discover.camera_modules(fake) == ([], [])
