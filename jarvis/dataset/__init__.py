"""`render-dataset`: verified, composition-aware mlx-lm training data from one contract.

Two streaming passes keep memory bounded, one module per step:

1. Pass 1. `scan` is the hot loop: one task (a byte range of a JSONL file, or records read
   here) parsed, validated, rendered through the contract's one render path (`row`), token
   counted (`tokens`: the proven shortcuts), checked, hashed and spilled to shuffle buckets
   (`spill`), in this process or a worker. `records` cuts the inputs into tasks and
   commits their compact results in input order: rejects, duplicates (`dedup`), ids, token
   limits, tags and groups. `workers` decides where tasks run (`Workers`: here, and worker
   processes forked or started once measured cost says so) and shares pass 2 with a worker;
   `early` scans the first tasks while a tokenizer loads.
2. `plan`: assign splits (`jarvis.splits`), count what each holds, enforce `--min-ratio`
   and `--min-compliant`. `retrieval`, for a contract with `retrieval:`: build the exemplar
   store from the train split and re-render each row with its exemplars.
3. Pass 2, `write`: each bucket read back, sorted and turned into its rows per split and its
   records.jsonl entries (in every process), appended in bucket order to `train.jsonl`,
   `valid.jsonl`, `test.jsonl` and `records.jsonl`. So every file comes out in a
   deterministic shuffled order that does not depend on input order or process count.

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
