"""The README's examples run as written, in both languages.

- "Testing your plugin": its files (each code block starts with ``# <file name>``)
  are written to a fresh folder and pytest runs there, in its own process.
- bot.py is shown whole, and is this repository's bot.py.
- README.md and README.zh-CN.md have the same sections and the same code.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READMES = [ROOT / "README.md", ROOT / "README.zh-CN.md"]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.M | re.S)


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def code_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def files_of(text: str) -> dict[str, str]:
    files = {}
    for _, code in code_blocks(text):
        first, _, rest = code.partition("\n")
        match = re.fullmatch(r"# ([\w.]+\.(?:py|toml))", first.strip())
        if match:
            files[match.group(1)] = rest
    return files


@pytest.mark.timeout(120)
def test_testing_your_plugin_example_runs_verbatim(tmp_path):
    files = files_of(section(READMES[0].read_text("utf-8"), "Testing your plugin"))
    assert {"conftest.py", "pyproject.toml"} <= set(files) and any(f.startswith("test_") for f in files), files
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITEYUKI_", "PYTEST_"))}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert re.search(r"\b[2-9] passed\b", result.stdout), result.stdout


def test_bot_py_is_shown_whole_in_both_readmes():
    bot_py = (ROOT / "bot.py").read_text("utf-8")
    for readme in READMES:
        assert ("python", bot_py) in code_blocks(readme.read_text("utf-8")), readme.name


def test_both_readmes_link_each_other_and_have_the_same_structure_and_code():
    en, zh = (r.read_text("utf-8") for r in READMES)
    assert "README.zh-CN.md" in en.split("\n## ")[0] and "README.md" in zh.split("\n## ")[0]
    assert len(re.findall(r"^## ", en, re.M)) == len(re.findall(r"^## ", zh, re.M))
    assert len(re.findall(r"^### ", en, re.M)) == len(re.findall(r"^### ", zh, re.M))

    def code(text: str) -> list[str]:  # comments may be translated; the code may not
        return [
            "\n".join(line.split("  #")[0].rstrip() for line in block.splitlines() if not line.lstrip().startswith("#"))
            for lang, block in code_blocks(text)
            if lang in ("python", "toml", "sh")
        ]

    assert code(en) == code(zh)


@pytest.mark.parametrize("readme", READMES, ids=lambda path: path.name)
def test_no_section_appears_twice(readme: Path):
    # An edit that splices a section in at the wrong heading doubles half the page.
    headings = re.findall(r"^#{2,3} .*$", readme.read_text("utf-8"), re.M)
    repeated = sorted({h for h in headings if headings.count(h) > 1})
    assert not repeated, repeated


def test_docs_pages_exist_in_both_languages():
    for page in (ROOT / "docs").glob("*.md"):
        if page.name.endswith(".zh-CN.md"):
            continue
        twin = page.with_name(page.stem + ".zh-CN.md")
        assert twin.exists() or page.name == "ARCHITECTURE.md", f"{page.name} has no Chinese twin"
