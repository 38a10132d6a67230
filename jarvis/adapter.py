"""The adapter's `jarvis` stamp: what it was trained on, written at training, checked at load.

mlx-lm loads any adapter onto any base model of the right shapes and never looks at the
prompt format. `jarvis train` adds a `jarvis` block to `adapter_config.json` (mlx-lm ignores
unknown keys); `check_adapter` compares it with the contract and the base model. No mlx here.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jarvis.contract import Contract
from jarvis.errors import ContractMismatchError, ModelError

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapters.safetensors"
BLOCK = "jarvis"
# Keys every stamp has; a block missing one is treated as a mismatch, never ignored.
REQUIRED_KEYS = ("contract", "version", "fingerprint", "base_model", "chat_template_sha256")


class UnstampedAdapterWarning(UserWarning):
    """The adapter has no `jarvis` block, so nothing ties it to a prompt format."""


class RagShapeWarning(UserWarning):
    """A prompt's RAG block is present (or absent) where the adapter's training rows had none
    (or all had one): a prompt shape the adapter did not train on."""


def rag_shape_warning(stamp: Mapping[str, Any] | None, has_block: bool) -> str | None:
    """The warning for a prompt with (or without) a caller-provided RAG block, or None.

    The stamp's `rag.train_share` decides: a block where under 5% of training rows had one,
    or none where over 95% had one.
    """
    rag = (stamp or {}).get("rag")
    if not isinstance(rag, dict) or "retrieval" in (stamp or {}):
        return None  # unknown (an older stamp), or the contract retrieves (checked by store)
    share = float(rag.get("train_share") or 0.0)
    field = rag.get("field")
    if has_block and share < 0.05:
        return (
            f"this prompt has a RAG block ({field}), but {share:.0%} of the adapter's training "
            f"rows had one: render the training records with {field!r} too"
        )
    if not has_block and share > 0.95:
        return (
            f"this prompt has no RAG block ({field}), but {share:.0%} of the adapter's "
            f"training rows had one: pass {field}= as in training"
        )
    return None


class AdapterMismatchWarning(UserWarning):
    """A stamp mismatch that the caller explicitly allowed (`allow_mismatch=True`)."""


def _canonical_sha(value: Any) -> str:
    data = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def chat_template_sha256(tokenizer: Any) -> str:
    """Return the sha256 of a tokenizer's chat template ("" hashed when it has none).

    Args:
        tokenizer: a `transformers` tokenizer or an mlx-lm `TokenizerWrapper`.
    """
    return _canonical_sha(getattr(tokenizer, "chat_template", None) or "")


def resolve_model_dir(model: str | os.PathLike[str]) -> Path | None:
    """Return the local folder of a model path or a cached hub id, or None if not local."""
    path = Path(model).expanduser()
    if path.exists():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(os.fspath(model), local_files_only=True))
    except Exception:  # noqa: BLE001 - any hub failure just means "not available locally"
        return None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def fetch_model(model: str | os.PathLike[str]) -> Path:
    """Return the local folder of a model: a path, a cached hub id, or a hub id downloaded now.

    Offline (`HF_HUB_OFFLINE=1`) an uncached hub id fails at once, without retries.

    Raises:
        ModelError: no such folder, or the hub id cannot be had (offline, unknown, no network).
    """
    name = os.fspath(model)
    local = resolve_model_dir(name)
    if local is not None:
        return local
    if name.startswith((os.sep, ".", "~")) or name.count("/") != 1:
        raise ModelError(
            f"{name}: model not found (no such folder, and not a hub id like org/name)"
        )
    if _offline():
        raise ModelError(
            f"{name}: model not found in the local hub cache, and HF_HUB_OFFLINE is set; "
            f"download it once online (`hf download {name}`), or pass a model folder"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name))
    except Exception as exc:  # noqa: BLE001 - network, auth and not-found errors alike
        raise ModelError(
            f"{name}: cannot download from the hub: {type(exc).__name__}: {exc}"
        ) from exc


def model_id(model: str | os.PathLike[str]) -> str:
    """Return how a model is recorded: an absolute path if it is local, else the hub id."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else os.fspath(model)


