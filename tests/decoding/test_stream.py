"""Streamed text: whole characters only, stop strings held back until decided and cut out."""

import io

from seqlab.decoding.stream import TextStops, TextStreamer


def feed(stops, data: bytes) -> tuple[list[str], str, bool]:
    t = TextStops(bytes, stops)
    parts = [t.add(b) for b in data]
    parts.append(t.finish())
    return parts, "".join(parts), t.stopped


def test_a_multibyte_character_is_shown_whole():
    parts, text, _ = feed([], "aé€b".encode())
    assert text == "aé€b"
    assert "é" in parts and "€" in parts          # each came out whole, at its last byte


def test_a_stop_string_across_tokens_is_cut_and_never_shown_in_part():
    parts, text, stopped = feed(["END"], b"abcENDxyz")
    assert (text, stopped) == ("abc", True)
    assert all("E" not in p for p in parts)
    parts, text, stopped = feed(["END"], b"abENxEND")  # a false start is released
    assert (text, stopped) == ("abENx", True)
    parts, text, stopped = feed(["END"], b"abEN")       # held back, then given at the end
    assert (text, stopped, parts[-1]) == ("abEN", False, "EN")


def test_streamer_prints_the_same_text():
    out = io.StringIO()
    s = TextStreamer(bytes, out)
    for b in "zé!".encode():
        s(0, b)
    s.finish()
    assert out.getvalue() == "zé!" and s.ids == list("zé!".encode())
