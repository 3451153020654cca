"""seccam.tomledit: one table changed, every other byte of a hand-written file kept.

The invariant behind every test: the edited text parses (tomllib) to the original data with
only the one table changed as asked, and every line outside that table is unchanged.
"""

import tomllib

import pytest
from hypothesis import given, settings, strategies as st

from helpers.setupkit import EXAMPLE
from seccam import tomledit
from seccam.tomledit import TomlEditError, remove_table, set_table, statements

ACCOUNT = {"address": "cam@example.org", "password_file": "/etc/seccam/cam@example.org.password",
           "smtp_host": "smtp.example.org", "smtp_port": 465}


def lines_outside(text, name):
    """The lines that do not belong to table [name] (header through its last key)."""
    stmts = statements(text)
    inside = set()
    table = tomledit._Table(stmts, name)
    if table.header:
        last = table.keyvals[-1].last if table.keyvals else table.header.last
        inside = set(range(table.header.first, last + 1))
    return [line for i, line in enumerate(text.splitlines()) if i not in inside]


def test_a_new_table_goes_below_the_commented_template_and_nothing_else_moves():
    text = EXAMPLE.read_text()
    new = set_table(text, "account", ACCOUNT, comments=["written by a test"])
    assert tomllib.loads(new) == {**tomllib.loads(text), "account": ACCOUNT}
    added = [line for line in new.splitlines() if line not in text.splitlines()]
    assert added[:2] == ["[account]", "# written by a test"]
    assert [line for line in lines_outside(new, "account") if line.strip()] == \
        [line for line in text.splitlines() if line.strip()]
    # right after the "# [account]" template block, before the [delivery] template
    lines = new.splitlines()
    assert lines.index("[account]") > lines.index("# imap_host = \"imap.example.org\"")
    assert lines.index("[account]") < lines.index("# [delivery]")


def test_replacing_keeps_the_owners_comments_spacing_and_order():
    text = ('# my camera\n\n[account]   # the mail account\n'
            '  address   =  "old@example.org"   # who sends\n'
            'display_name = "Front door"\n'
            '# the password is elsewhere\n'
            'password = "secret"\n'
            'smtp_port=587\n\n'
            '[delivery]\nrecipients = ["me@example.org"]  # me\n')
    new = set_table(text, "account", {"address": "new@example.org", "password_file": "/p", "smtp_port": 465},
                    drop={"password"})
    assert new == ('# my camera\n\n[account]   # the mail account\n'
                   '  address = "new@example.org"   # who sends\n'
                   'display_name = "Front door"\n'
                   '# the password is elsewhere\n'
                   'smtp_port = 465\n'
                   'password_file = "/p"\n\n'
                   '[delivery]\nrecipients = ["me@example.org"]  # me\n')


def test_headers_and_keys_inside_strings_and_arrays_are_not_taken_for_the_table():
    text = ('note = """\n[account]\naddress = "fake@x.org"\n"""\n'
            "lit = '''\n[account]\n'''\n"
            'pins = [\n  [17, 27],  # [account]\n  "[account]",\n]\n'
            'when = 1979-05-27 07:32:00Z\n'
            'table = { a = 1, b = [2, 3] }\n'
            '["quoted.table"]\nx = "a \\" [account] \\\\"\n'
            '[[camera]]\nname = "a"\n[[camera]]\nname = "b"\n')
    new = set_table(text, "account", ACCOUNT)
    data = tomllib.loads(new)
    assert data["account"] == ACCOUNT and data["note"] == '[account]\naddress = "fake@x.org"\n'
    assert new.startswith(text) and new.endswith('[account]\naddress = "cam@example.org"\n'
                                                 'password_file = "/etc/seccam/cam@example.org.password"\n'
                                                 'smtp_host = "smtp.example.org"\nsmtp_port = 465\n')


MULTI_LINE = "\n".join([r'a = """x \""" [b] \\""""', "c = " + "'" * 3 + "z" + "'" * 4,
                        "[account]", "extra.deep = 1", 'address = "x@y.org"'])


def test_escapes_and_closing_quotes_of_multi_line_strings_dotted_keys_and_a_last_line_without_newline():
    new = set_table(MULTI_LINE, "account", {"address": "n@y.org", "imap_host": "i"})
    assert tomllib.loads(new) == {"a": 'x """ [b] \\"', "c": "z'",
                                  "account": {"extra": {"deep": 1}, "address": "n@y.org", "imap_host": "i"}}
    assert new.endswith('extra.deep = 1\naddress = "n@y.org"\nimap_host = "i"\n')


def test_an_inline_account_table_becomes_a_real_table():
    text = 'spool_dir = "/s"\naccount = { address = "old@x.org", password = "pw" }  # inline\n[sensors]\nwarmup_s = 1\n'
    new = set_table(text, "account", {"address": "new@x.org"}, drop={"password"})
    assert tomllib.loads(new) == {"spool_dir": "/s", "sensors": {"warmup_s": 1}, "account": {"address": "new@x.org"}}
    assert "pw" not in new and new.startswith('spool_dir = "/s"\n[sensors]\nwarmup_s = 1\n')
    assert remove_table(text, "account") == 'spool_dir = "/s"\n[sensors]\nwarmup_s = 1\n'


