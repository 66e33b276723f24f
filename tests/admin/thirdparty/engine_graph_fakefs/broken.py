"""An entry point whose import fails, as a broken plugin would."""

import engine_graph_fakefs_missing_dependency  # noqa: F401
