"""The README's commands and example stay true."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})


def test_readme_opens_with_setup_and_test_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", text, flags=re.S)
    assert first is not None and text.index("```bash") < 200
    lines = [ln for ln in first.group(1).splitlines() if ln.strip()]
    assert lines[0].startswith('pip install -e ".[dev]" && python -m usrl.train --algo dqn --env Pong')
    assert lines[1].startswith("python -m pytest")


def test_example_script_runs_short() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "slimmable_core.py"), "--steps", "5"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = [
        ln.split() for ln in out.stdout.splitlines() if re.match(r"^\s+0\.\d\d\s", ln) or ln.strip().startswith("1.00")
    ]
    assert [float(r[0]) for r in rows] == [0.25, 0.4, 0.5, 0.75, 1.0]
    macs = [int(r[2]) for r in rows]
    assert macs == sorted(macs) and macs[0] < macs[-1]
