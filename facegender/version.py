"""The package version, in one place (read by the CLI, the server and the model folder)."""

__version__ = "0.1.0"
