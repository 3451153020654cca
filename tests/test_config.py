"""Configuration parsing and validation: every bad value is one line naming file, line and key."""

import pytest

from seccam import config
from seccam.errors import ConfigError

BASE = 'spool_dir = "/tmp/s"\nstate_dir = "/tmp/t"\n'
CAM = '[[camera]]\nname = "front"\ndevice = "test"\n'


def parse(text, mode=0o600):
    return config.parse(text, "seccam.toml", mode)


def error_of(text, mode=0o600):
    with pytest.raises(ConfigError) as exc:
        parse(text, mode)
    assert exc.value.exit_code == 78
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_defaults_for_a_minimal_config():
    cfg = parse(BASE + CAM)
    assert cfg.sensors.pir_pins == (17, 27)
    assert cfg.sensors.coincidence_s == 2.0 and cfg.sensors.cooldown_s == 30.0 and cfg.sensors.warmup_s == 60.0
    cam = cfg.cameras[0]
    assert (cam.backend, cam.device, cam.resolution) == ("fswebcam", "test", (1280, 720))
    assert cam.preview_resolution == (320, 180)  # aspect kept
    assert cfg.account is None and cfg.delivery.recipients == ()
    assert (cfg.incident.gap_s, cfg.incident.update_pace_s, cfg.incident.sheet_max) == (
        300.0, (30.0, 60.0, 120.0, 240.0, 480.0, 600.0), 120)


def test_incident_settings_are_read():
    cfg = parse(BASE + '[incident]\ngap_s = 0\nupdate_pace_s = [10, 20.5]\nsheet_max = 12\n' + CAM)
    assert (cfg.incident.gap_s, cfg.incident.update_pace_s, cfg.incident.sheet_max) == (0.0, (10.0, 20.5), 12)


def test_issue_example_error_names_file_line_key_and_value():
    text = BASE + CAM + '[[camera]]\nname = "back"\ndevice = "/dev/video1"\nresolution = "720"\n'
    assert error_of(text) == 'seccam.toml:9: camera[1].resolution: expected WIDTHxHEIGHT, got "720"'


@pytest.mark.parametrize("snippet, expected", [
    ('[sensors]\npir_pins = [17, 99]\n', "sensors.pir_pins[1]: expected a BCM GPIO number 0-27, got 99"),
    ('[sensors]\npir_pins = []\n', "sensors.pir_pins: expected at least 1 pin(s), got 0"),
    ('[sensors]\npir_pins = [17, 17]\n', "sensors.pir_pins: the same pin is listed twice"),
    ('[sensors]\npir_pins = "17"\n', 'sensors.pir_pins: expected a list of BCM GPIO numbers, got "17"'),
    ('[sensors]\ncoincidence_s = -1\n', "sensors.coincidence_s: must be at least 0.05, got -1"),
    ('[sensors]\ncooldown_s = "30"\n', 'sensors.cooldown_s: expected a number, got "30"'),
    ('[sensors]\ncooldown_s = true\n', "sensors.cooldown_s: expected a number, got true"),
    ('[sensors]\ncooldown_s = nan\n', "sensors.cooldown_s: expected a finite number, got nan"),
    ('[sensors]\ncoldown_s = 3\n', "sensors.coldown_s: unknown key"),
    ('[sensors]\nled_pins = [5]\n', "sensors.led_pins: expected one LED per PIR (2), got 1"),
    ('[sensors]\nbutton_pin = 17\n', "sensors: a pin is used twice"),
    ('sensors = 3\n', "sensors: expected a table [sensors], got 3"),
    ('spool = "/x"\n', "spool: unknown key"),
    ('[delivery]\nrecipients = ["not-an-address"]\n', 'delivery.recipients[0]: expected an email address'),
    ('[delivery]\nrecipients = ["a@b.org", "A@b.org"]\n', "delivery.recipients: the same address is listed twice"),
    ('[delivery]\ngroup_id = "short"\n', "delivery.group_id: expected 11-32 characters"),
    ('[incident]\ngap_s = -1\n', "incident.gap_s: must be at least 0, got -1"),
    ('[incident]\nupdate_pace_s = 30\n', "incident.update_pace_s: expected a list of 1-32 numbers of seconds, got 30"),
    ('[incident]\nupdate_pace_s = []\n', "incident.update_pace_s: expected a list of 1-32 numbers"),
    ('[incident]\nupdate_pace_s = [30, "1m"]\n', 'incident.update_pace_s[1]: expected a number, got "1m"'),
    ('[incident]\nsheet_max = 0\n', "incident.sheet_max: must be at least 1, got 0"),
    ('[incident]\ngap = 3\n', "incident.gap: unknown key"),
])
def test_bad_values_are_named(snippet, expected):
    assert expected in error_of(BASE + snippet + CAM)


