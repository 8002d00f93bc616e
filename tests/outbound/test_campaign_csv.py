"""A campaign's list: the `to` column, good numbers and variable names, or one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from telebridge.outbound.campaign_csv import read_list
from telebridge.outbound.campaign_plan import CampaignError
from tests.outbound.campaign_fixtures import write_list


def test_the_list_needs_a_to_column_and_good_numbers(tmp_path: Path) -> None:
    good = write_list(tmp_path / "good.csv", [{"to": "+1 415 555 0001", "name": "Ada", "x": ""}])
    columns, rows = read_list(good)
    assert columns == ["name", "x"]
    assert rows[0].to == "+14155550001" and rows[0].variables == {"name": "Ada"}  # empty: unset
    for content, problem in [
        ("number,name\n+14155550001,Ada\n", "no column named 'to'"),
        ("to,name\n+14155550001,Ada\n12,Bob\n", "line 3: to: '12' is not an E.164 number"),
        ("to,first name\n+14155550001,Ada\n", "'first name' is not a variable name"),
        ("to,attempt\n+14155550001,1\n", "'attempt' is set by telebridge itself"),
        ("to,name\n", "no rows to call"),
    ]:
        bad = tmp_path / "bad.csv"
        bad.write_text(content)
        with pytest.raises(CampaignError, match=problem):
            read_list(bad)
