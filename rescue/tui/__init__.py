"""The restore wizard: Textual screens over the same engine as `rescue restore`.

make_app(engine) builds the app for `rescue wizard` (RealEngine) and for the
tests (RecordedEngine, tests/unit/recorded_engine.py: a test double, not
shipped). The screens hold no restore logic.
"""

from rescue.tui.app import Wizard, make_app
from rescue.tui.facade import Discovery, Engine, Interrupted
from rescue.tui.real import RealEngine

__all__ = ["Discovery", "Engine", "Interrupted", "RealEngine", "Wizard", "make_app"]
