"""`render-dataset`: verified, composition-aware mlx-lm training data from one contract.

Two streaming passes keep memory bounded, one module per step:

1. `records` (the hot loop): read every input record, validate it, render its row through
   the contract's one render path, run the output checks (and the token checks with a
   tokenizer), and spill the row to one of `BUCKETS` temp files chosen by its shuffle hash.
   Per record only a few numbers stay in memory (compact arrays).
2. `plan`: assign splits (`jarvis.splits`), count what each holds, enforce `--min-ratio`
   and `--min-compliant`. `retrieval`, for a contract with `retrieval:`: build the exemplar
   store from the train split and re-render each row with its exemplars.
3. `write`: read the buckets in hash order, sort each, and append its rows to `train.jsonl`,
   `valid.jsonl` and `test.jsonl`. So every file comes out in a deterministic shuffled order
   that does not depend on input order.

`recipe` holds the settings, `manifest` what is written about the result (and reads a dataset
folder back), `pipeline` the command itself: everything is written into a temp folder beside
the output and renamed into place at the end.
"""

from jarvis.dataset.manifest import (
    LOW_COMPLIANCE,
    composition_warnings,
    format_summary,
    load_manifest,
    manifest_root,
    read_records,
)
from jarvis.dataset.pipeline import render_dataset
from jarvis.dataset.recipe import (
    BUCKETS,
    MANIFEST,
    RECORDS,
    REJECTS,
    Format,
    Recipe,
    parse_assignments,
)
from jarvis.dataset.retrieval import EXEMPLARS
from jarvis.dataset.row import RowRenderer

__all__ = [
    "BUCKETS",
    "EXEMPLARS",
    "LOW_COMPLIANCE",
    "MANIFEST",
    "RECORDS",
    "REJECTS",
    "Format",
    "Recipe",
    "RowRenderer",
    "composition_warnings",
    "format_summary",
    "load_manifest",
    "manifest_root",
    "parse_assignments",
    "read_records",
    "render_dataset",
]
