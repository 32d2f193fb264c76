"""English sentences for the text models of the zoo, from documents every CPython install ships.

Calibration and evaluation come from different documents, so they never share a sentence:

* ``reference_sentences()``: the Python Language Reference as shipped in ``pydoc_data/topics.py``
  (the text ``help("if")`` prints);
* ``docstring_sentences()``: the docstrings of a fixed list of standard-library modules
  (argparse, logging, email, http, ...), minus any sentence that is also in the reference.

Sentences are plain prose: 5–60 words, start with a capital and end with . ! or ?, no code
(``=``, brackets, backticks, dotted names), indented blocks and list items dropped,
deduplicated, in document order. Both lists depend only on the Python version (3.10+).
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterable, Iterator

MIN_WORDS, MAX_WORDS = 5, 60

# Standard-library modules whose docstrings make the evaluation sentences (pure Python, always
# installed; none of them is in pydoc_data's topics).
DOC_MODULES = (
    "argparse", "logging", "email.message", "http.client", "json", "textwrap", "unittest.case",
    "asyncio.tasks", "collections", "functools", "subprocess", "threading", "shutil", "tarfile",
    "zipfile", "csv", "datetime", "fractions", "random", "statistics", "socket", "string",
    "tempfile", "heapq", "bisect", "configparser", "optparse", "smtplib", "ftplib", "imaplib",
    "calendar", "difflib", "doctest", "pathlib", "typing", "enum", "dataclasses", "contextlib",
    "queue", "sched", "selectors", "urllib.request", "urllib.parse", "pdb", "codecs", "gettext",
    "inspect", "ast", "tokenize", "trace", "timeit", "pprint", "copy", "weakref", "abc",
    "numbers", "operator",
)  # fmt: skip

_CODE = re.compile(r"[=<>{}\[\]|*_`\\#@$~^]|\(\)|::|\.\.\.|\w\.\w|--")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def split_sentences(paragraph: str) -> Iterator[str]:
    """The prose sentences of one paragraph (see the module docstring for the filter)."""
    for s in _SPLIT.split(re.sub(r"\s+", " ", paragraph).strip()):
        s = s.strip()
        if not MIN_WORDS <= len(s.split()) <= MAX_WORDS:
            continue
        if not re.match(r"[A-Z][a-z]", s) or s[-1] not in ".!?" or s.count(":") > 1:
            continue
        if _CODE.search(s):
            continue
        if sum(c.isalpha() or c.isspace() for c in s) < 0.93 * len(s):
            continue
        yield s


def prose_sentences(texts: Iterable[str]) -> list[str]:
    """Deduplicated prose sentences of ``texts``, paragraph by paragraph, in order."""
    out: list[str] = []
    for text in texts:
        for para in re.split(r"\n\s*\n", text):
            if para.startswith(" ") or para.lstrip().startswith((">>>", "*", "-")):
                continue  # code samples, tables and list items
            out.extend(split_sentences(para))
    return list(dict.fromkeys(out))


def reference_sentences() -> list[str]:
    """Sentences of the Python Language Reference (``pydoc_data.topics``), in topic order."""
    from pydoc_data.topics import topics

    return prose_sentences(topics[k] for k in sorted(topics))


def _docstrings(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    docs = [inspect.getdoc(module) or ""]
    with warnings.catch_warnings():  # inspect touches deprecated aliases (typing.io, typing.re)
        warnings.simplefilter("ignore", DeprecationWarning)
        for _, obj in inspect.getmembers(module):
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != module.__name__:
                continue
            docs.append(inspect.getdoc(obj) or "")
            if inspect.isclass(obj):
                for _, fn in inspect.getmembers(obj, inspect.isfunction):
                    if fn.__qualname__.startswith(obj.__name__ + "."):
                        docs.append(inspect.getdoc(fn) or "")
    return docs


def docstring_sentences() -> list[str]:
    """Sentences of the docstrings of DOC_MODULES, none of them also in the reference."""
    reference = set(reference_sentences())
    found = prose_sentences(d for name in DOC_MODULES for d in _docstrings(name))
    return [s for s in found if s not in reference]


def spread(items: list[str], n: int) -> list[str]:
    """``n`` items evenly spaced over ``items`` (covers every part of a document, deterministic)."""
    if n > len(items):
        raise ValueError(f"asked for {n} sentences, the documents give only {len(items)}")
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
