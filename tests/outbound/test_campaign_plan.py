"""A campaign's plan is checked before anything is written: rates, retries, retry outcomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from telebridge.outbound.campaign import start
from telebridge.outbound.campaign_plan import CampaignError, Plan
from telebridge.outbound.campaign_state import state_path_for
from tests.outbound.campaign_fixtures import people, write_list
from tests.outbound.fixtures import FROM


def test_vonage_rate_is_capped_at_its_limit(tmp_path: Path) -> None:
    list_path = write_list(tmp_path / "list.csv", people(1))
    with pytest.raises(CampaignError, match=r"^--rate: vonage allows at most 3 calls a second"):
        start(list_path, Plan(carrier="vonage", from_number=FROM, rate=5))
    with pytest.raises(CampaignError, match=r"^--retry-on: 'answered'"):
        start(list_path, Plan(carrier="plivo", from_number=FROM, retry_on=("answered",)))
    assert not state_path_for(list_path).exists()
