"""The restore engine: executor, journal, context, copy engine, report."""

from rescue.engine.executor import Executor, Outcome, minimal_target_check
from rescue.engine.journal import DEFAULT_STATE_DIR, Journal

__all__ = ["Executor", "Outcome", "Journal", "DEFAULT_STATE_DIR", "minimal_target_check"]
