"""Every error jarvis raises on purpose, and the exit code the CLI maps it to.

The CLI catches `JarvisError` in one place (`jarvis.cli.main`) and exits with the
class's `exit_code`; the table is repeated in the README.
"""

from __future__ import annotations


class JarvisError(Exception):
    """Base class: an error jarvis explains to the user."""

    exit_code = 1


class CheckFailedError(JarvisError):
    """A verification or diff found a difference (like diff(1), exit 1)."""

    exit_code = 1


class UsageError(JarvisError):
    """An option or recipe setting is invalid, or names a tag no input has (names it)."""

    exit_code = 2


class ContractError(JarvisError):
    """A contract spec or template is invalid or cannot be found."""

    exit_code = 3


class ContractNotFoundError(ContractError):
    """No contract or version of that name exists in the contract root."""


class TemplateVariableError(ContractError):
    """A template uses a variable that is neither a schema field nor a parameter."""


class LockError(JarvisError):
    """A contract's content does not match `contracts.lock`, or the lock refuses a rewrite."""

    exit_code = 4


class InputError(JarvisError):
    """Input data is malformed: bad JSON, a schema violation, or an unreadable file."""

    exit_code = 5


class RecordError(InputError):
    """One record failed validation; names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class SpecialTokenError(RecordError):
    """A value contains a chat control string that the contract refuses."""


class StoreError(InputError):
    """A file that is not a readable jarvis exemplar store, or one for another retrieval."""


class DatasetError(JarvisError):
    """The dataset cannot be trained on: empty, too small, or fails a composition threshold."""

    exit_code = 6


class TokenizationError(JarvisError):
    """A row is longer than max_seq_length, or the runtime prompt is not a token prefix."""

    exit_code = 7


class ContractMismatchError(JarvisError):
    """An adapter was trained on a different contract, dataset or base model."""

    exit_code = 8


class OutputCheckError(JarvisError):
    """A generated reply failed one of the contract's output checks (`--strict`)."""

    exit_code = 9


class TrainingError(JarvisError):
    """Training failed: NaN loss, or mlx-lm raised while training."""

    exit_code = 10


class ModelError(JarvisError):
    """A base model, tokenizer or adapter could not be loaded."""

    exit_code = 11


class OutputExistsError(JarvisError):
    """The output path exists and `--force` was not given, or another jarvis run is writing it."""

    exit_code = 12


class OutputRefusedError(OutputExistsError):
    """The output is not jarvis's to replace: not written by jarvis, or it is or holds an input."""


class OutputWriteError(JarvisError):
    """The output could not be written (permissions, a full disk); the previous one is intact."""

    exit_code = 13


class PromptTooLongError(TokenizationError):
    """A runtime prompt does not fit the model's context with room for `max_tokens`."""


# Not a JarvisError: the CLI's last resort for an exception no module expected (a bug).
INTERNAL_ERROR = 70

# The one table the CLI and the README share: exit code -> meaning.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "a check or diff found a difference (verify, diff)",
    2: "usage error (bad option or argument)",
    3: "contract spec or template invalid, or not found",
    4: "contract content does not match contracts.lock",
    5: "input data malformed (file:line: field: reason)",
    6: "dataset not trainable (empty, too small, below a composition threshold)",
    7: "token length or prefix check failed, or a prompt longer than the model's context",
    8: "adapter does not match the contract, dataset or base model",
    9: "reply failed an output check (--strict)",
    10: "training failed (NaN loss or mlx-lm error)",
    11: "model, tokenizer or adapter could not be loaded",
    12: "output exists (use --force), is not jarvis's to replace, or is being written",
    13: "output could not be written (permissions, disk full); the previous one is intact",
    70: "internal error: a bug in jarvis (JARVIS_DEBUG=1 shows the traceback)",
    130: "interrupted (Ctrl-C, SIGINT), after cleaning up",
    143: "terminated (SIGTERM), after cleaning up",
}
