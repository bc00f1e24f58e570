import pytest

from kiln.curate.pii import luhn_valid, redact


@pytest.mark.parametrize(
    "text, expected, kind",
    [
        ("write to jane.doe+news@example.co.uk today", "write to <EMAIL> today", "EMAIL"),
        ("call +1 (202) 555-0143 now", "call <PHONE> now", "PHONE"),
        ("ring 020 7946 0958 please", "ring <PHONE> please", "PHONE"),
        ("or 555-123-4567.", "or <PHONE>.", "PHONE"),
        ("server 192.168.10.254 is up", "server <IP> is up", "IP"),
        ("v6 2001:db8:85a3::8a2e:370:7334 too", "v6 <IP> too", "IP"),
        ("card 4111 1111 1111 1111 expires", "card <CARD> expires", "CARD"),
        ("card 5500-0000-0000-0004.", "card <CARD>.", "CARD"),
    ],
)
def test_each_kind_is_replaced_and_counted(text, expected, kind):
    out, counts = redact(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "In 1862, the debt was $514,211,371.92 and 1,234,567 men served.",
        "Order 4111 1111 1111 1112 fails the Luhn check.",
        "The years 1790-1791 and the ratio 3.14.",
        "Version 1.2.3 of the act, section 12:30.",
        "Call me at noon; my number is private.",
    ],
)
def test_ordinary_text_is_left_alone(text):
    out, counts = redact(text)
    assert out == text and not counts


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


def test_numeric_tables_are_not_phones():
    table = "Fiscal year: (in millions) 1947 $35, 860 1946 67, 323 1945 98, 416 1944 95, 986 1940 9,252 and 1913 724"
    assert redact(table) == (table, {})
