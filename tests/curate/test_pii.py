import pytest

from kiln.curate.pii import _HAS_DIGIT_RUN, digit_runs, luhn_valid, redact


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


def test_digit_runs_of_a_batch_agree_with_the_regex():
    """The batch scan says what `_HAS_DIGIT_RUN` says of each text: runs of 6 and 7 characters, runs
    at a text's ends (never joined with the next text's), non-ASCII and unpaired surrogates between."""
    import random

    rng = random.Random(4)
    alphabet = "0123456789 .()+-" * 3 + "ab\n:@é€\ud800٣"
    texts = ["".join(rng.choices(alphabet, k=rng.randrange(0, 30))) for _ in range(3000)]
    texts += ["123 456", "123 45", "call 555-123-4567 now", "", "9", "12345", "67", "x1(2)3.4+5-6y"]
    want = [_HAS_DIGIT_RUN.search(t) is not None for t in texts]
    assert digit_runs(texts) == want and 0.1 < sum(want) / len(want) < 0.9
    assert digit_runs(["12345", "67"]) == [False, False]  # 7 digits only across the boundary
    assert digit_runs([]) == [] and digit_runs(["no digits"]) == [False]


def test_redaction_of_a_batch_equals_one_text_at_a_time():
    from kiln.corpus import Document
    from kiln.curate.steps import RedactPII, StepStats

    texts = [
        "mail jo.1234567@example.com or call 555-123-4567",
        "only the address: a.12345678@example.org",
        "card 4111 1111 1111 1111 and ip 192.168.0.1 and fe80::1",
        "nothing here, 1999 and 2024",
    ]
    step = RedactPII()
    stats_one, stats_batch = StepStats("pii"), StepStats("pii")
    one = [step(Document(str(i), t, {}), stats_one) for i, t in enumerate(texts)]
    batch = step.run([Document(str(i), t, {}) for i, t in enumerate(texts)], stats_batch)
    assert [d.text for d in batch] == [d.text for d in one] == [redact(t)[0] for t in texts]
    assert stats_batch.as_dict() == stats_one.as_dict()
    assert batch[0].text == "mail <EMAIL> or call <PHONE>" and batch[1].text == "only the address: <EMAIL>"
