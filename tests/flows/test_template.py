"""Tests for telebridge.flows.template: placeholders found, checked and filled."""

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.flows import template


def test_render_fills_variables_with_or_without_spaces() -> None:
    text = "Hello {{name}}, your slot is {{ time }} on {{  day}}."
    values = {"name": "Ann", "time": "9:30", "day": "Monday"}
    assert template.render(text, values) == "Hello Ann, your slot is 9:30 on Monday."


def test_render_leaves_text_without_placeholders_alone() -> None:
    assert template.render("Goodbye. {braces} stay", {}) == "Goodbye. {braces} stay"


def test_unknown_variable_renders_empty_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="telebridge.flows.template"):
        out = template.render("Hi {{ who }}!", {"name": "Ann"}, where="step 'menu'")
    assert out == "Hi !"
    assert any(
        "'who'" in r.getMessage() and "step 'menu'" in r.getMessage() for r in caplog.records
    )


def test_known_variables_do_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        template.render("{{a}}{{b}}", {"a": "1", "b": ""})
    assert caplog.records == []


def test_values_are_not_rendered_again() -> None:
    # A value that looks like a placeholder (say, from a webhook) is spoken as is.
    assert template.render("{{x}}", {"x": "{{y}}", "y": "no"}) == "{{y}}"


def test_names_in_order_without_duplicates() -> None:
    assert template.names("{{b}} {{ a }} {{b}} {{ 1bad }}") == ["b", "a"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Hello {{ name", "never closed"),
        ("Hello name }}", "no opening"),
        ("Hello {{ first name }}", "does not name a variable"),
        ("Hello {{}}", "does not name a variable"),
        ("{{ a {{ b }}", "never closed"),
    ],
)
def test_errors_name_malformed_placeholders(text: str, fragment: str) -> None:
    found = template.errors(text)
    assert found, text
    assert any(fragment in message for message in found)


def test_well_formed_text_has_no_errors() -> None:
    assert template.errors("Hi {{name}}, {{ time }}. {single} braces are text.") == []


@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
        st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=20),
        min_size=1,
        max_size=5,
    )
)
def test_render_of_each_name_gives_its_value(values: dict[str, str]) -> None:
    text = "|".join("{{ " + name + " }}" for name in values)
    assert template.render(text, values) == "|".join(values.values())
