"""The ``engine`` client's commands, one module per family."""
