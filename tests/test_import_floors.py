"""The import graph follows the floors of docs/architecture.md ("Arrows"): each module imports only the floors
below it. The floors are the layers contract in .importlinter; import-linter reads every import, including those
inside functions and excluding `if TYPE_CHECKING:` blocks, so a cycle cannot hide in a function body."""

from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_imports_follow_the_floors(monkeypatch):
    monkeypatch.chdir(ROOT)
    # A non-zero result prints which import broke which floor (shown by pytest under "Captured stdout").
    assert lint_imports(config_filename=str(ROOT / ".importlinter"), no_cache=True) == 0
