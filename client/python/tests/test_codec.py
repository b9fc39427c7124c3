"""The encoding against docs/PROTOCOL.md's worked example, and garbage from a daemon."""

from __future__ import annotations

import pathlib
import re
import struct

import pytest

import witness
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


def test_the_forwarders_figures_decode_in_the_order_the_protocol_gives() -> None:
    writer = _codec.Writer()
    writer.string("web-3")
    writer.string("refused: its log was cut")
    for value in (40, 2):
        writer.u64(value)
    writer.out += struct.pack("<d", 1.5)
    for value in (40, 3, 1):
        writer.u64(value)
    reader = _codec.Reader(bytes(writer.out))
    forward = _codec.read_forward(reader)
    reader.end()
    assert forward == witness.ForwardStats(
        host_id="web-3",
        state="refused: its log was cut",
        forwarded_seq=40,
        lag_entries=2,
        lag_seconds=1.5,
        entries_total=40,
        batches_total=3,
        errors_total=1,
    )
