"""Embeddings from the embedded GGUF model: mean-pooled, unit-length vectors of its hidden
states. They run on a second instance of the model, on a thread of their own, so that an
embedding never waits behind a long chat answer; it is loaded at the first one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent_worker.errors import InvalidTurnError
from agent_worker.providers.base import Embeddings, unit_length
from agent_worker.providers.llama_controls import without_extra_buffer_types
from services.provider_config import LlamaCppProviderConfig


class LlamaEmbeddings:
    def __init__(self, config: LlamaCppProviderConfig, model_path: Callable[[], Path]) -> None:
        self._config = config
        self._model_path = model_path
        self._model: Any = None
        self._loading = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-embed")

    async def embed(self, inputs: Sequence[str], dimensions: int | None) -> Embeddings:
        """Mean-pooled, unit-length vectors of the model's hidden states, one batch per call."""
        loop = asyncio.get_running_loop()
        async with self._loading:
            if self._model is None:
                self._model = await loop.run_in_executor(
                    self._executor, self._load, self._model_path()
                )
        embedder = self._model
        size = embedder.n_embd()
        if dimensions and dimensions != size:
            raise InvalidTurnError(
                f"Invalid 'dimensions': this model's vectors have {size} components"
                " and cannot be shortened."
            )
        # Tokens, vectors and their normalisation all run on the embedding thread: 2,048 inputs
        # would otherwise hold the event loop (and every other turn on this worker).
        batch = list(inputs)
        return await loop.run_in_executor(self._executor, _embed_batch, embedder, batch)

    def _load(self, path: Path) -> Any:
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

        window = self._config.context_size
        with without_extra_buffer_types():  # plain CPU buffers, as for generation
            return Llama(
                model_path=str(path),
                embedding=True,
                pooling_type=LLAMA_POOLING_TYPE_MEAN,
                n_ctx=window,
                n_batch=window,  # an input is embedded in one batch
                n_ubatch=window,
                n_threads=self._config.threads,
                verbose=False,
            )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._model is not None:
            self._model.close()
            self._model = None


def _embed_batch(embedder: Any, inputs: Sequence[str]) -> Embeddings:
    window = embedder.n_ctx()
    for index, text in enumerate(inputs):
        tokens = len(embedder.tokenize(text.encode(), add_bos=True))
        if tokens > window:
            raise InvalidTurnError(
                f"Invalid 'input[{index}]': {tokens} tokens, more than the model's"
                f" {window}-token window."
            )
    answer = embedder.create_embedding(list(inputs))
    vectors = [unit_length(row["embedding"]) for row in answer["data"]]
    return Embeddings(vectors, answer["usage"]["prompt_tokens"])