def test_odd_spacing_quoted_keys_crlf_and_no_final_newline():
    text = '[ "account" ]\r\n\t"address"\t= "a@b.org"\r\nsmtp_host = \'h\'\r\n[x]\r\ny = 1'
    new = set_table(text, "account", {"address": "c@d.org", "imap_host": "i"})
    assert tomllib.loads(new) == {"account": {"address": "c@d.org", "smtp_host": "h", "imap_host": "i"},
                                  "x": {"y": 1}}
    assert '\r\n' in new and '\n' not in new.replace('\r\n', '')
    assert new.endswith("[x]\r\ny = 1")
    added = set_table("a = 1", "account", {"address": "c@d.org"})
    assert added == 'a = 1\n\n[account]\naddress = "c@d.org"\n'
    assert set_table("a = 1\n[account]", "account", {"address": "c@d.org"}) == \
        'a = 1\n[account]\naddress = "c@d.org"\n'


def test_values_are_escaped_so_that_they_read_back_exactly():
    odd = 'q"uote \\ back\tslash\nnew\x01line é \x7f'
    new = set_table("", "account", {"display_name": odd, "n": 7, "b": True})
    assert tomllib.loads(new)["account"] == {"display_name": odd, "n": 7, "b": True}
    with pytest.raises(TypeError):
        tomledit.toml_value(1.5)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
                       st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
                                 st.integers(-10**9, 10**9), st.booleans()), max_size=6),
       st.sampled_from(["", "a = 1\n", EXAMPLE.read_text(), '[account]\naddress = "x@y.org"\n# c\n[t]\nk = [1,\n 2]\n']))
def test_any_values_in_any_of_these_files_round_trip(values, text):
    new = set_table(text, "account", values)
    before = tomllib.loads(text)
    expected = dict(before)
    expected["account"] = {**before.get("account", {}), **values}
    assert tomllib.loads(new) == expected


def test_a_template_inside_another_tables_keys_is_not_used_when_that_would_move_them():
    text = '[sensors]\nwarmup_s = 1\n# [account]\n# address = "x"\ncooldown_s = 2\n'
    new = set_table(text, "account", {"address": "a@b.org"})
    assert tomllib.loads(new)["sensors"] == {"warmup_s": 1, "cooldown_s": 2}
    assert new.startswith(text)


def test_dotted_keys_subtables_and_arrays_of_the_table_are_refused_by_line():
    with pytest.raises(TomlEditError, match=r"line 2: account.address is a dotted key"):
        set_table('a = 1\naccount.address = "x@y.org"\n', "account", ACCOUNT)
    with pytest.raises(TomlEditError, match=r"line 3: \[account.extra\] is a table seccam does not write"):
        set_table('[account]\naddress = "x@y.org"\n[account.extra]\nk = 1\n', "account", ACCOUNT)
    with pytest.raises(TomlEditError, match=r"\[account\] is a table seccam does not write"):
        set_table('[[account]]\naddress = "x@y.org"\n', "account", ACCOUNT)


def test_a_file_that_is_not_toml_is_named_with_its_line_and_no_value():
    with pytest.raises(TomlEditError, match=r"^/etc/x.toml: line 2: not valid TOML") as err:
        set_table('a = 1\npassword = "hunter2\n', "account", ACCOUNT, what="/etc/x.toml")
    assert "hunter2" not in str(err.value)


def test_a_result_that_would_change_anything_else_is_refused(monkeypatch):
    # Simulate a layout the editor gets wrong: the check must catch it, not write it.
    monkeypatch.setattr(tomledit, "_update_in_place", lambda lines, *a: lines + ["b = 2\n"])
    with pytest.raises(TomlEditError, match="would change other settings"):
        set_table('[account]\naddress = "x@y.org"\n', "account", {"address": "z@y.org"})
    monkeypatch.setattr(tomledit, "_checked", lambda *a: (_ for _ in ()).throw(TomlEditError("no")))
    with pytest.raises(TomlEditError, match="cannot add \\[account\\] without changing other settings"):
        set_table("a = 1\n", "account", {"address": "z@y.org"})


def test_remove_table_leaves_the_comments_that_follow_it():
    text = '[account]\naddress = "x@y.org"\n\n# who receives\n[delivery]\nrecipients = []\n'
    assert remove_table(text, "account") == '\n# who receives\n[delivery]\nrecipients = []\n'
    assert remove_table("[account]\n[x]\n", "account") == "[x]\n"
    assert remove_table("a = 1\n", "account") == "a = 1\n"


def test_the_scanner_reports_what_it_cannot_follow():
    for text, what in (('a = "x', "unterminated string"), ('a = """x', "unterminated multi-line string"),
                       ("a = [1 2]", "expected , or ]"), ("a = {b = 1 c = 2}", "expected , or }"),
                       ("a = {b 1}", "expected = in an inline table"), ("a = 1 2", "unexpected text"),
                       ("[a", "expected the end of a table header"), ("= 1", "expected a key"),
                       ("a 1", "expected = after a key"), ("a = ", "expected a value")):
        with pytest.raises(TomlEditError, match=what):
            statements(text)
