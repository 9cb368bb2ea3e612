"""The configuration reference (docs/configuration.md), generated from Pulumi.yaml so the two cannot drift.

uv run python -m tools.config_reference          # print the table
uv run python -m tools.config_reference --write  # replace it in docs/configuration.md
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from lib.ai import API_KEYS

ROOT = Path(__file__).resolve().parent.parent
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _cell(value: Any) -> str:
    if value in ("", []):
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return ", ".join(f"`{v}`" for v in value)  # pyright: ignore[reportUnknownVariableType]
    return f"`{value}`"


def table() -> str:
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, spec in project["config"].items():
        rows.append(f"| `memos:{key}` | {spec['type']} | {_cell(spec['default'])} | {spec['description']} |")
    for provider, (key, variable) in API_KEYS.items():
        rows.append(
            f"| `memos:{key}` | secret string | (none) | {provider} API key, delivered to the app as a file "
            f"({variable}_FILE); set with `pulumi config set --secret` |"
        )
    return "\n".join(rows) + "\n"


def render_into(document: str) -> str:
    before, rest = document.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table()}{END}{after}"


def main() -> None:
    if "--write" in sys.argv:
        path = ROOT / "docs" / "configuration.md"
        path.write_text(render_into(path.read_text()))
    else:
        sys.stdout.write(table())


if __name__ == "__main__":
    main()
