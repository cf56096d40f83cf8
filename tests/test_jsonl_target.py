"""The built-in jsonl target (plugins/jsonl): a journal of every push, keyed by idempotency key;
with dedupe, a key already there is not written again, whichever process wrote it. A line torn
by a kill, a write cut short and `forget` in another process each leave it whole."""

from __future__ import annotations

import os

import pytest

from s360bridge.core.pipeline.receiver import create_app

from .conftest import Journal, base_config, bridge_of, drain, post, write_config
from .helpers.records import numbered_orders


def orders(n: int) -> list[dict]:
    return numbered_orders(20_000_000, n)


def test_jsonl_lines_carry_the_key_and_dedupe_drops_repeats(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["targets"]["journal"]["dedupe"] = True
    bridge = bridge_of(write_config(tmp_path, cfg))
    post(create_app(bridge).test_client(), "orders", orders(3))
    drain(bridge)
    journal = bridge.target(bridge.institution("testvenue"), "journal")
    lines = Journal(tmp_path / "journal.jsonl").lines()
    journal.append(lines)  # all of them again, as after a crash
    bridge.close()
    again = Journal(tmp_path / "journal.jsonl").lines()
    assert again == lines
    assert [line["idempotency_key"] for line in lines] == [
        f"testvenue/orders/{line['key']}@{line['seq']}" for line in lines]


def _three_orders_journaled(tmp_path, dedupe: bool = False):
    """A bridge whose jsonl journal holds three delivered orders, and the journal's path."""
    cfg = base_config(tmp_path)
    cfg["targets"]["journal"]["dedupe"] = dedupe
    bridge = bridge_of(write_config(tmp_path, cfg))
    post(create_app(bridge).test_client(), "orders", orders(3))
    drain(bridge)
    return bridge, tmp_path / "journal.jsonl"


def _again(lines: list[dict], tag: str = "again") -> list[dict]:
    """The lines with idempotency keys of their own: new deliveries."""
    return [dict(line, idempotency_key=f"{line['idempotency_key']}-{tag}") for line in lines]


@pytest.mark.parametrize("dedupe", [True, False])
def test_a_journal_line_torn_by_a_kill_is_cut_off_before_the_next_append(tmp_path, secrets_env,
                                                                          dedupe):
    """A worker killed in the write of a push leaves half a line: the next append cuts it off
    (that push never returned: its records go out again) instead of failing on it for ever
    (dedupe) or gluing the next line to it."""
    bridge, path = _three_orders_journaled(tmp_path, dedupe)
    lines = Journal(path).lines()
    whole = path.read_bytes()
    path.write_bytes(whole + whole.splitlines(keepends=True)[0][:-40])  # a torn copy
    journal = bridge.target(bridge.institution("testvenue"), "journal")
    journal.append(lines[:1])  # the torn one's record, pushed again
    bridge.close()
    assert Journal(path).lines() == (lines if dedupe else [*lines, lines[0]])
    assert path.read_bytes().endswith(b"}\n")


@pytest.mark.parametrize("dedupe", [True, False])
def test_a_journal_write_cut_short_is_undone_and_fails_then_goes_through(tmp_path, secrets_env,
                                                                         monkeypatch, dedupe):
    """The disk fills in the middle of a push: the write stops short. The push fails (to be
    tried again) and leaves the journal as it was, rather than counting as delivered with
    half of it written; tried again, it writes every line, with dedupe too."""
    from s360bridge.core.errors import TargetUnavailable

    bridge, path = _three_orders_journaled(tmp_path, dedupe)
    lines, before = Journal(path).lines(), path.read_bytes()
    again = _again(lines)
    real_write, calls = os.pwrite, []

    def disk_filling(fd, data, offset):
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[:len(data) // 2]), offset)
        raise OSError(28, "No space left on device")

    journal = bridge.target(bridge.institution("testvenue"), "journal")
    monkeypatch.setattr(os, "pwrite", disk_filling)
    with pytest.raises(TargetUnavailable, match="No space left"):
        journal.append(again)
    monkeypatch.setattr(os, "pwrite", real_write)
    assert path.read_bytes() == before
    journal.append(again)
    bridge.close()
    assert Journal(path).lines() == [*lines, *again]


def test_forget_blanks_lines_where_they_are_and_twice_is_once(tmp_path, secrets_env):
    """A line `forget` selects becomes ``{"forgotten":true}`` and spaces, at its length: no
    other line moves. A torn tail, which may hold the contact too, is cut off."""
    bridge, path = _three_orders_journaled(tmp_path)
    lines, before = Journal(path).lines(), path.read_bytes()
    path.write_bytes(before + b'{"institution":"testven')
    journal = bridge.target(bridge.institution("testvenue"), "journal")
    assert journal.drop(lambda line: line["key"] == lines[1]["key"]) == 1
    assert journal.drop(lambda line: line["key"] == lines[1]["key"]) == 0  # blanked already
    bridge.close()
    old, new = before.splitlines(keepends=True), path.read_bytes().splitlines(keepends=True)
    assert new == [old[0], b'{"forgotten":true}'.ljust(len(old[1]) - 1) + b"\n", old[2]]
    assert Journal(path).lines() == [lines[0], lines[2]]


@pytest.mark.parametrize("forgotten", [0, 2], ids=["an-earlier-line", "the-last-line-read"])
def test_a_deduping_worker_reads_on_after_forget_elsewhere(tmp_path, secrets_env, forgotten):
    """`forget` in another process blanks a line this worker has read, and more lines are
    appended there: this worker's next push reads on from where it was, every line still in
    its place, and writes only what is new."""
    bridge, path = _three_orders_journaled(tmp_path, dedupe=True)
    lines = Journal(path).lines()
    kept = [line for n, line in enumerate(lines) if n != forgotten]
    elsewhere = bridge_of(path.parent / "testvenue.yaml")
    theirs = elsewhere.target(elsewhere.institution("testvenue"), "journal")
    assert theirs.drop(lambda line: line["key"] == lines[forgotten]["key"]) == 1
    theirs.append(_again(lines))
    elsewhere.close()
    ours = bridge.target(bridge.institution("testvenue"), "journal")
    ours.append([*kept, *_again(lines), *_again(lines[:1], "new")])  # repeats, and one new
    bridge.close()
    assert Journal(path).lines() == [*kept, *_again(lines), *_again(lines[:1], "new")]
