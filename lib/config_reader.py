"""Typed, eager reading of flat config values, with errors that name the key.

`ConfigValues` wraps whatever supplies raw strings (the Pulumi config, or a dict in tests) and
turns them into ints, booleans, lists and choices, raising ConfigError for anything malformed or
missing. The CLI applies the defaults declared in Pulumi.yaml before the program runs, so a missing
value here means the program was run without them, and that is reported, not papered over.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TypeVar

from lib.errors import ConfigError

T = TypeVar("T", bound=str)


class ConfigValues:
    """Raw config strings by key (without the `memos:` namespace), read with checks."""

    def __init__(self, get: Callable[[str], str | None], *, is_secret: Callable[[str], bool]) -> None:
        self._get = get
        self._is_secret = is_secret

    def raw(self, key: str) -> str | None:
        return self._get(key)

    def is_secret(self, key: str) -> bool:
        return self._is_secret(key)

    def string(self, key: str) -> str:
        value = self._get(key)
        if value is None:
            raise ConfigError(
                key,
                "is not set; its default is declared in Pulumi.yaml, so run the program through the "
                f"Pulumi CLI, or set it with `pulumi config set memos:{key} <value>`",
            )
        return value

    def integer(self, key: str, *, minimum: int, maximum: int) -> int:
        text = self.string(key)
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(
                key, f"{text!r} is not a whole number; set a number between {minimum} and {maximum}"
            ) from None
        if not minimum <= value <= maximum:
            raise ConfigError(key, f"{value} is out of range; set a number between {minimum} and {maximum}")
        return value

    def boolean(self, key: str) -> bool:
        text = self.string(key).strip().lower()
        if text not in ("true", "false"):
            raise ConfigError(key, f"{text!r} is not a boolean; set true or false")
        return text == "true"

    def choice(self, key: str, choices: Sequence[T]) -> T:
        text = self.string(key)
        for option in choices:
            if text == option:
                return option
        raise ConfigError(key, f"{text!r} is not one of {', '.join(choices)}")

    def strings(self, key: str) -> tuple[str, ...]:
        text = self.string(key)
        try:
            value: object = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):  # pyright: ignore[reportUnknownVariableType]
            raise ConfigError(
                key,
                f"{text!r} is not a list of strings; set it with `pulumi config set --path 'memos:{key}[0]' <value>`",
            )
        return tuple(str(item) for item in value)  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]
