"""How clawgate steers llama-cpp-python where its API has no argument for it: how a model
is loaded, where a tool call's completion ends, and how a cancelled turn stops evaluating."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

_DEFAULT_PARAMS_PATCH = threading.Lock()


@contextlib.contextmanager
def without_extra_buffer_types() -> Iterator[None]:
    """Loads models in llama.cpp's plain CPU buffers only.

    Built for a CPU with AMX (Xeon Sapphire Rapids and later), llama.cpp repacks the weights into
    AMX buffers, and its first decode of the default model then crashes the process with a
    segmentation fault (llama-cpp-python 0.3.36). Its model parameter `use_extra_bufts` turns
    that off, but `Llama()` has no argument for it and loads the model in its constructor, so
    the default parameters it starts from are swapped for the duration of the load.
    """
    import llama_cpp.llama_cpp as native

    default_params = native.llama_model_default_params

    def params_without_extra_buffer_types() -> Any:
        params = default_params()
        params.use_extra_bufts = False
        return params

    with _DEFAULT_PARAMS_PATCH:
        native.llama_model_default_params = params_without_extra_buffer_types
        try:
            yield
        finally:
            native.llama_model_default_params = default_params


CLOSING_TOKENS = 4  # what closing a call's open string and object takes


class CompletionCap:
    """A logits processor that makes each completion of a tool-calling answer end after
    `limit` tokens.

    llama-cpp-python's chatml function calling writes a call's arguments (and a words answer)
    with no token limit, under a grammar; a 135M model sometimes writes one string until the
    window is full (about a minute, then a context overflow). Past the limit this raises the
    tokens that close what is open (a quote, then a brace, then the end of the message) far
    above the rest: the grammar still rejects any that would not be valid JSON, so the call
    ends early and whole.
    """

    def __init__(self, llama: Any, limit: int) -> None:
        self._limit = limit
        closers = [(token, 40.0) for token in (llama.token_eos(),)]
        for text, boost in (('"', 30.0), ('"}', 25.0), ("}", 20.0)):
            closers += [(token, boost) for token in llama.tokenize(text.encode(), add_bos=False)]
        self._closers = closers
        self._start = self._last = -1

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        length = len(input_ids)
        if length != self._last + 1:  # the first token of another completion
            self._start = length
        self._last = length
        if length - self._start >= self._limit:
            for token, boost in self._closers:
                scores[token] += boost
        return scores


class GenerationCancelled(Exception):
    """Raised inside llama-cpp-python's generation thread when its turn was cancelled."""


def stop_when(llama: Any, cancelled: Callable[[], bool]) -> None:
    """Makes every evaluation on `llama` check `cancelled` first, and evaluate at most one
    batch (`n_batch` tokens) between checks.

    llama-cpp-python evaluates a whole prompt in one `Llama.eval` call, batch after batch, with
    no way out: a turn whose client left kept the model busy for as long as its prompt took
    (seconds for a long one), and every turn behind it waited. Generation evaluates one token
    per call, so the same check stops it at the next token. Raising here leaves the model's
    cache consistent: `eval` counts only the batches it finished.
    """
    evaluate = llama.eval
    batch = llama.n_batch

    def eval_until_cancelled(tokens: Sequence[int]) -> None:
        for start in range(0, len(tokens), batch):
            if cancelled():
                raise GenerationCancelled
            evaluate(tokens[start : start + batch])

    llama.eval = eval_until_cancelled
