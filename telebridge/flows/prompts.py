"""The fixed prompts of a flow: what its steps say that no variable can change, and how.

A fixed prompt sounds the same on every call, so it can be synthesised before any call runs
(`telebridge prompts render`). The texts are the runner's own (flows/runner.py `_queue`,
`_gather`): a step's `say` parts, and its gather's `no_input`, `invalid` and `reprompt` where the
runner can speak them. A text naming a variable is not fixed; a blank one is never spoken; what a
webhook answers is only known during the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from telebridge.flows import template
from telebridge.flows.model import Flow, Say, Step
from telebridge.flows.ports import SpeechOverrides
from telebridge.flows.runner import step_overrides

__all__ = ["FixedPrompt", "fixed_prompts"]


@dataclass(frozen=True, slots=True)
class FixedPrompt:
    """`text`, spoken exactly so (not stripped) with `overrides`, first met in step `step`."""

    step: str
    text: str
    overrides: SpeechOverrides


def fixed_prompts(flow: Flow) -> list[FixedPrompt]:
    """Each distinct (text, overrides) the flow speaks that has no variable, in file order."""
    found: list[FixedPrompt] = []
    seen: set[tuple[str, SpeechOverrides]] = set()
    for step in flow.steps.values():
        overrides = step_overrides(step)
        for text in _spoken(step):
            if not text.strip() or template.names(text) or (text, overrides) in seen:
                continue
            seen.add((text, overrides))
            found.append(FixedPrompt(step.id, text, overrides))
    return found


def _spoken(step: Step) -> Iterator[str]:
    """The texts the runner may speak in `step`, as templates, in the order it would."""
    for part in step.prompt:
        if isinstance(part, Say):
            yield part.text
    gather = step.gather
    if gather is None or gather.retries == 0:
        return  # without retries the runner never asks again
    if gather.no_input:
        yield gather.no_input
    # Without digit routes any key is accepted: there is no invalid key to answer.
    if gather.invalid and step.routes:
        yield gather.invalid
    if gather.reprompt:
        yield gather.reprompt
