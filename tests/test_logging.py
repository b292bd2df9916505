from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from app.logging import configure_logging, get_logger, mask_text, mask_value
from tests.pure import clean_database  # noqa: F401


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> pytest.CaptureFixture[str]:
    configure_logging("DEBUG", json=True)
    return capsys


def _records(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    err = capsys.readouterr().err
    return [json.loads(line) for line in err.splitlines() if line.strip()]


def test_card_numbers_in_any_field_are_masked_to_last4(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    log = get_logger("t")
    log.info(
        "applied card 6280001234567890 ok", note="card 6280 0012 3456 7891", n=6280001234567892
    )
    (record,) = _records(json_logs)
    dumped = json.dumps(record)
    for digits in ("6280001234567890", "6280 0012 3456 7891", "6280001234567892"):
        assert digits not in dumped
    assert "••••7890" in record["event"] and "••••7891" in str(record["note"])


def test_pins_and_secrets_are_redacted_by_key_and_inline(
    json_logs: pytest.CaptureFixture[str],
) -> None:
    log = get_logger("t")
    log.info(
        "upstream_call",
        viiCardPin="4321",
        body="<Request><CardNumber>6280001234567890</CardNumber><PIN>9876</PIN></Request>",
        payload={"viiCardNumber": "6280001234567890", "nested": [{"pin": "5555"}]},
        raw='{"viiCardPin": "1111", "cartTotal": "10.00"}',
        url="https://x/token?refresh_token=abcdef&x=1",
        authorization="Bearer zzz-token",
    )
    (record,) = _records(json_logs)
    dumped = json.dumps(record, ensure_ascii=False)
    for secret in ("4321", "9876", "5555", "1111", "abcdef", "zzz-token", "6280001234567890"):
        assert secret not in dumped, secret
    assert "10.00" in dumped  # money is not mistaken for a secret


def test_standard_library_records_are_masked_too(json_logs: pytest.CaptureFixture[str]) -> None:
    logging.getLogger("uvicorn.error").warning("bad card 4111111111111111 pin=1234")
    (record,) = _records(json_logs)
    assert "4111111111111111" not in record["event"] and "1234" not in str(record["event"])


def test_request_id_is_bound_to_every_line(json_logs: pytest.CaptureFixture[str]) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-12345678")
    try:
        get_logger("t").info("one")
        logging.getLogger("other").info("two")
    finally:
        structlog.contextvars.clear_contextvars()
    records = _records(json_logs)
    assert [r["request_id"] for r in records] == ["req-12345678", "req-12345678"]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("order 1001 total 120.00", "order 1001 total 120.00"),
        ("id 20260101", "id 20260101"),
        ("ts 1732352000.123", "ts 1732352000.123"),
    ],
)
def test_short_numbers_and_money_are_not_masked(text: str, kept: str) -> None:
    assert mask_text(text) == kept


def test_mask_value_by_key() -> None:
    assert mask_value("viiCardNumber", "6280001234567890") == "••••7890"
    assert mask_value("password", "hunter2") == "[redacted]"


def test_pos_serials_in_query_strings_are_masked() -> None:
    """POS serials are card numbers but not digit-only, so the card pattern misses them."""
    from app.logging import mask_text

    line = mask_text("GET /internal/cards?serial=gc20261123a1&last4=23a1 HTTP/1.1")

    assert "gc20261123a1" not in line
    assert "last4=23a1" in line


def test_the_garbled_run_id_of_issue_16_is_kept() -> None:
    line = "reconcile run 147c0940-edfe-4123-9456-5356cc711799 queued"
    assert mask_text(line) == line


@given(st.uuids())
def test_uuids_are_never_masked(value: uuid.UUID) -> None:
    for text in (str(value), f"run {value} done", f"runId={value}", f'{{"runId": "{value}"}}'):
        assert mask_text(text) == text
    assert mask_value("run_id", str(value)) == str(value)


@given(st.binary(min_size=6, max_size=40).map(bytes.hex).filter(lambda h: not h.isdigit()))
def test_hex_ids_with_a_letter_are_never_masked(value: str) -> None:
    assert mask_text(f"id {value} end") == f"id {value} end"


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)
    )
)
def test_iso_timestamps_are_never_masked(moment: datetime) -> None:
    for text in (
        moment.isoformat(),
        moment.isoformat().replace("+00:00", "Z"),
        moment.strftime("%Y-%m-%d %H:%M:%S.%f"),
        moment.strftime("%Y%m%dT%H%M%S.%fZ"),
    ):
        assert mask_text(f"at {text}") == f"at {text}"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("card 628000123456", "card ••••3456"),  # 12 digits
        ("card 6280001234567890123", "card ••••0123"),  # 19 digits
        ("card 6280 0012 3456 7890 ok", "card ••••7890 ok"),
        ("card 6280-0012-3456-7890.", "card ••••7890."),
        ("(6280001234567890)", "(••••7890)"),
        ('{"number":"6280001234567890"}', '{"number":"••••7890"}'),
        ("/cards/6280001234567890/balance", "/cards/••••7890/balance"),
        ("n=6280001234567890&x=1", "n=••••7890&x=1"),
        ("<CardNumber>6280001234567890</CardNumber>", "<CardNumber>••••7890</CardNumber>"),
    ],
)
def test_card_numbers_standing_alone_are_still_masked(text: str, masked: str) -> None:
    assert mask_text(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "card 62800012345",  # 11 digits: too short for a card
        "n 62800012345678901234",  # 20 digits: too long for a card
        "amount 1.628000123456789",  # a decimal's fraction
        "build 1732352000123.5",
    ],
)
def test_numbers_that_are_not_card_shaped_are_kept(text: str) -> None:
    assert mask_text(text) == text


def test_log_json_unset_means_json_when_stderr_is_not_a_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=None)  # capsys: stderr is not a terminal
    get_logger("t").info("hello", n=1)
    (record,) = _records(capsys)
    assert record["event"] == "hello" and record["n"] == 1
