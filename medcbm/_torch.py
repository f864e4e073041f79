"""Small torch helpers shared across subpackages (torch is imported lazily)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the block with one intra-op torch thread, restoring the previous count afterwards.

    For loops of small tensor ops (a tiny linear layer, batched small solves, one-query encodes)
    intra-op threads only add synchronisation, and OpenMP spin-waiting makes them far slower when other
    work shares the cores.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