@pytest.mark.parametrize("camera, expected", [
    ('[[camera]]\ndevice = "test"\n', "camera[0].name: required key is missing"),
    ('[[camera]]\nname = "a b"\ndevice = "test"\n', 'camera[0].name: expected 1-32 letters'),
    ('[[camera]]\nname = "a"\n', "camera[0]: needs a device"),
    ('[[camera]]\nname = "a"\nbackend = "fswebcam"\nindex = 0\n', "camera[0].device: required for backend fswebcam"),
    ('[[camera]]\nname = "a"\nbackend = "rpicam"\ndevice = "test"\n', "camera[0].device: backend rpicam takes"),
    ('[[camera]]\nname = "a"\nbackend = "v4l"\ndevice = "test"\n', 'camera[0].backend: expected one of'),
    ('[[camera]]\nname = "a"\ndevice = "test"\nskip = 1.5\n', "camera[0].skip: expected an integer, got 1.5"),
    ('[[camera]]\nname = "a"\ndevice = "test"\nresolution = "640x480"\npreview_resolution = "800x600"\n',
     "camera[0].preview_resolution: must not be larger than resolution"),
    ('[[camera]]\nname = "a"\ndevice = "test"\n[[camera]]\nname = "a"\ndevice = "test"\n',
     'camera[1].name: duplicate camera name "a"'),
    ('[[camera]]\nname = "a"\ndevice = ""\n', "camera[0].device: must not be empty"),
    ('camera = 1\n', "camera: expected [[camera]] tables"),
    ('camera = [1]\n', "camera[0]: expected a table, got 1"),
])
def test_bad_cameras_are_named(camera, expected):
    assert expected in error_of(BASE + camera)


def test_rpicam_backend_is_the_default_for_an_index():
    cfg = parse(BASE + '[[camera]]\nname = "noir"\nindex = 1\n')
    assert (cfg.cameras[0].backend, cfg.cameras[0].index) == ("rpicam", 1)


def test_toml_syntax_error_has_a_line():
    msg = error_of(BASE + "[sensors\n")
    assert msg.startswith("seccam.toml:3: invalid TOML:")


def test_relative_path_refused():
    assert 'spool_dir: expected an absolute path, got "spool"' in error_of('spool_dir = "spool"\n')


ACCOUNT = '[account]\naddress = "cam@example.org"\nsmtp_host = "smtp.example.org"\n'


def test_account_defaults_and_password_hidden_from_repr():
    cfg = parse(BASE + ACCOUNT + 'password = "s3cret"\n')
    acc = cfg.account
    assert (acc.login, acc.smtp_port, acc.smtp_security, acc.imap_port) == ("cam@example.org", 465, "tls", 993)
    assert acc.read_password() == "s3cret"
    assert "s3cret" not in repr(acc) and "s3cret" not in repr(cfg)


@pytest.mark.parametrize("value", ["123456", "31415.9", "true", "[1, 2]", "2026-12-01"])
def test_a_password_that_is_not_a_string_is_refused_without_echoing_it(value):
    msg = error_of(BASE + ACCOUNT + f"password = {value}\n")
    assert "account.password: expected a string" in msg and "put it in quotes" in msg
    assert value not in msg


