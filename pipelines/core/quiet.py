"""Environment that keeps native libraries' start-up chatter out of the terminal.

TensorFlow's C++ logging (the CPU-feature banner, "failed call to cuInit") and gRPC's read these
variables once, when they are first imported, so they must be set before: by the CLI and
`python -m trainer.task` at start-up, and in Beam workers through RunInference's `env_vars`.
Values a user set are kept. What TensorFlow prints before its logging is initialised ("All log
messages before absl::InitializeLog()", oneDNN, cudart) ignores every variable: only sending the
process's stderr elsewhere hides it (`stage_log.StageLog`).
"""
from __future__ import annotations

import os

QUIET_NATIVE_LOGS = {
    "TF_CPP_MIN_LOG_LEVEL": "2",           # C++ INFO and WARNING (errors still show)
    "GRPC_VERBOSITY": "ERROR",
}


def quiet_native_logs() -> None:
    """Sets the variables above unless already set."""
    for name, value in QUIET_NATIVE_LOGS.items():
        os.environ.setdefault(name, value)
