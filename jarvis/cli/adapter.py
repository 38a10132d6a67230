"""`jarvis adapter show | list`: what an adapter was trained on, without loading it."""

from __future__ import annotations

from typing import Any

import click

from jarvis.cli.common import echo_json


@click.group("adapter")
def adapter() -> None:
    """Inspect adapters: their jarvis stamp, without loading mlx."""


def _short(value: Any, n: int = 12) -> str:
    return "-" if value is None else str(value)[:n]


@adapter.command("show")
@click.argument("adapter_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def adapter_show(adapter_dir: str, as_json: bool) -> None:
    """Print ADAPTER_DIR's stamp: contract, fingerprint, base model, dataset, date."""
    from jarvis.adapter import adapter_info

    info = adapter_info(adapter_dir)
    if as_json:
        echo_json(info)
        return
    stamp = info["stamp"]
    click.echo(f"adapter: {info['path']}")
    click.echo(f"written: {info['written']} ({info['weights_bytes']:,} bytes of weights)")
    if stamp is None:
        click.echo("stamp: none (not trained by `jarvis train`; nothing ties it to a contract)")
        return
    click.echo(f"contract: {stamp.get('ref')}  fingerprint {stamp.get('fingerprint')}")
    if stamp.get("contract_root"):
        click.echo(f"contract root: {stamp['contract_root']}")
    click.echo(f"base model: {stamp.get('base_model')}")
    click.echo(
        f"  config {_short(stamp.get('base_model_config_sha256'))}  weights "
        f"{_short(stamp.get('base_model_weights_sha256'))}  chat template "
        f"{_short(stamp.get('chat_template_sha256'))}"
    )
    click.echo(
        f"dataset: {stamp.get('dataset')}  manifest {_short(stamp.get('dataset_manifest_sha256'))}"
    )
    click.echo(f"jarvis: {stamp.get('jarvis_version')}")


@adapter.command("list")
@click.argument("folder", default=".", type=click.Path(file_okay=False))
def adapter_list(folder: str) -> None:
    """List the adapters under FOLDER (default: here) with their contract and base."""
    import os

    from jarvis.adapter import adapter_info, find_adapters
    from jarvis.errors import JarvisError

    rows = [("ADAPTER", "CONTRACT", "FINGERPRINT", "BASE", "WRITTEN")]
    for path in find_adapters(folder):
        try:
            info = adapter_info(path)
        except JarvisError as exc:
            rows.append((os.path.relpath(path, folder), "damaged", str(exc)[:40], "-", "-"))
            continue
        stamp = info["stamp"] or {}
        rows.append(
            (
                os.path.relpath(path, folder),
                str(stamp.get("ref") or "unstamped"),
                _short(stamp.get("fingerprint")),
                str(stamp.get("base_model") or "-"),
                info["written"],
            )
        )
    if len(rows) == 1:
        click.echo(f"no adapters under {folder}")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
