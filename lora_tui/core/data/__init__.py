"""The dataset layer: read, detect format, normalise to chat messages, template, validate.

Public API (other layers code against these names):
``Example, Finding, LoadedDataset, load_examples, ChatFormatter, validate_dataset,
ValidationReport, TokenStats, split_examples, DataError``.

Pure Python: never imports textual or the UI, never prints, never writes the
user's files; transformers is only touched through a tokenizer passed in.
"""

from .load import load_examples, split_examples
from .records import DataError, Example, Finding, LoadedDataset, TokenStats, ValidationReport
from .template import ChatFormatter
from .validate import validate_dataset

__all__ = [
    "ChatFormatter", "DataError", "Example", "Finding", "LoadedDataset", "TokenStats", "ValidationReport",
    "load_examples", "split_examples", "validate_dataset",
]
