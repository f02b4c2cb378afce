"""The README's settings table is generated from the Settings class; keep them in sync."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from app.cli.main import _register_subcommands, cli

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_settings_table_matches_the_code():
    _register_subcommands()
    result = CliRunner().invoke(cli, ["settings", "--markdown"])
    assert result.exit_code == 0, result.output
    text = README.read_text()
    start = text.index("<!-- settings-table:start -->") + len("<!-- settings-table:start -->")
    end = text.index("<!-- settings-table:end -->")
    assert text[start:end].strip() == result.output.strip(), (
        "README settings table is stale: regenerate it with `aipp settings --markdown`"
    )
