"""seccam.vcard: the line grammar edge cases (the key forms are in tests/test_keys.py)."""

import base64

from seccam import vcard


def test_lines_outside_a_card_and_lines_without_a_colon_are_ignored_and_quoted_colons_kept():
    key = base64.b64encode(b"\x99key").decode()
    text = ("PRODID:made by a phone\r\n"                    # before BEGIN: not part of any card
            "BEGIN:VCARD\r\nVERSION:4.0\r\n"
            "a line without any colon\r\n"
            'EMAIL;TYPE="work:main":Anna@Example.org\r\n'  # the colon inside quotes is not the value's
            f"KEY:data:application/pgp-keys;base64,{key}\r\nEND:VCARD\r\n")
    [card] = vcard.parse(text)
    assert card.emails == ["anna@example.org"] and card.key == b"\x99key"
    assert repr(card) == "Card(emails=['anna@example.org'], key=4 bytes)"
    assert repr(vcard.Card([], None)) == "Card(emails=[], key=None)"
