"""The encoding against docs/PROTOCOL.md's worked example, and garbage from a daemon."""

from __future__ import annotations

import pathlib
import re

import pytest

from witness import _codec
from witness.client import encode_entry

PROTOCOL = (pathlib.Path(__file__).resolve().parents[3] / "docs" / "PROTOCOL.md").read_text()


def example(name: str) -> bytes:
    block = PROTOCOL.split(f"<!-- example:{name} -->", 1)[1].split("```")[1]
    return bytes.fromhex(re.sub(r"\s", "", block))


def test_the_worked_example_is_what_this_client_sends_and_reads() -> None:
    assert _codec.hello(1, "cli") == example("hello")
    entry = encode_entry("login", "auth", payload=_json('{"ok":true}'))
    assert _codec.append(2, "committed", True, None, [entry]) == example("append")
    committed = example("committed")
    request_id, kind, receipts = _codec.decode_response(committed[4:])
    assert (request_id, kind, receipts[0].seq, receipts[0].hash) == (
        2,
        "committed",
        7,
        b"\xab" * 32,
    )


def _json(text: str) -> object:
    from witness import Json

    return Json(text)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "ends early"),
        (b"\x01\x00\x00\x00\x00\x00\x00\x00\x63\x00\x00\x00", "variant 99"),
        (b"\x01" + b"\x00" * 7 + b"\x03\x00\x00\x00" + b"\x00", "trailing bytes"),
        (b"\x01" + b"\x00" * 7 + b"\x05\x00\x00\x00\x04\x00\x00\x00" + b"\xff" * 8, "ends early"),
        (b"\x01" + b"\x00" * 7 + b"\x02\x00\x00\x00" + b"\xff" * 8, "longer than its frame"),
        (b"\x01" + b"\x00" * 7 + b"\x07\x00\x00\x00" + b"\x00" * 4 + b"\x02", "option tag"),
    ],
)
def test_garbage_from_a_daemon_is_a_decode_error(body: bytes, message: str) -> None:
    with pytest.raises(_codec.DecodeError, match=message):
        _codec.decode_response(body)
