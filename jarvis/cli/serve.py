"""`jarvis serve`: load base and adapter once, check the stamp, then listen."""

from __future__ import annotations

import ipaddress
import os
import signal

import click

from jarvis.cli.common import get_root, root_option

API_KEY_ENV = "JARVIS_API_KEY"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("serve")
@click.option("--adapter", "--adapter-path", "adapter", type=click.Path(file_okay=False),
              help="Adapter folder; its stamp is checked before listening.")  # fmt: skip
@click.option("--model", help="Base model. Default: the one the adapter's stamp names.")
@click.option("--contract", "contract_ref", help="Contract ref. Default: the adapter's.")
@click.option("--exemplars", type=click.Path(dir_okay=False),
              help="Exemplar store, for a contract with retrieval.")  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", help=f"Required from clients (default ${API_KEY_ENV}); needed "
              "for a non-loopback --host.")  # fmt: skip
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Requests decoded together.")  # fmt: skip
@click.option("--max-queue", default=64, show_default=True, type=click.IntRange(1, 100_000),
              help="Requests waiting or running; more get 429.")  # fmt: skip
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds a request may take; then 504 and its slot back.")  # fmt: skip
@click.option("--max-body-bytes", default=1 << 20, show_default=True,
              type=click.IntRange(min=1024))  # fmt: skip
@click.option("--allow-mismatch", is_flag=True, help="Serve an adapter whose stamp differs.")
@root_option
@click.pass_context
def serve_cmd(
    ctx: click.Context, adapter: str | None, model: str | None, contract_ref: str | None,
    exemplars: str | None, host: str, port: int, api_key: str | None, max_batch: int,
    max_queue: int, timeout: float, max_body_bytes: int, allow_mismatch: bool,
) -> None:  # fmt: skip
    """Serve the contract over HTTP: POST /v1/reply, POST /v1/chat/completions (OpenAI),
    GET /v1/models, /healthz and /metrics. SIGTERM finishes the requests in flight."""
    import uvicorn

    from jarvis.engine import ReplyEngine
    from jarvis.serve.app import Server, Settings

    key = api_key or os.environ.get(API_KEY_ENV) or None
    if not _loopback(host):
        click.echo(f"warning: --host {host} is reachable from other machines", err=True)
        if key is None:
            raise click.UsageError(
                f"a non-loopback --host needs an API key: --api-key or ${API_KEY_ENV}"
            )
    if adapter is None and model is None:
        raise click.UsageError("give --adapter (or --model to serve a base model)")
    engine = ReplyEngine(
        model, adapter, contract=contract_ref, allow_mismatch=allow_mismatch,
        root=get_root(ctx), exemplars=exemplars,
    )  # fmt: skip
    if engine.store_note is not None:
        click.echo(f"note: {engine.store_note}", err=True)
    settings = Settings(key, max_body_bytes, timeout, max_batch, max_queue)
    server = Server(engine, settings)
    click.echo(
        f"serving {engine.contract.ref} ({engine.contract.short_fingerprint}) from "
        f"{engine.adapter or engine.model_id} on http://{host}:{port}", err=True,
    )  # fmt: skip
    config = uvicorn.Config(server.app(), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on")  # fmt: skip
    # uvicorn drains on SIGTERM, then re-raises it to the previous handler: a drained stop
    # is a clean exit (0), not the CLI's "terminated" (143).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    uvicorn.Server(config).run()
