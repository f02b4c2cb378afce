"""The `aipp` command line."""
