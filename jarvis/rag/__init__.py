"""Retrieval-consistent exemplars: one retriever fills the RAG block of training rows and
runtime prompts alike.

- `terms`: the Unicode-aware tokeniser (diacritics folded, emoji and CJK kept as terms).
- `store`: the exemplar store, one SQLite file with an FTS5 index ranked by BM25.
- `retrieve`: what a contract's `retrieval:` block means for one record (its query, its own
  exemplar, the exclusions), used by render-dataset, the prompt builders and the engine.
"""

from jarvis.rag.retrieve import exemplar_of, fill_exemplars, query_text, retrieve
from jarvis.rag.store import ExemplarStore, StoredExemplar, add_to_store, build_store

__all__ = [
    "ExemplarStore",
    "StoredExemplar",
    "add_to_store",
    "build_store",
    "exemplar_of",
    "fill_exemplars",
    "query_text",
    "retrieve",
]
