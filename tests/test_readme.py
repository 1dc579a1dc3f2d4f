"""The README's Python examples run as written (in order, sharing one namespace)."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # the examples write model.lnet
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace("...", "pass"), str(README), "exec"), namespace)
    assert (tmp_path / "model.lnet").is_file()
    assert 0.0 <= namespace["metrics"]["accuracy"] <= 1.0
    # the DataLoader / device / scheduler / logger example trained and logged every epoch
    rows = (tmp_path / "runs" / "readme" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + len(namespace["history"]) == 5
