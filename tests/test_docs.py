"""The Python examples of the docs run as they are: each page's blocks, in order, as one script."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

PAGES = ["docs/api.md", "docs/architecture.md"]


def python_blocks(page: str) -> str:
    text = (ROOT / page).read_text(encoding="utf-8")
    return "\n\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))


def test_every_page_has_examples():
    for page in PAGES:
        assert python_blocks(page).count("\n") > 10, page


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(page, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(python_blocks(page), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, f"{page} examples failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
