"""The import graph follows the floors of docs/architecture.md ("Arrows"): each module imports only the floors
below it. The floors are the layers contract in .importlinter; import-linter reads every import, including those
inside functions and excluding `if TYPE_CHECKING:` blocks, so a cycle cannot hide in a function body.

It runs in a subprocess: import-linter configures logging in the process that calls it, which would change what
later tests' log captures see."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_imports_follow_the_floors():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--config", str(ROOT / ".importlinter"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr  # names the import that broke a floor