def test_password_in_world_readable_config_refused():
    msg = error_of(BASE + ACCOUNT + 'password = "x"\n', mode=0o644)
    assert "account.password" in msg and "readable by others (mode 0644)" in msg


def test_password_file_readable_by_others_refused(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    msg = error_of(BASE + ACCOUNT + f'password_file = "{secret}"\n')
    assert "account.password_file" in msg and "readable by others" in msg
    secret.chmod(0o600)
    assert parse(BASE + ACCOUNT + f'password_file = "{secret}"\n').account.read_password() == "pw"


def test_missing_password_file_named(tmp_path):
    assert "cannot read" in error_of(BASE + ACCOUNT + f'password_file = "{tmp_path}/none"\n')


def test_password_file_vanishing_later_is_a_config_error(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("pw")
    secret.chmod(0o600)
    acc = parse(BASE + ACCOUNT + f'password_file = "{secret}"\n').account
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot read password_file"):
        acc.read_password()


@pytest.mark.parametrize("extra, expected", [
    ('', "account: needs password or password_file"),
    ('password = "x"\npassword_file = "/x"\n', "give password or password_file, not both"),
    ('password = "x"\nsmtp_security = "plain"\n', "plain (no TLS) is allowed only to a loopback host"),
    ('password = "x"\nsmtp_security = "ssl"\n', 'expected one of tls, starttls, plain, got "ssl"'),
    ('password = "x"\nsmtp_port = 70000\n', "account.smtp_port: must be at most 65535"),
])
def test_account_errors(extra, expected):
    assert expected in error_of(BASE + ACCOUNT + extra)


def test_plain_allowed_to_loopback():
    cfg = parse(BASE + '[account]\naddress = "cam@localhost"\nsmtp_host = "127.0.0.1"\nsmtp_security = "plain"\n'
                'imap_host = "localhost"\nimap_security = "plain"\npassword = "x"\n')
    assert cfg.account.smtp_port == 25 and cfg.account.imap_port == 143


def test_account_must_be_a_table():
    assert "account: expected a table [account]" in error_of(BASE + 'account = "x"\n')


def test_load_resolves_explicit_then_env_then_default(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text(BASE + CAM)
    assert config.resolve_path(None, {"SECCAM_CONFIG": str(p)}) == p
    assert config.resolve_path("/x.toml", {"SECCAM_CONFIG": str(p)}).as_posix() == "/x.toml"
    assert config.resolve_path(None, {}).as_posix() == config.DEFAULT_PATH
    assert config.load(p).cameras[0].name == "front"


def test_load_missing_and_unreadable_and_binary(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        config.load(tmp_path / "none.toml")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        config.load(tmp_path)  # a directory
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(bad)


def test_camera_lookup():
    cfg = parse(BASE + CAM)
    assert cfg.camera("front").device == "test"
    with pytest.raises(KeyError):
        cfg.camera("nope")


def test_an_rpicam_camera_without_an_index_is_camera_module_0():
    cfg = parse(BASE + '[[camera]]\nname = "noir"\nbackend = "rpicam"\n')
    assert (cfg.cameras[0].backend, cfg.cameras[0].index) == ("rpicam", 0)


def test_recipients_that_are_not_a_list_are_named_with_what_was_found():
    msg = error_of(BASE + '[delivery]\nrecipients = { owner = "owner@example.org" }\n')
    assert msg.endswith("delivery.recipients: expected a list of email addresses, got a table")


@pytest.mark.parametrize("text, shown", [
    ('spool_dir = "0\\n"\n', r'got "0\n"'),
    ('"a\\nb" = 1\n', r'a\nb: unknown key'),
    ('spool_dir = "x\\u2028y"\n', r'got "x\u2028y"'),
])
def test_control_characters_in_values_and_keys_keep_the_error_on_one_line(text, shown):
    """Found by the fuzzer: a newline inside a value made a two-line error."""
    msg = error_of(text)
    assert shown in msg and msg.isprintable()
