"""`jarvis eval` on the tiny model after a short training, and `verify --adapter`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from click.testing import CliRunner

from jarvis.cli import cli
from jarvis.dataset import Recipe, render_dataset
from jarvis.evaluate import normalise, write_chart

RECORDS = [
    {
        "messages": [{"sender": "Ana", "text": f"plans {i}?"}],
        "reply": f"free at {i}",
        "thread": f"t{i}",
    }
    for i in range(10)
]


@pytest.fixture(scope="module")
def trained(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset with two tags, an adapter trained on it for 3 iterations)."""
    from jarvis.train import TrainOptions, train

    base = tmp_path_factory.mktemp("eval")
    a, b = base / "a.jsonl", base / "b.jsonl"
    a.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[:6]))
    b.write_text("".join(json.dumps(r) + "\n" for r in RECORDS[6:]))
    recipe = Recipe.build(
        contract="reply@1",
        inputs=[f"casual={a}", f"short={b}"],
        split=(0.5, 0.2, 0.3),
        batch_size=2,
    )
    render_dataset(recipe, base / "ds")
    options = TrainOptions(iters=3, batch_size=2, learning_rate=1e-3, num_layers=2, rank=4)
    adapter = train(base / "ds", str(tiny_model), base / "adapter", options).adapter_path
    return base / "ds", Path(adapter)


def test_normalise() -> None:
    assert normalise("  Yea,  OMW!! ") == "yea, omw"
    assert normalise("Sure.\n") == normalise("sure")


def test_verify_adapter_matches_its_dataset(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ds, adapter = trained
    result = CliRunner().invoke(
        cli, ["verify", str(ds), "--adapter", str(adapter), "--contract", "reply@1"]
    )
    assert result.exit_code == 0, result.output
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("PASS adapter: "))
    assert line.startswith(f"PASS adapter: {adapter} was trained on this dataset (manifest ")
    # Another dataset (same contract, other manifest) is refused.
    other = tmp_path / "other"
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    render_dataset(Recipe.build(contract="reply@1", inputs=[str(src)], batch_size=1), other)
    result = CliRunner().invoke(cli, ["verify", str(other), "--adapter", str(adapter)])
    assert result.exit_code == 1
    fail = next(ln for ln in result.stdout.splitlines() if ln.startswith("FAIL adapter: "))
    assert "the adapter was trained on a dataset with manifest sha256 " in fail


def test_eval_baseline_writes_both_reports_and_the_chart(
    trained: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    ds, adapter = trained
    out = tmp_path / "report"
    args = [
        "eval",
        "--dataset",
        str(ds),
        "--split",
        "test",
        "--adapter",
        str(adapter),
        "--baseline",
        "--limit",
        "2",
        "--out",
        str(out),
        "--max-tokens",
        "8",
    ]
    # No --model: the adapter's stamp names the base, which the base run uses too.
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["model"] == str(tiny_model)
    lines = result.stdout.splitlines()
    assert lines[0] == "reply@1 on test (2 records)"
    assert lines[1].split() == ["metric", "base", "adapter"]
    assert lines[2].split()[:2] == ["check", "non_empty"]
    assert lines[-1] == f"chart: {out / 'comparison.png'}"
    assert sorted(p.name for p in out.iterdir()) == [
        ".jarvis-output.json",
        "comparison.png",
        "replies.jsonl",
        "report.json",
        "report.md",
    ]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["records"] == 2 and report["chart"] == "comparison.png"
    assert set(report["runs"]) == {"base", "adapter"}
    summary = report["runs"]["adapter"]["summary"]
    assert set(summary["checks"]) == {"non_empty", "max_words"}
    assert summary["contract_length_words"] == 9.0
    assert set(report["runs"]["base"]["per_tag"]) <= {"casual", "short"}
    md = (out / "report.md").read_text()
    assert md.startswith("# Evaluation: reply@1 on the test split\n")
    assert "| metric | base | adapter |" in md and "![comparison](comparison.png)" in md
    replies = [json.loads(x) for x in (out / "replies.jsonl").read_text().splitlines()]
    assert len(replies) == 2 and {"base", "adapter", "target"} <= replies[0].keys()
    # The folder is not overwritten silently.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 12 and "exists; pass --force" in again.stderr


def test_eval_empty_split_is_an_error(
    trained: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    ds, _ = trained
    manifest = json.loads((ds / "manifest.json").read_text())
    assert manifest["splits"]["test"]["records"] > 0
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--dataset",
            str(tmp_path),
            "--model",
            str(tiny_model),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 6
    assert "empty" in result.stderr or "no such dataset" in result.stderr


def test_chart_labels_target_mean_and_contract_length(tmp_path: Path) -> None:
    # The dashed "target" line used to be drawn at the contract's length parameter (9), not at
    # the targets' mean length (4.5), so the chart mislabelled what the bars are compared with.
    from matplotlib.axes import Axes

    summary = {
        "checks": {"non_empty": 1.0},
        "all_checks": 1.0,
        "exact_match": 0.0,
        "mean_words": 3.0,
        "target_mean_words": 4.5,
        "contract_length_words": 9.0,
    }
    data = {
        "runs": {"adapter": {"summary": summary}},
        "contract": {"ref": "reply@1"},
        "split": "test",
        "records": 2,
    }
    drawn: list[tuple[float, str]] = []
    original = Axes.axhline

    def spy(self: Axes, y: float = 0, *args: Any, **kwargs: Any) -> Any:
        drawn.append((y, kwargs.get("label", "")))
        return original(self, y, *args, **kwargs)

    with mock.patch.object(Axes, "axhline", spy):
        assert write_chart(data, tmp_path / "c.png") is None
    assert drawn == [(4.5, "target mean (4.5)"), (9.0, "contract length (9)")]


def test_report_input_column_is_cut_at_a_word() -> None:
    from jarvis.evaluate import tail_words

    text = "Sam: " + " ".join(f"word{i}" for i in range(60)) + " you coming tonight?"
    cut = tail_words(text, 40)
    assert cut.startswith("…") and len(cut) <= 40
    assert cut.endswith("you coming tonight?")
    assert text.endswith(cut[1:]) and text[len(text) - len(cut)] == " "  # a whole first word
    assert tail_words("short", 40) == "short"


def test_eval_sample_temperature_and_seed(
    trained: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    from jarvis.evaluate import run_eval

    dataset, _ = trained
    model = tiny_model
    reports = [
        run_eval(
            dataset,
            split="train",
            model=str(model),
            sample=3,
            temperature=0.9,
            seed=5,
            max_tokens=6,
            out=tmp_path / f"r{k}",
        )  # fmt: skip
        for k in range(2)
    ]
    data = [json.loads((tmp_path / f"r{k}" / "report.json").read_text()) for k in range(2)]
    assert data[0]["records"] == 3
    assert data[0]["generation"] == {"temperature": 0.9, "max_tokens": 6, "seed": 5}
    replies = [(tmp_path / f"r{k}" / "replies.jsonl").read_text() for k in range(2)]
    assert replies[0] == replies[1]  # the same seed: the same sampled replies
    assert reports[0].to_dict()["records"] == 3
