"""`Segmenter`: where streamed text is cut for Waves, on a given clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from telebridge.call.text_flush import MAX_WAIT, Segmenter


def test_a_sentence_end_flushes_at_once() -> None:
    seg = Segmenter()
    assert seg.feed("Hello there", 0.0) == []
    assert seg.feed(". How", 0.01) == ["Hello there. "]
    assert seg.held == "How"


def test_a_clause_flushes_once_a_few_words_are_held() -> None:
    seg = Segmenter()
    assert seg.feed("Yes, ", 0.0) == []  # too short to stand alone
    assert seg.feed("that is a fine question, ", 0.0) == ["Yes, that is a fine question, "]


def test_a_long_run_of_words_is_cut_at_a_space_never_inside_a_word() -> None:
    seg = Segmenter(max_chars=20)
    out = seg.feed("one two three four five six seven", 0.0)
    assert out == ["one two three four "]
    assert seg.held == "five six seven"


def test_held_text_is_flushed_after_max_wait_up_to_its_last_space() -> None:
    seg = Segmenter()
    seg.feed("I think the ans", 1.0)
    assert seg.due() == 1.0 + MAX_WAIT
    assert seg.expire(1.1) == []  # not yet
    assert seg.expire(1.0 + MAX_WAIT) == ["I think the "]
    assert seg.held == "ans"


def test_one_word_still_arriving_waits_for_its_end() -> None:
    seg = Segmenter()
    seg.feed("Supercalifragilistic", 0.0)
    assert seg.expire(1.0) == []
    assert seg.finish() == ["Supercalifragilistic"]


def test_blank_text_is_never_a_segment() -> None:
    seg = Segmenter()
    assert seg.feed("   ", 0.0) == []
    assert seg.due() is None
    assert seg.finish() == []


@given(st.lists(st.text(alphabet="ab ,.!?\n", max_size=12), max_size=30))
def test_segments_are_the_text_in_order_with_nothing_lost(pieces: list[str]) -> None:
    seg = Segmenter(max_chars=15)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        out += seg.feed(piece, i * 0.1)
        out += seg.expire(i * 0.1)
    out += seg.finish()
    text = "".join(pieces)
    joined = "".join(out)
    # Everything, in order; only blanks after the last words may be left unspoken.
    assert text.startswith(joined) and not text[len(joined) :].strip()
    assert all(s.strip() for s in out)
