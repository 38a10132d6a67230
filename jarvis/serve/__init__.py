"""`jarvis serve`: a warm model behind HTTP, every request held to the contract.

- `api`: request bodies to contract records and options (no HTTP stack);
- `scheduler`: the generation thread, continuous batching with mlx-lm's `BatchGenerator`;
- `app`: the Starlette routes (`/v1/reply`, `/v1/chat/completions`, `/v1/models`,
  `/healthz`, `/metrics`), run by uvicorn.
"""