def model_config(model_dir: Path | None) -> dict[str, Any]:
    """Return a model folder's `config.json` as a dict ({} when missing or unreadable)."""
    if model_dir is None:
        return {}
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def config_sha256(model_dir: Path) -> str:
    """Return the sha256 of a model's `config.json`, canonicalised (key order ignored).

    Raises:
        ModelError: no readable config.json.
    """
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{model_dir}: no readable config.json: {exc}") from exc
    return _canonical_sha(config)


def weights_sha256(model_dir: Path) -> str | None:
    """Return a fingerprint of a model's weights, or None when it has no safetensors files.

    sha256 over each `*.safetensors` file's name and header (tensor names, dtypes, shapes) and
    the first 64 KiB of every tensor: a few MB read instead of the whole model, yet any
    fine-tune or fused adapter changes the start of the tensors it touched.
    """
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = fh.read(size)
            digest.update(path.name.encode() + b"\0" + header)
            try:
                tensors = json.loads(header)
            except ValueError as exc:
                raise ModelError(f"{path}: not a safetensors file: {exc}") from exc
            for name in sorted(k for k in tensors if k != "__metadata__"):
                start, end = tensors[name]["data_offsets"]
                fh.seek(8 + size + start)
                digest.update(fh.read(min(end - start, 1 << 16)))
    return digest.hexdigest()


