"""The one error type for invalid stack configuration.

Every check in the program raises `ConfigError` with the config key at fault and the fix, so a bad
stack config fails the preview with one readable line instead of a traceback.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A config value that cannot work, with the key that holds it and how to fix it."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key if ":" in key else f"memos:{key}"
        self.message = message
        super().__init__(f"{self.key}: {message}")
