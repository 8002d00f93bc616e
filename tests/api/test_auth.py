"""Who may use the call API: the keys of `TELEBRIDGE_API_KEY` matched in constant time, the
token bucket per client on a fake clock, and the `Retry-After` value a refusal carries."""

from __future__ import annotations

import pytest

from telebridge.api.auth import WEAK_KEY_CHARS, ApiKeys, RateLimiter, retry_after

LONG_A = "a" * WEAK_KEY_CHARS
LONG_B = "b" * 20 + "-second-key"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", [None, "", " ", ",", " , ", ",,, ,"])
def test_a_setting_that_names_no_key_turns_the_api_off(setting: str | None) -> None:
    assert ApiKeys.parse(setting) is None


@pytest.mark.parametrize("setting", ["\t", " \n", ",\n", "\t, \n"])
def test_a_setting_of_other_whitespace_names_no_key_either(setting: str) -> None:
    # "None when it names none": a secret file holding only a newline names no key.
    assert ApiKeys.parse(setting) is None


def test_one_key() -> None:
    keys = ApiKeys.parse(LONG_A)
    assert keys is not None
    assert len(keys) == 1
    assert keys.weak is False
    assert keys.match(LONG_A) == 0


def test_several_keys_with_spaces_and_empty_items_are_trimmed() -> None:
    keys = ApiKeys.parse(f"  {LONG_A} , ,{LONG_B},  ")
    assert keys is not None
    assert len(keys) == 2
    assert keys.match(LONG_A) == 0
    assert keys.match(LONG_B) == 1
    # The presented key is compared as it is: the route strips, the key set does not guess.
    assert keys.match(f" {LONG_A}") is None


def test_a_repeated_key_matches_its_first_index() -> None:
    keys = ApiKeys([LONG_A, LONG_B, LONG_A])
    assert len(keys) == 3
    assert keys.match(LONG_A) == 0
    assert keys.match(LONG_B) == 1


@pytest.mark.parametrize(
    ("setting", "weak"),
    [
        ("x" * WEAK_KEY_CHARS, False),
        ("x" * (WEAK_KEY_CHARS - 1), True),
        (f"{LONG_A},short", True),
        (f"{LONG_A},{LONG_B}", False),
    ],
)
def test_weak_flags_any_key_under_the_length(setting: str, weak: bool) -> None:
    keys = ApiKeys.parse(setting)
    assert keys is not None
    assert keys.weak is weak


@pytest.mark.parametrize(
    "presented",
    ["", "wrong", LONG_A[:-1], LONG_B[:5], LONG_A + "a", LONG_A.upper(), f"{LONG_A},{LONG_B}"],
)
def test_wrong_empty_prefix_and_longer_keys_do_not_match(presented: str) -> None:
    keys = ApiKeys.parse(f"{LONG_A},{LONG_B}")
    assert keys is not None
    assert keys.match(presented) is None


@pytest.mark.parametrize("keys", [[], [""], ["  ", " \t "]])
def test_a_key_set_needs_a_key(keys: list[str]) -> None:
    with pytest.raises(ValueError, match="no API key given"):
        ApiKeys(keys)


# --- rate -----------------------------------------------------------------------------------


def test_a_burst_is_allowed_then_refused_with_the_exact_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    assert [limiter.take("key:0") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("key:0") == 0.5
    # A refusal spends nothing: asking again at once gives the same wait.
    assert limiter.take("key:0") == 0.5


def test_the_bucket_refills_over_time() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock)
    for _ in range(3):
        limiter.take("key:0")
    clock.now += 0.25  # half a token back
    assert limiter.take("key:0") == 0.25
    clock.now += 0.25  # a whole token
    assert limiter.take("key:0") == 0.0
    assert limiter.take("key:0") == 0.5


def test_the_bucket_refills_to_the_burst_and_no_further() -> None:
    clock = FakeClock()
    limiter = RateLimiter(4.0, 2, clock=clock)
    assert limiter.take("c") == 0.0
    clock.now += 3600.0
    assert [limiter.take("c") for _ in range(3)] == [0.0, 0.0, 0.25]


def test_clients_have_separate_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 1, clock=clock)
    assert limiter.take("key:0") == 0.0
    assert limiter.take("key:0") == 1.0
    assert limiter.take("key:1") == 0.0
    assert limiter.take("addr:10.0.0.1") == 0.0
    assert limiter.take("key:1") == 1.0


def test_only_the_most_recent_clients_are_remembered() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 1, max_clients=2, clock=clock)
    assert limiter.take("a") == 0.0
    assert limiter.take("b") == 0.0
    assert limiter.take("a") == 1.0  # refused, and now the most recently seen
    assert limiter.take("c") == 0.0  # forgets b, the least recently seen
    assert limiter.take("a") == 1.0  # still remembered: still empty
    assert limiter.take("b") == 0.0  # forgotten: a full bucket again (and forgets c)
    assert limiter.take("c") == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 5), (1.0, 0), (1.0, -3)])
def test_a_limiter_that_would_refuse_everything_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="positive rate and a burst of at least 1"):
        RateLimiter(rate, burst)


@pytest.mark.parametrize(
    ("wait", "header"),
    [(0.0, "1"), (0.01, "1"), (0.5, "1"), (1.0, "1"), (1.2, "2"), (2.0, "2"), (59.001, "60")],
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(wait: float, header: str) -> None:
    assert retry_after(wait) == header