def make_stamp(
    contract: Contract,
    *,
    base_model: str,
    base_config_sha256: str | None,
    chat_template_sha: str | None,
    enable_thinking: bool | None,
    manifest_sha256: str | None,
    dataset: str | None,
    base_weights_sha256: str | None = None,
    manifest: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the `jarvis` block written into `adapter_config.json`.

    The hashes are None only in `train-config` output for a hub id that is not cached. From
    the dataset's `manifest`, the stamp keeps what serving is checked against: the exemplar
    store trained with (`retrieval`) and the share of rows with a RAG block (`rag`).
    """
    from jarvis import __version__

    extra: dict[str, Any] = {}
    retrieval = (manifest or {}).get("retrieval")
    if isinstance(retrieval, dict):
        extra["retrieval"] = {
            k: retrieval.get(k) for k in ("fingerprint", "exemplars", "key", "config")
        }
    rag = (manifest or {}).get("rag")
    if isinstance(rag, dict):
        shares = rag.get("rows_with_block") or {}
        extra["rag"] = {"field": rag.get("field"), "train_share": shares.get("train", 0.0)}
    return {
        "contract": contract.name,
        "version": contract.version,
        "ref": contract.ref,
        "fingerprint": contract.fingerprint,
        "contract_root": str(contract.root),
        "dataset": dataset,
        "dataset_manifest_sha256": manifest_sha256,
        "base_model": base_model,
        "base_model_config_sha256": base_config_sha256,
        "base_model_weights_sha256": base_weights_sha256,
        "chat_template_sha256": chat_template_sha,
        "enable_thinking": enable_thinking,
        "jarvis_version": __version__,
        **extra,
    }


def check_stamp_store(
    stamp: Mapping[str, Any] | None, store: Any | None, *, where: str
) -> tuple[list[str], str | None]:
    """Compare the exemplar store an adapter was trained with and the one it is served with.

    Args:
        stamp: the adapter's stamp (None: unstamped, nothing to compare).
        store: the open `ExemplarStore` in use, or None.
        where: names the adapter in messages.

    Returns:
        `(mismatches, note)`: training with a store and serving without one (or the
        reverse) is a mismatch; a grown or other store is allowed, and described in `note`.
    """
    if stamp is None:
        return [], None
    trained = stamp.get("retrieval")
    if trained is None and store is None:
        return [], None
    if trained is None and store is not None:
        return [
            f"{where} was trained without an exemplar store, but is served with {store.path}: "
            "its prompts would have a RAG block the adapter never saw"
        ], None
    assert trained is not None
    count = trained.get("exemplars")
    if store is None:
        return [
            f"{where} was trained with an exemplar store ({count} exemplars, fingerprint "
            f"{_short(trained.get('fingerprint'))}) but is served without one: pass "
            "--exemplars STORE (the dataset's exemplars.sqlite, or a store built with "
            "`jarvis index build`)"
        ], None
    if store.fingerprint == trained.get("fingerprint"):
        return [], None
    if trained.get("fingerprint") in store.history:
        return [], (
            f"exemplar store {store.path} grew since training: {count} -> {store.count} "
            "exemplars (the new ones can be retrieved; allowed)"
        )
    return [], (
        f"exemplar store {store.path} is not the one trained with ({store.count} exemplars, "
        f"fingerprint {_short(store.fingerprint)}; training had {count}, "
        f"{_short(trained.get('fingerprint'))}); retrieval works the same, so it is allowed"
    )


def read_adapter_config(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an adapter folder's `adapter_config.json`.

    Raises:
        ModelError: the folder, the config or the weights file is missing or unreadable.
    """
    folder = Path(adapter_dir)
    if not folder.is_dir():
        raise ModelError(f"{folder}: adapter folder not found")
    path = folder / CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(f"{folder}: not an mlx-lm adapter (no {CONFIG_FILE})") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object")
    if not (folder / WEIGHTS_FILE).is_file():
        raise ModelError(f"{folder}: no {WEIGHTS_FILE} (did training finish?)")
    return config


def read_stamp(adapter_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Return the adapter's `jarvis` block, or None when it has none.

    Raises:
        ModelError: the adapter folder is not readable.
        ContractMismatchError: the block is there but not a mapping (a damaged stamp is a
            mismatch, never "no stamp").
    """
    config = read_adapter_config(adapter_dir)
    if BLOCK not in config:
        return None
    block = config[BLOCK]
    if not isinstance(block, dict):
        raise ContractMismatchError(
            f"adapter {adapter_dir}: {CONFIG_FILE}: the {BLOCK!r} stamp is not a mapping "
            f"({type(block).__name__}); retrain the adapter with `jarvis train`"
        )
    return block


def stamp_contract(
    stamp: Mapping[str, Any] | None, root: str | os.PathLike[str] | None = None
) -> tuple[str | None, str | None]:
    """The contract an adapter was trained on, as (ref, root to load it from).

    `root` when given wins; else the stamp's recorded root when it still exists.
    """
    if stamp is None:
        return None, None if root is None else os.fspath(root)
    ref = stamp.get("ref") or (
        f"{stamp['contract']}@{stamp['version']}" if "contract" in stamp else None
    )
    recorded = stamp.get("contract_root")
    if root is None and isinstance(recorded, str) and (Path(recorded) / "contracts").is_dir():
        root = recorded
    return (str(ref) if ref else None), (None if root is None else os.fspath(root))


def _short(fingerprint: Any) -> str:
    return str(fingerprint)[:12]


def check_stamp(
    stamp: Mapping[str, Any] | None,
    contract: Contract,
    *,
    where: str,
) -> tuple[list[str], list[str]]:
    """Compare a stamp with a contract: name, version and fingerprint.

    Returns:
        `(mismatches, warnings)` as messages; both empty when everything matches.
    """
    if stamp is None:
        return [], [
            f"{where} has no jarvis stamp: nothing ties it to {contract.ref}; "
            "retrain it with `jarvis train` to make the prompt format checkable"
        ]
    missing = [k for k in REQUIRED_KEYS if k not in stamp]
    if missing:
        return [f"{where}: malformed jarvis stamp (missing {', '.join(missing)})"], []
    trained = str(stamp.get("ref") or f"{stamp['contract']}@{stamp['version']}")
    if (
        stamp["contract"] != contract.name
        or stamp["version"] != contract.version
        or stamp["fingerprint"] != contract.fingerprint
    ):
        message = (
            f"{where} was trained on {trained} (fingerprint {_short(stamp['fingerprint'])}) "
            f"but the contract is {contract.ref} (fingerprint {contract.short_fingerprint})"
        )
        if stamp["contract"] == contract.name and stamp["version"] != contract.version:
            # Typically a `contract bump` since training: the old version still loads.
            message += f"; to serve it as trained, pass --contract {trained}"
        return [message], []
    return [], []


def check_stamp_base(
    stamp: Mapping[str, Any] | None,
    *,
    where: str,
    chat_template_sha: str | None,
    base_config_sha256: str | None,
    base_weights_sha256: str | None,
    base: str | None = None,
) -> list[str]:
    """Compare a stamp with the base model it is about to be used with.

    A hash given as None, or missing from an older stamp, is not compared. `base` names the
    model in use, so that a message names both bases.

    Returns:
        Mismatch messages (chat template, config.json, weights); empty when they match.
    """
    if stamp is None:
        return []
    problems: list[str] = []
    this = f"this base {base}" if base else "this base"
    recorded_template = stamp.get("chat_template_sha256")
    if chat_template_sha and recorded_template and recorded_template != chat_template_sha:
        problems.append(
            f"{where} was trained with another chat template "
            f"({_short(recorded_template)}, {this} has {_short(chat_template_sha)}; "
            f"trained on base {stamp.get('base_model')})"
        )
    recorded = stamp.get("base_model_config_sha256")
    if base_config_sha256 and recorded and recorded != base_config_sha256:
        problems.append(
            f"{where} was trained on another base model: {stamp.get('base_model')} "
            f"(config {_short(recorded)}), not {this} (config {_short(base_config_sha256)})"
        )
    weights = stamp.get("base_model_weights_sha256")
    if base_weights_sha256 and weights and weights != base_weights_sha256:
        # mlx-lm loads an adapter onto any base of the right shapes; only this catches it.
        problems.append(
            f"{where} was trained on other base weights: {stamp.get('base_model')} "
            f"(weights {_short(weights)}), not {this} (weights {_short(base_weights_sha256)})"
        )
    return problems


# safetensors dtype -> (numpy dtype to view the bytes as, exponent mask or None for floats
# numpy knows). bfloat16 has no numpy type: its exponent bits all set means Inf or NaN.
_FLOAT_VIEWS: dict[str, tuple[str, int | None]] = {
    "F64": ("<f8", None),
    "F32": ("<f4", None),
    "F16": ("<f2", None),
    "BF16": ("<u2", 0x7F80),
}


def nonfinite_tensors(path: str | os.PathLike[str]) -> list[str]:
    """Return the names of the tensors of a safetensors file holding NaN or Inf.

    Reads the file through a memory map with numpy (no mlx): an adapter whose weights are
    not finite generates nothing but an empty reply, silently.

    Raises:
        ModelError: the file is not a readable safetensors file.
    """
    import numpy as np

    file = Path(path)
    try:
        with file.open("rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        data = np.memmap(file, dtype=np.uint8, mode="r", offset=8 + size)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{file}: not a readable safetensors file: {exc}") from exc
    if not isinstance(header, dict):
        raise ModelError(f"{file}: not a readable safetensors file: bad header")
    bad: list[str] = []
    for name in sorted(k for k in header if k != "__metadata__"):
        info = header[name]
        view = _FLOAT_VIEWS.get(str(info.get("dtype")) if isinstance(info, dict) else "")
        if view is None:
            continue
        try:
            start, end = (int(x) for x in info["data_offsets"])
            values = data[start:end].view(np.dtype(view[0]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{file}: tensor {name}: bad data offsets: {exc}") from exc
        mask = view[1]
        finite = (
            bool(np.isfinite(values).all()) if mask is None else not ((values & mask) == mask).any()
        )
        if not finite:
            bad.append(name)
    del data
    return bad


def check_adapter_weights(adapter_dir: str | os.PathLike[str]) -> None:
    """Refuse an adapter whose weights hold NaN or Inf.

    Raises:
        ModelError: non-finite weights (names the first tensor), or an unreadable file.
    """
    path = Path(adapter_dir) / WEIGHTS_FILE
    if not path.is_file():
        return  # mlx-lm reports the missing file itself
    bad = nonfinite_tensors(path)
    if bad:
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise ModelError(
            f"{path}: non-finite weights (NaN or Inf) in {bad[0]}{more}; the adapter would "
            "reply with nothing. Retrain it (a lower --learning-rate helps)"
        )


def check_adapter(
    adapter_dir: str | os.PathLike[str],
    contract: Contract,
    *,
    base_model: str | os.PathLike[str] | None = None,
    allow_mismatch: bool = False,
) -> list[str]:
    """Check an adapter's `jarvis` stamp against a contract and, optionally, a base model.

    Args:
        adapter_dir: the adapter folder (`adapter_config.json`, `adapters.safetensors`).
        contract: the contract the caller will render prompts with.
        base_model: a model path or cached hub id; its chat template, config.json and
            weights hashes are compared with the stamp (nothing is loaded into mlx).
        allow_mismatch: return mismatches as warnings instead of raising.

    Returns:
        Warning messages: no stamp, or mismatches that were allowed. Empty when all match.

    Raises:
        ContractMismatchError: the stamp names another contract version, fingerprint, chat
            template or base model (and `allow_mismatch` is false).
        ModelError: the adapter or the base model cannot be read.
    """
    stamp = read_stamp(adapter_dir)
    template_sha = config_sha = weights_sha = None
    if base_model is not None and stamp is not None:
        folder = resolve_model_dir(base_model)
        if folder is None:
            raise ModelError(f"{base_model}: model not found locally")
        from jarvis.chat import load_tokenizer

        template_sha = chat_template_sha256(load_tokenizer(folder))
        config_sha = config_sha256(folder)
        weights_sha = weights_sha256(folder)
    where = f"adapter {adapter_dir}"
    problems, notes = check_stamp(stamp, contract, where=where)
    problems += check_stamp_base(
        stamp,
        where=where,
        chat_template_sha=template_sha,
        base_config_sha256=config_sha,
        base_weights_sha256=weights_sha,
        base=None if base_model is None else str(base_model),
    )
    return raise_or_allow(problems, allow_mismatch=allow_mismatch) + notes


def raise_or_allow(problems: list[str], *, allow_mismatch: bool) -> list[str]:
    """Raise `ContractMismatchError` for `problems`, or return them as allowed warnings.

    Raises:
        ContractMismatchError: there are problems and `allow_mismatch` is false.
    """
    if problems and not allow_mismatch:
        hint = "; retrain the adapter, or pass --allow-mismatch to load it anyway"
        raise ContractMismatchError("; ".join(problems) + hint)
    return [f"{p} (allowed by --allow-mismatch)" for p in problems]


def emit_warnings(messages: list[str], *, stamped: bool) -> None:
    """Issue each message as a Python warning of the matching class."""
    category = AdapterMismatchWarning if stamped else UnstampedAdapterWarning
    for message in messages:
        warnings.warn(message, category, stacklevel=3)


def adapter_info(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise an adapter: its stamp (or None), where it is, and when its weights were
    written (the file's time: the stamp holds no clock, so training stays byte-identical).

    Raises:
        ModelError: not an mlx-lm adapter folder.
        ContractMismatchError: a damaged stamp.
    """
    import datetime

    folder = Path(adapter_dir)
    stamp = read_stamp(folder)
    weights = folder / WEIGHTS_FILE
    when = datetime.datetime.fromtimestamp(weights.stat().st_mtime, tz=datetime.UTC)
    return {
        "path": str(folder),
        "stamp": stamp,
        "written": when.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "weights_bytes": weights.stat().st_size,
    }


def find_adapters(folder: str | os.PathLike[str]) -> list[Path]:
    """Return every adapter folder (one holding `adapter_config.json`) under `folder`, sorted.

    Raises:
        ModelError: `folder` is not a folder.
    """
    base = Path(folder)
    if not base.is_dir():
        raise ModelError(f"{base}: no such folder")
    found = {p.parent for p in base.rglob(CONFIG_FILE) if (p.parent / WEIGHTS_FILE).is_file()}
    hidden = [p for p in found if any(x.startswith(".") for x in p.relative_to(base).parts)]
    return sorted(found - set(hidden))
