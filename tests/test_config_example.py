"""``tastebud.toml.example``: every setting of the service, at its default, with a comment.

The file is read through the same loader ``tastebud serve --config`` uses, so a renamed or
removed setting breaks it, and every field of :class:`Settings` (and of its ``pipeline`` and
``exploration`` tables) must appear in it under a comment, so a new setting cannot be added
without saying what it does.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from tastebud.service.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[1] / "tastebud.toml.example"
# "# name = value": a setting whose default is "not set", shown commented out.
COMMENTED_SETTING = re.compile(r"^# ([a-z_]+ = .+)$")


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's TASTEBUD_* variables would override the file."""
    for name in list(os.environ):
        if name.upper().startswith("TASTEBUD_"):
            monkeypatch.delenv(name)


def nested_fields() -> dict[str, type[BaseModel]]:
    """Settings fields that are tables of their own settings (``pipeline``, ``exploration``)."""
    tables = {}
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            tables[name] = field.annotation
    return tables


def uncommented(text: str) -> str:
    """The example with every commented-out setting switched on."""
    return "\n".join(COMMENTED_SETTING.sub(r"\1", line) for line in text.splitlines())


def test_example_loads_to_the_defaults() -> None:
    assert load_settings(EXAMPLE) == Settings()


def test_every_setting_appears_with_a_value() -> None:
    data = tomllib.loads(uncommented(EXAMPLE.read_text(encoding="utf-8")))
    assert set(data) == set(Settings.model_fields)
    for table, model in nested_fields().items():
        assert set(data[table]) == set(model.model_fields), table


def test_commented_out_settings_are_valid(tmp_path: Path) -> None:
    """Switching on every "# name = value" line still loads: the hints are real settings."""
    config = tmp_path / "tastebud.toml"
    config.write_text(uncommented(EXAMPLE.read_text(encoding="utf-8")), encoding="utf-8")
    settings = load_settings(config)
    assert settings.api_key == "change-me-to-a-long-random-text"
    assert settings.pipeline.max_per_category == 3
    assert settings.model_params == {"n_factors": 64, "reg": "auto"}


def test_every_setting_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    tables = nested_fields()
    wanted = [(name, "") for name in Settings.model_fields] + [
        (name, table) for table, model in tables.items() for name in model.model_fields
    ]
    table = ""
    seen: dict[tuple[str, str], int] = {}
    for number, line in enumerate(lines):
        header = re.match(r"^\[([a-z_.]+)\]$", line)
        if header:
            table = header.group(1)
            parent, _, name = table.rpartition(".")  # the table is itself a setting
            seen[name, parent] = number
            continue
        key = re.match(r"^(?:# )?([a-z_]+) = ", line)
        if key and table in ("", *tables):
            seen.setdefault((key.group(1), table), number)
    for name, where in wanted:
        assert (name, where) in seen, f"{where + '.' if where else ''}{name} is missing"
        before = lines[seen[name, where] - 1]
        assert before.startswith("#"), f"{name}: no comment above it"


def test_a_wrong_value_in_the_example_fails_as_serve_would(tmp_path: Path) -> None:
    """The test reads the file as `serve` does: a broken copy is one clear error."""
    from tastebud.errors import InvalidInputError

    text = EXAMPLE.read_text(encoding="utf-8").replace("max_k = 200", "max_k = 0", 1)
    config = tmp_path / "tastebud.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"setting max_k \(in .*tastebud.toml\)"):
        load_settings(config)
