"""The `pykata` command."""
