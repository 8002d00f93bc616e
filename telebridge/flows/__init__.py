"""Call flows: YAML menus and scripts, checked with line numbers and run on any carrier."""

from telebridge.flows.loader import (
    FlowError,
    Problem,
    check_files,
    load_flow,
    parse_flow,
    resolve_flow,
)
from telebridge.flows.model import Flow, Step
from telebridge.flows.runner import (
    CallPort,
    FlowIO,
    FlowRecorder,
    FlowRunner,
    NullRecorder,
    SpeechOverrides,
)

__all__ = [
    "CallPort",
    "Flow",
    "FlowError",
    "FlowIO",
    "FlowRecorder",
    "FlowRunner",
    "NullRecorder",
    "Problem",
    "SpeechOverrides",
    "Step",
    "check_files",
    "load_flow",
    "parse_flow",
    "resolve_flow",
]
