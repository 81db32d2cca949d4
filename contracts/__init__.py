"""Wire contracts of deploystream: jobs, events, control commands, stream config.

msgspec schemas only; no I/O happens in this package.
"""

from contracts.codec import DecodeError, decode_control, decode_event, decode_job, encode
from contracts.config import ConfigError, StreamsConfig, load_config, with_overrides
from contracts.control import Cancel, Control
from contracts.events import (
    Accepted,
    CancelRequested,
    Event,
    EventsCapped,
    HostResult,
    HostStats,
    HostSummary,
    Output,
    PlaybookStarted,
    Reclaimed,
    Result,
    Submitted,
    TaskStarted,
    Unverified,
    Waiting,
)
from contracts.jobs import DeployJob, Job, ProvisionJob, Target, job_kind
from contracts.rules import RuleError, check_job

__all__ = [
    "Accepted",
    "Cancel",
    "CancelRequested",
    "ConfigError",
    "Control",
    "DecodeError",
    "DeployJob",
    "Event",
    "EventsCapped",
    "HostResult",
    "HostStats",
    "HostSummary",
    "Job",
    "Output",
    "PlaybookStarted",
    "ProvisionJob",
    "Reclaimed",
    "Result",
    "RuleError",
    "StreamsConfig",
    "Submitted",
    "Target",
    "TaskStarted",
    "Unverified",
    "Waiting",
    "check_job",
    "decode_control",
    "decode_event",
    "decode_job",
    "encode",
    "job_kind",
    "load_config",
    "with_overrides",
]
