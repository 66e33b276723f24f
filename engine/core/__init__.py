"""The engine core: the Engine, its Jobs, their Env and streams."""

from engine.core.engine import Engine, Handler, Job, Status
from engine.core.env import Env, parse_bool
from engine.core.streams import Input, Output

__all__ = ["Engine", "Env", "Handler", "Input", "Job", "Output", "Status", "parse_bool"]
