"""The documents agree with the real command line: docs/usage.md's command table lists every sub-command (and
only those), and the README's install section names every optional extra of pyproject.toml."""

from __future__ import annotations

import re
from pathlib import Path

from kikimimi.cli import COMMAND_MODULES, _load_command

ROOT = Path(__file__).resolve().parents[2]


def _section(text: str, heading: str) -> str:
    """The text of the ``## heading`` section (up to the next ``## ``)."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_the_usage_command_table_lists_every_sub_command_and_no_other():
    section = _section((ROOT / "docs" / "usage.md").read_text(encoding="utf-8"), "Command line")
    rows = [line for line in section.splitlines() if line.startswith("| `kikimimi ")]
    documented = {m.group(1) for line in rows for m in re.finditer(r"`kikimimi ([a-z][a-z-]*)", line)}
    real = {_load_command(m).NAME for m in COMMAND_MODULES}
    assert documented == real, f"missing from the table: {real - documented}; not commands: {documented - real}"


def test_the_demo_row_says_what_the_demo_uses():
    section = _section((ROOT / "docs" / "usage.md").read_text(encoding="utf-8"), "Command line")
    row = next(line for line in section.splitlines() if line.startswith("| `kikimimi demo"))
    from kikimimi.commands.demo import HELP

    assert "Debian" in HELP and "Debian" in row and "--offline" in row


def test_the_readme_install_section_names_every_extra():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on Python 3.10
    table = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = re.findall(r"^([A-Za-z0-9_-]+)\s*=", table, flags=re.M)
    assert "umap" in extras and "eval" in extras
    install = _section((ROOT / "README.md").read_text(encoding="utf-8"), "Install by hand")
    named = set(re.findall(r"[a-z]+", install.split("extras:", 1)[1].splitlines()[0])) if "extras:" in install \
        else set()
    assert set(extras) <= named, f"extras missing from the README's install section: {set(extras) - named}"
