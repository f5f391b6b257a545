"""The tutorial notebooks under docs/tutorials run from top to bottom and show what they say.

Each is executed in a fresh kernel of this interpreter (nbclient + ipykernel), in a temporary
working folder; the notebooks in the repository stay without outputs (a test checks that), so
what the site shows is the code and its explanation, and what is tested is that the code
still works against the package as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import require_reference

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # per cell: generous, for a 2-core machine shared with other work


def execute(name: str, workdir: Path, check: str) -> tuple[str, dict[str, Any], int]:
    """Run ``docs/tutorials/<name>`` in a new kernel, then the test's own ``check`` cell
    (appended in memory, never saved), which prints one JSON object of facts about the
    notebook's variables. A failing cell fails the test with the cell and its traceback.

    Returns every text the notebook printed or displayed, the facts, and how many images
    it drew."""
    notebook = nbformat.read(TUTORIALS / name, as_version=4)
    source = "import json\nprint('FACTS ' + json.dumps(" + check + ", default=str))"
    notebook.cells.append(nbformat.v4.new_code_cell(source))
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    # the notebooks' temporary folders (mkdtemp) go under the test's own, removed after it
    client.execute(env={**os.environ, "TMPDIR": str(workdir)})
    texts, images = [], 0
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out["text"])
            data = out.get("data", {})
            texts.append(str(data.get("text/plain", "")))
            images += "image/png" in data
    text = "\n".join(texts)
    facts = json.loads(text.split("FACTS ", 1)[1].splitlines()[0])
    return text, facts, images


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {number} has outputs"
            assert cell.execution_count is None, f"{path.name} cell {number} was run"


def test_there_are_the_two_tutorials() -> None:
    assert [p.name for p in NOTEBOOKS] == ["lab-movielens.ipynb", "service-ab-test.ipynb"]


@pytest.mark.slow
@pytest.mark.reference_data
def test_lab_tutorial_runs_on_movielens(tmp_path: Path) -> None:
    require_reference("ml-100k")
    check = """{
        "ndcg": leaderboard(results)["NDCG@10"].to_dict(),
        "users": test.n, "difference": test.difference, "p": test.p_value,
        "trials": len(result.trials), "best": result.best_params,
        "tuned": float(leaderboard(tuned)["NDCG@10"].iloc[0]),
        "files": sorted(p.name for p in folder.iterdir()),
    }"""
    text, facts, images = execute("lab-movielens.ipynb", tmp_path, check)
    assert "Dataset('ml-100k': 943 users, 1682 items, 100000 interactions" in text
    ndcg = facts["ndcg"]
    assert ndcg["ease"] > ndcg["item-knn"] > ndcg["popularity"] > 0
    # the printed paired test is the one computed, and it finds EASE better
    assert facts["difference"] == pytest.approx(ndcg["ease"] - ndcg["item-knn"], abs=0.02)
    assert facts["p"] < 0.05 and facts["users"] > 900
    assert "significant: True" in text
    assert facts["trials"] == 5 and set(facts["best"]) == {"reg"}
    assert abs(facts["tuned"] - ndcg["ease"]) < 0.05  # tuned on validation, scored on test
    assert {"report.md", "results.json", "metrics.png"} <= set(facts["files"])
    assert images >= 3  # leaderboard, trade-off and per-user distribution plots


@pytest.mark.slow
def test_service_tutorial_runs_from_first_start_to_an_ab_report(tmp_path: Path) -> None:
    check = """{
        "before": [styles[r.item] for r in before.items],
        "after": [styles[r.item] for r in after.items],
        "retrained": retrained.version.id,
        "users": len(users), "sent": clicks_sent,
        "report": {v.variant: [v.users, v.exposures, v.outcome_users]
                   for v in report.variants},
        "significant": report.test.significant,
        "stopped": server.poll() is not None,
    }"""
    text, facts, _ = execute("service-ab-test.ipynb", tmp_path, check)
    # three jazz likes turn a new user's popular list into a mostly-jazz one
    assert facts["after"].count("jazz") >= 3 > facts["before"].count("jazz")
    assert "duplicate=True" in text  # the repeated client_event_id was stored once
    assert facts["retrained"] == 2
    report = facts["report"]
    assert set(report) == {"control", "new"}
    assert sum(users for users, _, _ in report.values()) == facts["users"] > 250
    for variant, (users, exposures, clicked) in report.items():
        assert exposures == 5 * users, variant  # every list of 5 was logged
        assert clicked == facts["sent"][variant], variant  # every click, counted once
    assert facts["significant"] is True
    assert facts["stopped"] is True
