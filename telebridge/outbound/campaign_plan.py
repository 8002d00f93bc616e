"""How an outbound campaign runs (`Plan`: carrier, number, flow, pace, retries), checked before it
starts, and the error a campaign that cannot start or resume raises."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from telebridge.outbound.verdicts import OUTCOMES

DEFAULT_RATE = {"plivo": 2.0, "vonage": 3.0}  # Plivo's default CPS; Vonage's hard limit
MAX_RATE = {"vonage": 3.0}


class CampaignError(Exception):
    """A campaign cannot start or resume; the message names the file, row or option."""


@dataclass(frozen=True)
class Plan:
    """How a campaign runs; stored in its state file so that `resume` runs it the same way."""

    carrier: str
    from_number: str
    flow: str | None = None
    concurrency: int = 1
    rate: float = 2.0  # call creations per second
    retries: int = 0
    retry_on: tuple[str, ...] = ("busy", "no-answer")
    retry_delay: float = 60.0
    wait: float = 300.0  # seconds to wait for any word of a placed call before "unknown"
    results: str = ""
    campaign_id: str = field(default_factory=lambda: secrets.token_hex(4))

    def checked(self) -> Plan:
        if self.concurrency < 1:
            raise CampaignError("--concurrency: must be at least 1")
        limit = MAX_RATE.get(self.carrier)
        if not self.rate > 0:
            raise CampaignError("--rate: must be more than 0 calls per second")
        if limit is not None and self.rate > limit:
            raise CampaignError(f"--rate: {self.carrier} allows at most {limit:g} calls a second")
        if self.retries < 0:
            raise CampaignError("--retries: must be 0 or more")
        if self.retry_delay < 0:
            raise CampaignError("--retry-delay: must be 0 or more seconds")
        bad = [o for o in self.retry_on if o not in OUTCOMES or o == "answered"]
        if bad:
            raise CampaignError(f"--retry-on: {bad[0]!r} is not one of busy, no-answer, failed")
        return self
