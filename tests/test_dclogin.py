"""seccam.dclogin: Delta Chat's login URL, every field its core defines, and malformed URLs.

The cases follow chatmail/core's own tests of src/qr/dclogin_scheme.rs, so that seccam
reads a URL exactly as Delta Chat does. No error message may contain the password.
"""

import pytest

from seccam import dclogin
from seccam.dclogin import Login, LoginURLError, parse

SECRET = "s3cr:t&p=ss%word"


def test_minimal_forms_with_and_without_slashes_and_an_ignored_path():
    for url in ("dclogin://email@host.tld?p=123&v=1", "dclogin://email@host.tld/?p=123&v=1",
                "dclogin://email@host.tld/ignored/path?p=123&v=1", "dclogin:email@host.tld?p=123&v=1",
                "DCLOGIN:email@host.tld/?p=123&v=1", "  dclogin:Email@Host.tld?p=123&v=1\n"):
        assert parse(url) == Login(address="email@host.tld", password="123"), url


def test_every_field_delta_chat_defines():
    login = parse("dclogin:email@host.tld?p=secret&v=1&ih=imap.host.tld&ip=4000&iu=max&ipw=87654&is=ssl&ic=1"
                  "&sh=mail.host.tld&sp=3000&su=max@host.tld&spw=3242HS&ss=plain&sc=3")
    assert login == Login(address="email@host.tld", password="secret",
                          imap_host="imap.host.tld", imap_port=4000, imap_user="max", imap_password="87654",
                          imap_security="tls",
                          smtp_host="mail.host.tld", smtp_port=3000, smtp_user="max@host.tld",
                          smtp_password="3242HS", smtp_security="plain",
                          certificate_checks="strict")
    assert not login.accepts_invalid_certificates


@pytest.mark.parametrize("value,security", [("ssl", "tls"), ("starttls", "starttls"), ("plain", "plain"),
                                            ("default", None)])
def test_security_values(value, security):
    login = parse(f"dclogin:a@b.org?p=x&v=1&is={value}&ss={value}")
    assert login.imap_security == login.smtp_security == security


@pytest.mark.parametrize("value,checks", [("0", "automatic"), ("1", "strict"), ("2", "accept-invalid"),
                                          ("3", "accept-invalid")])
def test_certificate_check_values(value, checks):
    login = parse(f"dclogin:a@b.org?p=x&v=1&ic={value}")
    assert login.certificate_checks == checks
    assert login.accepts_invalid_certificates == (checks == "accept-invalid")


def test_percent_encoding_ip_literals_plus_addresses_and_form_encoding():
    login = parse("dclogin:username@%5b192.168.1.1%5d?p=%7BDaehFl%3B%22as%40%21fhdodn5%24234%22%7B%7Dfg&v=1")
    assert login.address == "username@[192.168.1.1]" and login.password == '{DaehFl;"as@!fhdodn5$234"{}fg'
    assert parse("dclogin://test@[2001:db8::1]?p=1234&v=1").address == "test@[2001:db8::1]"
    assert parse("dclogin:usename+extension@host?p=1234&v=1").address == "usename+extension@host"
    assert parse("dclogin:a@b.org?p=a+b&v=1").password == "a b"  # '+' is a space, as in Delta Chat
    assert parse("dclogin:a@b.org?p=1&p=2&v=1&unknown=x").password == "2"  # the last one counts


def test_empty_host_and_user_fields_mean_unset_like_in_delta_chat():
    login = parse("dclogin:a@b.org?p=x&v=1&ih=&iu=&sh=")
    assert (login.imap_host, login.imap_user, login.smtp_host) == (None, None, None)


@pytest.mark.parametrize("url,message", [
    ("https://example.org", "not a Delta Chat login URL"),
    ("dclogin:a@b.org", "without parameters"),
    ("dclogin:a@b.org?", "without parameters"),
    (f"dclogin:a@b.org?p={SECRET}", "without a version"),
    (f"dclogin:a@b.org?p={SECRET}&v=", "version that is not a number"),
    (f"dclogin:a@b.org?p={SECRET}&v=%40", "version that is not a number"),
    (f"dclogin:a@b.org?p={SECRET}&v=-20", "version that is not a number"),
    (f"dclogin:a@b.org?p={SECRET}&v=hi", "version that is not a number"),
    (f"dclogin:a@b.org?p={SECRET}&v=2", "of version 2; seccam understands version 1"),
    ("dclogin:a@b.org?v=1", "without a password"),
    (f"dclogin:?p={SECRET}&v=1", "without a valid address"),
    (f"dclogin:@b.org?p={SECRET}&v=1", "without a valid address"),
    (f"dclogin:a@?p={SECRET}&v=1", "without a valid address"),
    (f"dclogin:a@b.org.?p={SECRET}&v=1", "without a valid address"),
    (f"dclogin:a%20b@b.org?p={SECRET}&v=1", "without a valid address"),
    (f"dclogin:ab.org?p={SECRET}&v=1", "without a valid address"),
    (f"dclogin:a%ff@b.org?p={SECRET}&v=1", "address is not UTF-8"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&ip=x", "ip= is not a port number"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&sp=70000", "sp= is not a port number"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&sp=", "sp= is not a port number"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&is=tls", "unknown is= security"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&ss=", "unknown ss= security"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&ic=4", "unknown ic= certificate checks"),
    (f"dclogin:a@b.org?p={SECRET}&v=1&ih=a/b", "ih= is not a host name"),
    ("dclogin:a@b.org?p=%ff&v=1", "a parameter that is not UTF-8"),
])
def test_malformed_urls_are_one_clear_line_without_the_password(url, message):
    with pytest.raises(LoginURLError, match=message) as err:
        parse(url)
    assert "\n" not in str(err.value)
    assert SECRET not in str(err.value) and "s3cr" not in str(err.value)


def test_the_password_is_not_in_the_repr_and_build_round_trips():
    url = dclogin.build("cam@[192.0.2.1]", SECRET, ih="192.0.2.1", ip=993, ic=3)
    login = parse(url)
    assert login.password == SECRET and login.imap_port == 993 and login.address == "cam@[192.0.2.1]"
    assert SECRET not in repr(login)
