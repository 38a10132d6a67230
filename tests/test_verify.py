"""`jarvis verify DATASET_DIR`: fingerprint, files, byte-exact rows, composition, token prefix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from contract_root import add_version, copy_root
from jarvis.cli import cli
from jarvis.dataset import Recipe, render_dataset
from jarvis.lock import write_lock

RECORDS = [
    {
        "messages": [{"sender": "Sam", "text": f"question {i}?"}],
        "reply": f"answer {i}",
        "thread": f"t{i}",
    }
    for i in range(10)
]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(contract root, dataset rendered under reply@1 in that root)."""
    base = tmp_path_factory.mktemp("verify")
    root = copy_root(base / "root")
    src = base / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    recipe = Recipe.build(
        contract="reply@1",
        inputs=[f"perfect={src}"],
        split=(0.6, 0.2, 0.2),
        batch_size=2,
        repeat={"perfect": 2},
        min_ratio={"perfect": 0.5},
        min_compliant=0.9,
    )
    render_dataset(recipe, base / "ds", root=root)
    return root, base / "ds"


@pytest.fixture
def copy(rendered: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the root and dataset that a test may edit."""
    root, ds = rendered
    shutil.copytree(root, tmp_path / "root")
    shutil.copytree(ds, tmp_path / "ds")
    return tmp_path / "root", tmp_path / "ds"


def verify(root: Path, *args: str) -> tuple[int, list[str], str]:
    result = CliRunner().invoke(cli, ["--root", str(root), "verify", *args])
    return result.exit_code, result.stdout.splitlines(), result.stderr


def test_fresh_dataset_passes(rendered: tuple[Path, Path]) -> None:
    root, ds = rendered
    code, lines, err = verify(root, str(ds))
    assert code == 0, lines
    assert err == ""
    assert lines[0] == f"dataset: {ds}"
    assert [ln.split(":")[0] for ln in lines[1:-1]] == [
        "PASS manifest",
        "PASS contract",
        "PASS files",
        "PASS rows",
        "PASS composition",
    ]
    assert lines[3] == "PASS files: 4 files match their sha256 and row counts"
    assert lines[4] == "PASS rows: 16 rows (10 of 10 records) re-render byte for byte"
    assert lines[5] == (
        "PASS composition: train 12 rows, perfect 100.0% (min 50.0%), compliant 100.0% (min 90.0%)"
    )
    assert lines[-1] == "ok: all 5 checks passed"


def test_edited_locked_template_fails_naming_the_fingerprint(copy: tuple[Path, Path]) -> None:
    root, ds = copy
    system = root / "prompts" / "reply" / "v1" / "system.j2"
    system.write_text(system.read_text() + "- Never use emoji.\n")
    code, lines, err = verify(root, str(ds))
    assert code == 1
    contract = next(ln for ln in lines if ln.startswith("FAIL contract: "))
    assert (
        "fingerprint differs: the dataset was rendered under reply@1 750c23ddb5c8, reply@1 is now "
        in contract
    )
    assert "changed since it was locked: prompts/reply/v1/system.j2" in contract
    rows = next(ln for ln in lines if ln.startswith("FAIL rows: "))
    assert "differs from its re-rendering at byte" in rows and "Never use emoji" in rows
    assert lines[-1] == "2 of 5 checks failed: contract, rows"
    assert err == "error: verification failed: contract, rows\n"


def test_new_version_makes_the_dataset_stale(copy: tuple[Path, Path]) -> None:
    root, ds = copy
    system = add_version(root, "reply", 1, 2) / "system.j2"
    system.write_text(system.read_text().replace("Reply with", "Answer with"))
    write_lock(root)
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    assert lines[2].startswith(
        "FAIL contract: fingerprint differs: the dataset was rendered under reply@1 750c23ddb5c8, "
        "but the current version is reply@2 "
    )
    assert "(changed: prompts/reply/vN/system.j2, prompts/reply/vN/user.j2)" in lines[2]
    assert lines[-1] == "1 of 5 checks failed: contract"
    # An app that pins reply@1 says so, and the dataset is current for it.
    code, lines, _ = verify(root, str(ds), "--contract", "reply@1")
    assert code == 0
    assert lines[2] == (
        "PASS contract: reply@1 fingerprint 750c23ddb5c8 matches the manifest and "
        "--contract reply@1"
    )


def test_new_version_copied_as_is_names_only_the_edited_file(copy: tuple[Path, Path]) -> None:
    # The README's recipe: copy v1/ to v2/ and edit one line. v2/user.j2 still includes
    # "v1/exemplars.j2", a part both versions share unchanged: it must not be reported.
    root, ds = copy
    folder = root / "prompts" / "reply"
    shutil.copytree(folder / "v1", folder / "v2")
    spec = root / "contracts" / "reply.yaml"
    text = spec.read_text()
    spec.write_text(text + text[text.index("  1:\n") :].replace("  1:\n", "  2:\n", 1))
    system = folder / "v2" / "system.j2"
    system.write_text(system.read_text().replace("Reply with", "Answer with"))
    write_lock(root)
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    assert lines[2].endswith(
        "(changed: prompts/reply/vN/system.j2); prompts built with reply@2 are not what these "
        "rows trained on: re-render with --contract reply@2, or verify with --contract reply@1 "
        "if the app pins it"
    ), lines[2]


def test_tampered_row_fails_sha_and_rows(copy: tuple[Path, Path]) -> None:
    root, ds = copy
    train = ds / "train.jsonl"
    train.write_text(train.read_text().replace("answer", "ANSWER", 1))
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    files = next(ln for ln in lines if ln.startswith("FAIL files: "))
    assert files.startswith("FAIL files: train.jsonl sha256 ") and "!= manifest" in files
    assert any(ln.startswith("FAIL rows: ") and "train.jsonl:1 differs" in ln for ln in lines)


def test_dropped_row_fails_the_row_count(copy: tuple[Path, Path]) -> None:
    root, ds = copy
    train = ds / "train.jsonl"
    train.write_text("".join(train.read_text().splitlines(keepends=True)[1:]))
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    files = next(ln for ln in lines if ln.startswith("FAIL files: "))
    assert files.endswith("train.jsonl has 11 rows, manifest says 12")


def test_tampered_manifest(copy: tuple[Path, Path]) -> None:
    root, ds = copy
    manifest = json.loads((ds / "manifest.json").read_text())
    manifest["contract"]["fingerprint"] = "0" * 64
    (ds / "manifest.json").write_text(json.dumps(manifest))
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    assert any(
        ln.startswith(
            "FAIL contract: fingerprint differs: the dataset was rendered under reply@1 "
            "000000000000, the contract is now 750c23ddb5c8"
        )
        for ln in lines
    )
    del manifest["files"]
    (ds / "manifest.json").write_text(json.dumps(manifest))
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    assert lines[1:] == [
        f"FAIL manifest: {ds / 'manifest.json'}: malformed manifest: missing files",
        "1 of 1 checks failed: manifest",
    ]


def test_composition_recounted_from_the_files(copy: tuple[Path, Path]) -> None:
    root, ds = copy
    train = ds / "train.jsonl"
    kept = train.read_text().splitlines(keepends=True)[:1]
    train.write_text("".join(kept))
    code, lines, _ = verify(root, str(ds))
    assert code == 1
    comp = next(ln for ln in lines if ln.startswith("FAIL composition: "))
    assert "train has 1 rows, the manifest says 12" in comp
    assert "train has 1 rows, fewer than min_split_rows 2" in comp


def test_sample_and_json(rendered: tuple[Path, Path]) -> None:
    root, ds = rendered
    code, lines, _ = verify(root, str(ds), "--sample", "3", "--json")
    assert code == 0
    data = json.loads("\n".join(lines))
    assert data["ok"] is True and data["failed"] == []
    rows = next(c for c in data["checks"] if c["name"] == "rows")
    assert rows["detail"].endswith("(3 of 10 records) re-render byte for byte")


def test_token_prefix_with_tokenizer(
    rendered: tuple[Path, Path], tiny_model: Path, tmp_path: Path
) -> None:
    root, ds = rendered
    code, lines, _ = verify(root, str(ds), "--tokenizer", str(tiny_model))
    assert code == 0, lines
    assert any(
        ln.startswith("PASS token-prefix: the runtime prompt's tokens are a prefix of all 10")
        for ln in lines
    )
    # The same tokenizer with Mistral-Nemo's template, which drops the system prompt from rows.
    tok = tmp_path / "tok"
    shutil.copytree(tiny_model, tok)
    config = json.loads((tok / "tokenizer_config.json").read_text())
    nemo = Path(__file__).parent / "fixtures" / "templates" / "mistral-nemo-instruct-2407.jinja"
    config["chat_template"] = nemo.read_text(encoding="utf-8")
    (tok / "tokenizer_config.json").write_text(json.dumps(config))
    (tok / "chat_template.jinja").unlink(missing_ok=True)
    code, lines, _ = verify(root, str(ds), "--tokenizer", str(tok), "--sample", "2")
    assert code == 1
    fail = next(ln for ln in lines if ln.startswith("FAIL token-prefix: 2 of 2 rows: "))
    assert (
        "first divergence at token" in fail
        and "runtime prompt [" in fail
        and "training row [" in fail
    )


def test_adapter_without_stamp(rendered: tuple[Path, Path], tmp_path: Path) -> None:
    root, ds = rendered
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapters.safetensors").write_bytes(b"")
    code, lines, _ = verify(root, str(ds), "--adapter", str(adapter))
    assert code == 1
    assert (
        f"FAIL adapter: {adapter} has no jarvis stamp: nothing ties it to this dataset; "
        "train it with `jarvis train`"
    ) in lines


def test_verify_does_not_import_mlx(rendered: tuple[Path, Path]) -> None:
    root, ds = rendered
    fixtures = Path(__file__).parent / "fixtures" / "templates"
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from jarvis.cli import cli\n"
        f"r = CliRunner().invoke(cli, ['--root', {str(root)!r}, 'verify', {str(ds)!r}, "
        f"'--chat-template', {str(fixtures / 'qwen3.jinja')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert not [m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_lm'))]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
