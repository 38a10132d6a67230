"""jarvis: one versioned prompt contract renders both the training data and the runtime prompt.

Importing jarvis never imports mlx; `ReplyEngine` loads it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jarvis.contract import Contract, load_contract
from jarvis.errors import ContractMismatchError, JarvisError
from jarvis.prompt import Prompt, build_prompt, build_simple_reply_prompt, render_example

if TYPE_CHECKING:
    from jarvis.engine import Reply, ReplyEngine

__version__ = "0.1.0"

__all__ = [
    "Contract",
    "ContractMismatchError",
    "JarvisError",
    "Prompt",
    "Reply",
    "ReplyEngine",
    "__version__",
    "build_prompt",
    "build_simple_reply_prompt",
    "load_contract",
    "render_example",
]


def __getattr__(name: str) -> Any:
    # Lazy: the engine imports mlx, which `jarvis --help` and render-dataset must not pay for.
    if name in ("ReplyEngine", "Reply"):
        from jarvis import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'jarvis' has no attribute {name!r}")
