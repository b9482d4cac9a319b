"""The README's benchmark table is generated from bench/results/*.json, and the README stays a short guide."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bench import table

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_LINES = 300


def test_readme_table_matches_committed_results():
    text = README.read_text()
    assert table.START in text and table.END in text, "README.md lost its bench-table markers"
    assert table.current_table(text) == table.render(table.RESULTS_DIR), (
        "README.md's benchmark table is stale: run `make bench-table` (python -m bench table --write)"
    )


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move details to deploy/docs/, "
        "ml/README.md or bench/README.md"
    )


def _write(folder: Path, name: str, result: dict) -> None:
    (folder / name).write_text(json.dumps(result))


def test_render_on_synthetic_results(tmp_path):
    _write(
        tmp_path,
        "zeta.json",
        {"bench": "zeta", "quick": False, "latency_ms": 12.5, "goal_latency_ms": 20},
    )
    _write(
        tmp_path,
        "import_quick_repeat3.json",
        {
            "bench": "import",
            "quick": True,
            "ratio_to_copy": 0.49612,
            "goals": {
                "ratio_to_copy": {"goal": ">= 0.4", "value": 0.49612, "meets_goal": True},
                "stable_ratio_to_copy": {"goal": "+-0.05 over 3 runs", "value": 0.06, "meets_goal": False},
            },
            "spread": {"ratio_to_copy": 0.12},
            "repeats": 3,
        },
    )
    _write(tmp_path, "alpha.json", {"bench": "alpha", "quick": False, "items": 3})
    _write(tmp_path, "skipped.json", {"bench": "gpu", "quick": False, "skipped": True, "reason": "no CUDA"})
    _write(tmp_path, "zeta.quick.json", {"bench": "zeta", "quick": True, "latency_ms": 99.0})  # git-ignored
    _write(
        tmp_path,
        "beta_partial.json",
        {
            "bench": "beta",
            "quick": False,
            "partial": True,  # stopped at a time limit: one goal measured, one not
            "goals": {
                "auc": {"goal": ">= 0.8", "value": 0.97, "meets_goal": True},
                "seeds_auc": {"goal": ">= 0.85", "value": None, "meets_goal": None},
            },
        },
    )

    out = table.render(tmp_path)
    lines = out.splitlines()
    assert lines[0] == "| " + " | ".join(table.COLUMNS) + " |"
    rows = [line.split(" | ") for line in lines[2:]]
    assert [r[0].lstrip("| ") for r in rows] == ["alpha", "beta", "gpu", "import", "zeta"]  # no .quick.json
    by_name = {r[0].lstrip("| "): r for r in rows}
    # A goal stated as goal_<metric>: a ceiling for milliseconds, checked against the measurement.
    assert by_name["zeta"][1:5] == ["`latency_ms`", "<= 20", "12.5", "yes (1/1)"]
    assert by_name["zeta"][6:] == ["full", "`zeta.json` |"]
    # The headline's goal and value, every goal counted, the spread over the repeated runs.
    assert by_name["import"][1:7] == [
        "`ratio_to_copy`",
        ">= 0.4",
        "0.4961",
        "no (1/2)",
        "0.12 (3 runs)",
        "quick",
    ]
    assert by_name["alpha"][1:5] == ["–", "–", "–", "–"]  # no goal stated
    assert by_name["gpu"][4] == "skipped"
    assert by_name["beta"][1:7] == [
        "`auc`",
        ">= 0.8",
        "0.97",
        "yes (1/1), 1 not measured",
        "–",
        "full, partial",
    ]
    assert out == table.render(tmp_path)  # deterministic


def test_write_replaces_only_the_block(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    _write(results, "zeta.json", {"bench": "zeta", "quick": False, "ratio": 0.9, "goal_ratio": 0.8})
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n\n{table.START}\nold table\n{table.END}\n\nafter\n")
    assert table.main(["--write", "--results", str(results), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith(f"{table.END}\n\nafter\n")
    assert "old table" not in text
    assert table.current_table(text) == table.render(results)
    with pytest.raises(ValueError, match="bench-table"):
        table.replace_table("no markers here", "x")


def test_table_is_a_subcommand_not_a_benchmark():
    from bench.__main__ import available

    assert "table" not in available() and "common" not in available()
    assert {"import", "webhooks", "faults"} <= set(available())


def test_cli_prints_the_table_from_standard_library_code_only(capsys):
    """``python -m bench table`` runs before any benchmark is imported, and the table module itself
    imports only the standard library (no torch, no Django)."""
    import ast

    from bench.__main__ import main

    assert main(["table"]) == 0
    assert capsys.readouterr().out == table.render(table.RESULTS_DIR)
    tree = ast.parse(Path(table.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__", "bench"}, imported
