"""The whole-poll JSON path (pyarrow.json on the joined payloads, vectorised ``ts``) gives exactly what the
per-message orjson path gives: same table, same row -> message index, same dead letters in the same order,
whichever messages it reads itself and whichever it leaves to the per-message path."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "detector"))
from daemon_helpers import ListDL, json_flow_messages  # noqa: E402

from ingest.kafka_io.codecs import _parse_ts  # noqa: E402
from ingest.kafka_io.json_batch import FAST_MIN, _fast_rows, _ts_numbers, _ts_text, decode_json_batch  # noqa: E402
from ingest.schema import FLOW_SCHEMA, TX_SCHEMA  # noqa: E402


def flows(n: int = 120, seed: int = 3) -> list[bytes]:
    return json_flow_messages(n, seed)


def txs(n: int = 120) -> list[bytes]:
    rng = np.random.default_rng(5)
    return [json.dumps({"tx_id": f"t{i}", "ts": 1_700_000_000 + i * 0.25, "customer_id": f"c{rng.integers(9)}",
                        "terminal_id": f"m{rng.integers(30)}", "amount": round(float(rng.uniform(1, 500)), 2),
                        "mcc": "5411", "label": int(rng.random() < 0.05)}).encode() for i in range(n)]


def edit(msg: bytes, **change) -> bytes:
    rec = json.loads(msg)
    rec.update(change)
    return json.dumps(rec).encode()


def raw_field(msg: bytes, text: str) -> bytes:
    """``msg`` with raw JSON text inserted as its first member (types json.dumps cannot write)."""
    return b"{" + text.encode() + b"," + msg[1:]


def check_same(values: list, kind: str = "flows") -> tuple[pa.Table, np.ndarray]:
    """Whole-poll decode == the per-message path on the poll == every message decoded alone; returns it."""
    dl_fast, dl_ref = ListDL(), ListDL()
    t, idx, bad = decode_json_batch(values, kind, dl_fast, msg_index=[100 + i for i in range(len(values))])
    rt, ridx, rbad = decode_json_batch(values, kind, dl_ref, msg_index=[100 + i for i in range(len(values))],
                                       fast=False)
    schema = TX_SCHEMA if kind == "transactions" else FLOW_SCHEMA
    assert t.schema.equals(schema)
    assert t.equals(rt), (t.to_pylist()[:3], rt.to_pylist()[:3])
    assert idx.tolist() == ridx.tolist()
    assert dl_fast.items == dl_ref.items           # same reasons, same numbers, same order
    assert bad == rbad
    alone_t, alone_idx, alone_dl = [], [], []
    for i, v in enumerate(values):
        dl = ListDL()
        one, _, _ = decode_json_batch([v], kind, dl, fast=False)
        alone_t.append(one)
        alone_idx += [100 + i] * one.num_rows
        alone_dl += [(100 + i, r, raw) for _, r, raw in dl.items]
    assert t.equals(pa.concat_tables(alone_t)) and idx.tolist() == alone_idx
    assert sorted(dl_fast.items) == sorted(alone_dl)
    return t, idx


def fast_share(values: list, kind: str = "flows") -> float:
    """Share of the messages the whole-poll path keeps for itself."""
    plan = _fast_rows(values, kind)
    return 0.0 if plan is None else plan[0].num_rows / len(values)


def test_a_clean_poll_is_read_whole_by_arrow():
    values = flows()
    assert fast_share(values) == 1.0
    check_same(values)
    assert fast_share(txs(), "transactions") == 1.0
    check_same(txs(), "transactions")


# (name, message made from a good one): one such message in a poll of good ones
CASES = [
    ("pretty_printed", lambda m: json.dumps(json.loads(m), indent=2).encode()),
    ("embedded_newline_ws", lambda m: m.replace(b",", b",\n", 1)),
    ("crlf", lambda m: m.replace(b",", b",\r\n", 1)),
    ("tab_ws", lambda m: m.replace(b",", b",\t", 1)),
    ("leading_space", lambda m: b" " + m),
    ("trailing_space", lambda m: m + b" "),
    ("bom", lambda m: b"\xef\xbb\xbf" + m),
    ("two_objects", lambda m: m + m),
    ("two_objects_spaced", lambda m: m + b" " + m),
    ("empty", lambda m: b""),
    ("blank", lambda m: b"   "),
    ("none", lambda m: None),
    ("array", lambda m: b"[" + m + b"]"),
    ("truncated", lambda m: m[:-5]),
    ("unclosed_string_brace", lambda m: b'{"uid":"}'),
    ("port_string", lambda m: edit(m, dst_port="443")),
    ("port_word", lambda m: edit(m, dst_port="http")),
    ("port_float", lambda m: edit(m, dst_port=22.0)),
    ("port_float_frac", lambda m: edit(m, dst_port=22.7)),
    ("port_bool", lambda m: edit(m, dst_port=True)),
    ("port_int32_overflow", lambda m: edit(m, dst_port=2 ** 31)),
    ("label_int8_overflow", lambda m: edit(m, label=300)),
    ("ip_number", lambda m: edit(m, src_ip=167772161)),
    ("ip_float", lambda m: edit(m, dst_ip=1e2)),
    ("proto_bool", lambda m: edit(m, proto=False)),
    ("proto_object", lambda m: edit(m, proto={"name": "tcp"})),
    ("proto_upper", lambda m: edit(m, proto="TCP")),
    ("bytes_beyond_int64", lambda m: edit(m, src_bytes=2 ** 63)),
    ("bytes_beyond_uint64", lambda m: edit(m, src_bytes=2 ** 70)),
    ("duration_int", lambda m: edit(m, duration=3)),
    ("duration_big_int", lambda m: edit(m, duration=12345678901234567891)),
    ("duration_string", lambda m: edit(m, duration="1.5")),
    ("duration_tiny", lambda m: raw_field(m, '"duration": 1e-400')),
    ("duration_huge", lambda m: raw_field(m, '"duration": 1e400')),
    ("row_text", lambda m: edit(m, row="7")),
    ("row_null", lambda m: edit(m, row=None)),
    ("missing_src_ip", lambda m: json.dumps({k: v for k, v in json.loads(m).items() if k != "src_ip"}).encode()),
    ("empty_dst_ip", lambda m: edit(m, dst_ip="")),
    ("null_dst_ip", lambda m: edit(m, dst_ip=None)),
    ("nan_duration", lambda m: raw_field(m, '"duration": NaN')),
    ("inf_duration", lambda m: raw_field(m, '"duration": Infinity')),
    ("arrow_inf_duration", lambda m: raw_field(m, '"duration": -Inf')),
    ("arrow_nan_ignored", lambda m: raw_field(m, '"extra": -NaN')),
    ("arrow_inf_ignored", lambda m: raw_field(m, '"extra": Inf')),
    ("nan_ts", lambda m: raw_field(m, '"ts": NaN')),
    ("unicode_escape", lambda m: edit(m, service="caf\u00e9 \u2603")),
    ("unicode_raw", lambda m: json.dumps({**json.loads(m), "service": "café ☃"}, ensure_ascii=False).encode()),
    ("surrogate_pair", lambda m: raw_field(m, '"history": "\\ud83d\\ude00"')),
    ("lone_surrogate", lambda m: raw_field(m, '"history": "\\ud800"')),
    ("lone_surrogate_ignored", lambda m: raw_field(m, '"extra": "\\udc00"')),
    ("nul_escape", lambda m: raw_field(m, '"history": "a\\u0000b"')),
    ("raw_nul", lambda m: raw_field(m, '"history": "a\x00b"')),
    ("control_in_string", lambda m: raw_field(m, '"history": "a\tb"')),
    ("bad_utf8", lambda m: raw_field(m, '"history": "x"').replace(b'"x"', b'"\xff"')),
    ("bad_utf8_ignored", lambda m: raw_field(m, '"extra": "x"').replace(b'"x"', b'"\xc3"')),
    ("utf16", lambda m: m.decode().encode("utf-16")),
    ("duplicate_key", lambda m: raw_field(m, '"proto": "udp"')),
    ("duplicate_key_escaped", lambda m: raw_field(m, '"pr\\u006fto": "udp"')),
    ("duplicate_ignored_key", lambda m: raw_field(m, '"x": 1, "x": 2')),
    ("escaped_key", lambda m: m.replace(b'"proto"', b'"pr\\u006fto"')),
    ("nested_extra", lambda m: edit(m, extra={"a": [1, {"b": None}], "ts": "no"})),
    ("deep_extra", lambda m: raw_field(m, '"extra": ' + "[" * 1100 + "]" * 1100)),
    ("wide_extra", lambda m: edit(m, extra=[[i] for i in range(300)])),
    ("comment", lambda m: m + b"//x"),
    ("trailing_comma", lambda m: m[:-1] + b",}"),
    ("leading_zero", lambda m: raw_field(m, '"src_port": 080')),
    ("empty_object", lambda m: b"{}"),
    ("ts_bool", lambda m: edit(m, ts=True)),
    ("ts_null", lambda m: edit(m, ts=None)),
    ("ts_huge", lambda m: edit(m, ts=1e20)),
    ("ts_beyond_int64_us", lambda m: edit(m, ts=9.3e12)),
    ("ts_iso", lambda m: edit(m, ts="2023-11-14T22:13:20.5Z")),
    ("ts_numeric_string", lambda m: edit(m, ts="1700000000.25")),
    ("ts_inf_text", lambda m: edit(m, ts="inf")),
    ("ts_word", lambda m: edit(m, ts="yesterday")),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_one_odd_message_decodes_as_alone_and_its_neighbours_stay_fast(name, make):
    good = flows()
    values = list(good)
    values[70] = make(good[70])
    check_same(values)
    assert fast_share(values) >= 0.7  # the rest of the poll is still read whole by Arrow


def test_every_odd_message_at_once():
    good = flows(len(CASES) * 3)
    values = list(good)
    for j, (_, make) in enumerate(CASES):
        values[3 * j + 1] = make(good[3 * j + 1])
    check_same(values)


def test_two_objects_and_an_empty_message_do_not_cancel_out():
    """Row count equal to the message count but one message holding two objects and another none."""
    good = flows()
    values = list(good)
    values[10] = good[10] + good[11]
    values[90] = b""
    check_same(values)
    values[90] = b"{}"  # a second row for message 10 and an empty one for 90: still one row per message
    check_same(values)


TS_FORMS = [
    lambda s: s,                                                    # epoch seconds, number
    lambda s: repr(s),                                              # numeric string
    lambda s: str(int(s)),                                          # integer string (10 digits)
    lambda s: "-" + repr(s / 1e6),                                  # negative numeric string
    lambda s: _iso(s, "Z"),
    lambda s: _iso(s, ""),                                          # naive: UTC
    lambda s: _iso(s, "+05:30"),
    lambda s: _iso(s, "-08:00"),
    lambda s: _iso(s, "Z").replace("T", " "),
    lambda s: _iso(s, "Z").replace("T", "x"),                       # fromisoformat takes any separator
    lambda s: _iso(s, "").replace("-", "").replace(":", ""),        # basic format: left to _parse_ts
    lambda s: _iso(s, "+0530"),
    lambda s: _iso(s, "z"),
    lambda s: "20231114",                                           # a date, not 20 million seconds
    lambda s: "2023-02-29T00:00:00Z",                               # no such day
    lambda s: "2024-02-29T23:59:59.999999+23:59",
    lambda s: "2023-11-14T22:13:60",
    lambda s: "2023-11-14T24:00:00",
    lambda s: "2023-11-14T22:13:20+24:00",
    lambda s: "0000-01-01T00:00:00",
    lambda s: "0001-01-01T00:00:00",
    lambda s: "9999-12-31T23:59:59.999999",
    lambda s: "2023-11-14T22:13:20.1234567",
    lambda s: "2023-11-14T22:13:20,5",
    lambda s: "2023-11-14",
    lambda s: " 1700000000",
    lambda s: "1_700_000_000",
    lambda s: "1.7e9",
    lambda s: "nan",
    lambda s: "",
]


def _iso(s: float, zone: str) -> str:
    from datetime import datetime, timedelta, timezone

    d = datetime.fromtimestamp(s, timezone.utc)
    if zone and zone not in ("Z", "z"):
        sign = -1 if zone[0] == "-" else 1
        d = d.astimezone(timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[-2:]))))
    text = d.replace(tzinfo=None).isoformat()
    return text + zone


@pytest.mark.parametrize("first", [0, 4], ids=["poll_read_as_numbers", "poll_read_as_text"])
def test_timestamp_forms_mixed_in_one_poll(first):
    good = flows(len(TS_FORMS) * 4)
    values = []
    for i, m in enumerate(good):
        form = TS_FORMS[(i // 2 + first) % len(TS_FORMS)] if i % 2 and i > len(good) // 2 else TS_FORMS[first]
        values.append(edit(m, ts=form(json.loads(m)["ts"] + i * 0.123457)))
    check_same(values)
    assert fast_share(values) >= 0.4  # the first half, in one form, is read whole


def test_a_poll_of_iso_timestamps_is_read_whole():
    values = [edit(m, ts=_iso(json.loads(m)["ts"] + i * 0.000123, "Z" if i % 3 else "+01:00"))
              for i, m in enumerate(flows())]
    assert fast_share(values) == 1.0
    check_same(values)


def test_odd_timestamp_strings_among_iso_ones():
    """Every text form among ISO timestamps: the poll is read as text, each odd one judged as alone."""
    good = flows(len(TS_FORMS) * 5)
    values = [edit(m, ts=_iso(json.loads(m)["ts"] + i * 0.000123, "Z")) for i, m in enumerate(good)]
    for j, form in enumerate(TS_FORMS[1:]):
        i = 5 * j + 2
        values[i] = edit(good[i], ts=str(form(json.loads(good[i])["ts"] + i * 0.123457)))
    check_same(values)
    assert fast_share(values) >= 0.5


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(
    st.one_of(st.integers(1, 9999), st.integers(1900, 2100)), st.integers(1, 12),
    st.one_of(st.integers(1, 31), st.integers(28, 31)), st.integers(0, 23), st.integers(0, 59),
    st.integers(0, 59), st.one_of(st.none(), st.integers(0, 999999).map(str), st.text("0123456789", min_size=1,
                                                                                       max_size=6)),
    st.sampled_from(["", "Z", "+00:00", "-00:00", "+05:30", "-12:00", "+23:59", "-23:59", "+14:00"]),
    st.sampled_from(["T", " "])), min_size=1, max_size=40))
def test_iso_strings_vectorised_as_parse_ts(parts):
    texts = []
    for y, mo, d, h, mi, s, f, z, sep in parts:
        texts.append(f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}" + (f".{f}" if f else "") + z)
    us, care = _ts_text(pa.array(texts, pa.string()))
    for text, u, c in zip(texts, us.tolist(), care.tolist()):
        if not c:
            assert u == _parse_ts(text), text
    # dates a double holds exactly are all converted here, not left to the per-record path
    assert not any(c for text, c in zip(texts, care.tolist())
                   if 1700 <= int(text[:4]) <= 2200 and _parse_ts(text) is not None)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10 ** 13, 10 ** 13),
                          st.floats(0, 4e9)), min_size=1, max_size=40))
def test_epoch_numbers_vectorised_as_parse_ts(xs):
    us, care = _ts_numbers(np.array([float(x) for x in xs]))
    for x, u, c in zip(xs, us.tolist(), care.tolist()):
        try:
            want = _parse_ts(x)
        except OverflowError:  # the per-record rule raises beyond a double's range: a dead letter either way
            want = None
        if c:
            assert want is None or not -(2 ** 63) <= want < 2 ** 63
        else:
            assert u == want, x


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.from_regex(r"\A-?[0-9]{1,13}(\.[0-9]{1,20})?\Z"),
    st.floats(-1e12, 1e12, allow_nan=False).map(repr)), min_size=1, max_size=40))
def test_numeric_strings_vectorised_as_parse_ts(texts):
    us, care = _ts_text(pa.array(texts, pa.string()))
    for text, u, c in zip(texts, us.tolist(), care.tolist()):
        if not c:
            assert u == _parse_ts(text), text


_value = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 65, 2 ** 65), st.floats(),
                   st.text(max_size=6), st.sampled_from(["443", "tcp", "TCP", "", "10.0.0.1"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, FAST_MIN + 40), st.sampled_from(
    ["src_ip", "dst_ip", "dst_port", "src_port", "proto", "duration", "src_bytes", "label", "row", "ts", "extra"]),
    _value), max_size=6), st.lists(st.tuples(st.integers(0, FAST_MIN + 40), st.sampled_from(CASES)), max_size=3),
    st.booleans())
def test_generated_polls_decode_as_per_message(changes, cases, iso):
    good = flows(FAST_MIN + 41, seed=11)
    if iso:
        good = [edit(m, ts=_iso(json.loads(m)["ts"], "Z")) for m in good]
    values = list(good)
    for i, field, v in changes:
        rec = json.loads(values[i]) if values[i] else {}
        rec[field] = v
        values[i] = json.dumps(rec).encode()  # NaN/Infinity as the standard library writes them
    for i, (_, make) in cases:
        values[i] = make(good[i])
    check_same(values)


def test_the_screen_keeps_arrow_off_what_it_could_misread():
    """Messages that are not one ``{...}`` line of plain UTF-8 are never given to Arrow, even where one large
    block would read them right (a newline or other control byte: Arrow cuts blocks at newlines)."""
    from ingest.kafka_io.json_batch import _screen

    good = flows(12)
    odd = {1: good[1].replace(b",", b",\n", 1), 3: good[3].replace(b",", b",\t", 1), 4: good[4] + b"\r",
           5: b"", 6: raw_field(good[6], '"x": Inf'),
           8: raw_field(good[8], '"x": ' + "[" * 300 + "]" * 300), 9: b" " + good[9], 10: b"{"}
    odd[7] = raw_field(good[7], '"x": "x"').replace(b'"x": "x"', b'"x": "\xc3"')
    values = [odd.get(i, m) for i, m in enumerate(good)]
    ok = _screen(values, b"\n".join(values), np.array([len(v) for v in values]))
    assert np.flatnonzero(~ok).tolist() == sorted(odd)


@pytest.mark.parametrize("where", ["first", "last", "every", "every_other", "one_in_a_hundred"])
def test_refusals_anywhere_in_the_poll(where):
    """Messages Arrow refuses with a row-naming error (a word for a port) or without (a float port, a huge int)."""
    good = flows(300)
    at = {"first": [0], "last": [299], "every": range(300), "every_other": range(0, 300, 2),
          "one_in_a_hundred": range(5, 300, 100)}[where]
    values = list(good)
    for j, i in enumerate(at):
        values[i] = edit(good[i], **[{"dst_port": "http"}, {"dst_port": 22.5}, {"src_bytes": 2 ** 64},
                                     {"ts": "never"}][j % 4])
    check_same(values)
    if where in ("first", "last", "one_in_a_hundred"):
        assert fast_share(values) >= 0.75


def test_long_decimals_round_as_orjson_rounds_them():
    """Numbers with more digits than a double holds, tiny and huge exponents: Arrow's and orjson's doubles agree."""
    rng = np.random.default_rng(7)
    values = []
    for m in flows(200):
        rec = {k: v for k, v in json.loads(m).items() if k not in ("duration", "ts", "entropy")}
        digits = "".join(map(str, rng.integers(0, 10, int(rng.integers(1, 31)))))
        exp = ["", "e-5", "E+3", "e300", "e-320", "e-330", "e-400"][int(rng.integers(7))]
        values.append(("{" + f'"duration": {rng.integers(100000)}.{digits}{exp}, "entropy": 0.{digits}, '
                       f'"ts": {rng.integers(1_600_000_000, 1_800_000_000)}.{digits}, '
                       + json.dumps(rec)[1:-1] + "}").encode())
    assert fast_share(values) == 1.0
    check_same(values)


@pytest.mark.parametrize("ts", ["inf", "Infinity", 1e20, 1.7976931348623157e302, 9.3e12])
@pytest.mark.parametrize("fast", [True, False])
def test_a_timestamp_beyond_int64_is_a_dead_letter_not_an_exception(ts, fast):
    good = flows(40)
    values = list(good)
    values[7] = edit(good[7], ts=ts)
    dl = ListDL()
    t, idx, bad = decode_json_batch(values, "flows", dl, fast=fast)
    # an unusable ts (codecs._parse_ts: beyond the int64 microseconds a timestamp column holds)
    assert [(line, reason) for line, reason, _ in dl.items] == [(7, "bad_ts")] and bad == {"bad_ts": 1}
    assert t.num_rows == 39 and 7 not in idx.tolist()
