"""traffic and pinger: the longest gap in a stream of echoes, and the echoes themselves."""

from __future__ import annotations

import math
import struct

from sriov_lab import pinger, traffic

INTERVAL = 0.01


def _sent(n):
    return [1000.0 + i * INTERVAL for i in range(n)]


def test_summarize_should_report_one_interval_when_nothing_is_lost():
    t = traffic.summarize(_sent(100), list(range(100)), INTERVAL)
    assert (t.sent, t.answered, t.lost, t.recovered) == (100, 100, 0, True)
    assert math.isclose(t.longest_gap_ms, 10.0)


def test_summarize_should_find_the_longest_gap_between_answered_echoes():
    answered = [i for i in range(1000) if not (100 <= i < 150 or 400 <= i < 700)]
    t = traffic.summarize(_sent(1000), answered, INTERVAL)
    assert t.lost == 350 and t.recovered
    assert math.isclose(t.longest_gap_ms, 3010.0)  # from echo 399 to echo 700
    assert math.isclose(t.gap_start, 1000.0 + 399 * INTERVAL)
    assert math.isclose(t.gap_end, 1000.0 + 700 * INTERVAL)


def test_summarize_should_say_not_recovered_when_the_stream_ends_lost():
    t = traffic.summarize(_sent(1000), list(range(300)), INTERVAL)
    assert not t.recovered and t.longest_gap_ms == float("inf")
    assert math.isclose(t.gap_start, 1000.0 + 299 * INTERVAL)


def test_summarize_should_not_count_echoes_still_in_flight_at_the_stop():
    t = traffic.summarize(_sent(1000), list(range(990)), INTERVAL)
    assert t.recovered and math.isclose(t.longest_gap_ms, 10.0)


def test_summarize_should_say_not_recovered_when_nothing_was_answered():
    t = traffic.summarize(_sent(10), [], INTERVAL)
    assert (t.answered, t.recovered, t.gap_start) == (0, False, None)


def test_summarize_should_ignore_answers_to_echoes_it_did_not_send():
    t = traffic.summarize(_sent(100), [0, 1, 2, 157, 999], INTERVAL)
    assert t.answered == 3 and not t.recovered


def test_echo_request_should_carry_a_valid_checksum_and_the_sequence():
    packet = pinger.echo_request(0x1234, 70000)
    assert pinger.checksum(packet) == 0
    assert struct.unpack("!BBHHH", packet[:8])[3:] == (0x1234, 70000 & 0xFFFF)


def test_reply_seq_should_read_only_our_echo_replies():
    ip = bytes([0x45]) + bytes(19)
    reply = ip + struct.pack("!BBHHH", 0, 0, 0, 0x1234, 7)
    assert pinger.reply_seq(reply, 0x1234) == 7
    assert pinger.reply_seq(reply, 0x4321) is None
    assert pinger.reply_seq(ip + struct.pack("!BBHHH", 8, 0, 0, 0x1234, 7), 0x1234) is None
    assert pinger.reply_seq(b"\x45", 0x1234) is None


def test_longest_gap_within_should_clip_gaps_to_the_window():
    sent = _sent(1000)  # 1000.00 .. 1009.99
    answered = [i for i in range(1000) if not (100 <= i < 150 or 400 <= i < 700)]
    # all of the 0.51 s gap (echo 99 to 150), and the first 0.51 s of the 3.01 s one (399 to 700)
    gap = traffic.longest_gap_within(sent, answered, 1000.5, 1004.5)
    assert math.isclose(gap.ms, 510.0, abs_tol=1e-6)
    # the first of two equal gaps
    assert math.isclose(gap.start, 1000.99, abs_tol=1e-6) and math.isclose(gap.end, 1001.5, abs_tol=1e-6)
    assert math.isclose(traffic.longest_gap_within(sent, answered, 1002.0, 1003.0).ms, 10.0,
                        abs_tol=1e-6)
    # nothing answered in the window at all: all of it
    assert traffic.longest_gap_within(sent, answered, 1004.2, 1006.2) == (2000.0, 1004.2, 1006.2)
    assert traffic.longest_gap_within(sent, [], 1000.0, 1001.0) == (1000.0, 1000.0, 1001.0)
