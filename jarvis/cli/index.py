"""`jarvis index`: build, grow, show and query an exemplar store (one SQLite file)."""

from __future__ import annotations

import click

from jarvis.cli.common import echo_json, get_root, root_option


@click.group("index")
def index() -> None:
    """Exemplar stores: the past replies a retrieval contract puts in its RAG block."""


@index.command("build")
@click.option("--contract", "contract_ref", default="reply", show_default=True,
              help="A contract version with a `retrieval:` block.")  # fmt: skip
@click.option("--input", "inputs", multiple=True, required=True,
              help="Records (a JSONL/JSON file or folder), e.g. a whole history.")  # fmt: skip
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The store file.")
@click.option("--force", is_flag=True, help="Replace an existing store (only a jarvis store).")
@root_option
@click.pass_context
def build_cmd(
    ctx: click.Context, contract_ref: str, inputs: tuple[str, ...], out: str, force: bool
) -> None:
    """Build a store from records: each becomes (its query text, its reply)."""
    from jarvis.contract import load_contract
    from jarvis.rag.build import read_exemplars
    from jarvis.rag.store import build_store

    contract = load_contract(contract_ref, root=get_root(ctx))
    harvest = read_exemplars(contract, inputs)
    assert contract.retrieval_key is not None  # read_exemplars refused a contract without one
    fingerprint = build_store(
        out, harvest.exemplars, contract=contract.name, key=contract.retrieval_key,
        built_by=f"jarvis index build --contract {contract.ref}", force=force,
    )  # fmt: skip
    count = len({e.id for e in harvest.exemplars})
    click.echo(
        f"wrote {out}: {count} exemplars from {harvest.records} records "
        f"({harvest.skipped} without a reply or a message skipped), {contract.ref}, "
        f"fingerprint {fingerprint[:12]}"
    )


@index.command("add")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("--contract", "contract_ref", default="reply", show_default=True,
              help="The contract the store was built for.")  # fmt: skip
@click.option("--input", "inputs", multiple=True, required=True, help="New records.")
@root_option
@click.pass_context
def add_cmd(ctx: click.Context, store: str, contract_ref: str, inputs: tuple[str, ...]) -> None:
    """Append new records to STORE in one transaction (readers see all or none)."""
    from jarvis.contract import load_contract
    from jarvis.rag.build import read_exemplars
    from jarvis.rag.retrieve import open_store
    from jarvis.rag.store import add_to_store

    contract = load_contract(contract_ref, root=get_root(ctx))
    open_store(contract, store).close()
    harvest = read_exemplars(contract, inputs)
    assert contract.retrieval_key is not None
    added, present, fingerprint = add_to_store(store, harvest.exemplars, key=contract.retrieval_key)
    click.echo(
        f"{store}: added {added} exemplars ({present} already present, {harvest.skipped} "
        f"without a reply or a message skipped), fingerprint {fingerprint[:12]}"
    )


@index.command("show")
@click.argument("store", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def show_cmd(store: str, as_json: bool) -> None:
    """Show a store: contract, exemplar count, fingerprint and its history."""
    from jarvis.rag.store import ExemplarStore

    with ExemplarStore(store) as opened:
        info = opened.info()
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['path']}: {info['exemplars']} exemplars for {info['contract']}")
    click.echo(f"  fingerprint   {info['fingerprint'][:12]}")
    click.echo(f"  retrieval key {info['retrieval_key'][:12]}")
    click.echo(f"  built by      {info['built_by']}")
    click.echo(f"  grown         {len(info['history'])} time(s) by `jarvis index add`")


@index.command("query")
@click.argument("store", type=click.Path(dir_okay=False))
@click.argument("text")
@click.option("--contract", "contract_ref", default="reply", show_default=True)
@click.option("--thread", help="Leave this thread's exemplars out (as a runtime prompt does).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@root_option
@click.pass_context
def query_cmd(
    ctx: click.Context, store: str, text: str, contract_ref: str, thread: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Show what the contract retrieves from STORE for a message TEXT."""
    from jarvis.contract import load_contract
    from jarvis.rag.retrieve import open_store

    contract = load_contract(contract_ref, root=get_root(ctx))
    spec = contract.retrieval
    with open_store(contract, store) as opened:
        assert spec is not None  # open_store refused a contract without retrieval
        hits = opened.search(
            text, spec.k, exclude_thread=thread if spec.exclude_thread else None,
            min_score=spec.min_score,
        )  # fmt: skip
    rows = [
        {"id": h.exemplar.id, "score": round(h.score, 4), "message": h.exemplar.message,
         "reply": h.exemplar.reply}
        for h in hits
    ]  # fmt: skip
    if as_json:
        echo_json({"query": text, "exemplars": rows})
        return
    if not rows:
        click.echo("no exemplars (no term of the message matches, or only stop words)")
    for r in rows:
        click.echo(f"{r['score']:>8.3f}  {r['id']}: them: {r['message']!r} -> you: {r['reply']!r}")
