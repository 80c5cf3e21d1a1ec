"""`ragtune adapters ...`: register, inspect and remove LoRA adapters (operators)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
import httpx
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ragtune.adapters.errors import InvalidAdapterError
from ragtune.adapters.examples import Example, read_prompts
from ragtune.adapters.parity import ParityResult
from ragtune.adapters.provenance import (
    CollectionSnapshot,
    DocumentChange,
    Staleness,
    current_snapshot,
    staleness,
)
from ragtune.adapters.registry import AdapterManifest, AdapterRegistry
from ragtune.cli.settings import CommandSettings, command_settings
from ragtune.cli.show import data
from ragtune.retrieval.embedder import model_id_for
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.store import open_store
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.launcher import EngineLauncher, auth_headers, engine_api_key
from ragtune.serving.settings import EngineSettings

adapters_app = typer.Typer(
    help="LoRA adapters: register, list, show, load, unload, remove.", no_args_is_help=True
)
stdout = Console()
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="RAGTUNE_URL",
        help="Act through a running ragtune server (admin API) instead of on local files.",
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", envvar="RAGTUNE_ADMIN_KEY", help="An admin API key (with --url)."),
]


def server_call(
    url: str, key: str | None, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """One admin API call; the server's own error message on failure."""
    from ragtune.serving.errors import ServingError

    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.request(
            method, f"{base}/admin/adapters{path}", json=body, headers=headers, timeout=600
        )
    except httpx.HTTPError as exc:
        raise ServingError(f"cannot reach the ragtune server at {base}: {exc}") from exc
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise ServingError(f"the server refused ({response.status_code}): {message}")
    return response.json() if response.content else None


def registry(settings: CommandSettings) -> AdapterRegistry:
    return AdapterRegistry(settings.serving.adapters.adapters_dir)


def collection_snapshot(settings: CommandSettings, name: str) -> CollectionSnapshot:
    """Collection `name` as it is now: what an adapter trained alongside it records."""
    retrieval = settings.retrieval_for(name)
    with open_store(retrieval, "read") as store:
        return CollectionSnapshot.of(
            store.collection(retrieval.collection, model_id_for(retrieval.embedding_model))
        )


def stale_adapters(
    settings: CommandSettings, manifests: Sequence[AdapterManifest]
) -> dict[str, Staleness | None]:
    """Adapter name -> what changed in the collection it was trained alongside, for each that
    recorded one; None when the store cannot be read now (it says why on stderr)."""
    recorded = {m.name: m.training_collection for m in manifests if m.training_collection}
    if not recorded:
        return {}
    retrieval = settings.serving.retrieval
    model = model_id_for(retrieval.embedding_model)
    try:
        with open_store(retrieval, "read") as store:
            now = {c.name: current_snapshot(store, c.name, model) for c in recorded.values()}
    except RetrievalError as exc:
        Console(stderr=True).print(f"staleness unknown: {exc}", markup=False)
        return dict.fromkeys(recorded)
    return {name: staleness(c, now[c.name]) for name, c in recorded.items()}


def engine_loaded(settings: EngineSettings) -> set[str] | None:
    """Names the engine serves now, or None when it does not answer."""
    try:
        response = httpx.get(
            f"{settings.engine_url}/v1/models",
            headers=auth_headers(engine_api_key(settings)),
            timeout=2.0,
        )
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return {entry["id"] for entry in response.json().get("data", [])}


@adapters_app.command("add")
def adapters_add(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A PEFT LoRA directory.")],
    name: Annotated[str, typer.Option("--name", help="Name clients use as `model`.")],
    task: Annotated[str, typer.Option("--task", help="What the adapter is for, one sentence.")],
    examples: Annotated[
        Path | None,
        typer.Option("--examples", help="Example prompts of the task (JSONL or one per line)."),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a LoRA adapter against the served base model and register it.

    With --url the server registers and loads it; PATH must then be readable by the server
    (e.g. the adapters volume both share).

    Example: ragtune adapters add ./titler-lora --name titler --task "Write a paper's title from
    its abstract." --examples abstracts.jsonl
    """
    prompts = read_prompts(examples) if examples else []
    if url:
        body = {"name": name, "path": str(path.resolve()), "task": task, "examples": prompts}
        status = server_call(url, key, "POST", "", body)
        if as_json:
            stdout.print_json(json.dumps(status))
            return
        stdout.print(f"registered and loaded {name} v{status['version']} on {url}")
        return
    settings = command_settings(ctx)
    engine = settings.serving.engine
    launcher = EngineLauncher(engine)
    model_dir = Path(launcher.model_path(prepare=False))
    manifest = registry(settings).add(
        path,
        name,
        task,
        base_model=launcher.served_model_name(),
        examples=prompts,
        max_rank=engine.max_lora_rank,
        base_model_dir=model_dir if model_dir.is_dir() else None,
        max_examples=settings.serving.adapters.max_adapter_examples,
    )
    if as_json:
        stdout.print_json(manifest.model_dump_json())
        return
    stdout.print(
        f"registered {manifest.name} v{manifest.version} (rank {manifest.rank}, "
        f"{len(manifest.examples)} example prompts); a running `ragtune serve` picks it up "
        "when restarted (or add it with --url URL to the running server)"
    )


@adapters_app.command("list")
def adapters_list(
    ctx: typer.Context, url: UrlOption = None, key: KeyOption = None, as_json: JsonOption = False
) -> None:
    """Registered adapters, whether the engine has each loaded, and whether the documents
    each was trained alongside changed since (stale).

    Example: ragtune adapters list [--url http://api-host:8080]
    """
    if url:
        fields = ("name", "version", "loaded", "rank", "stale", "changed_documents", "task")
        rows = [{k: row.get(k) for k in fields} for row in server_call(url, key, "GET", "")]
    else:
        settings = command_settings(ctx)
        loaded = engine_loaded(settings.serving.engine)
        manifests = registry(settings).list()
        stale = stale_adapters(settings, manifests)
        rows = []
        for m in manifests:
            found = stale.get(m.name)
            rows.append(
                {
                    "name": m.name,
                    "version": m.version,
                    "loaded": None if loaded is None else m.served_name in loaded,
                    "rank": m.rank,
                    "stale": found.stale if found else (None if m.name in stale else False),
                    "changed_documents": len(found.changes) if found else 0,
                    "task": m.task,
                }
            )
    if as_json:
        stdout.print_json(json.dumps(rows))
        return
    if not rows:
        stdout.print("no adapters registered (ragtune adapters add PATH --name N --task ...)")
        return
    table = Table("name", "version", "loaded", "rank", "stale", "task")
    for row in rows:
        state = "engine down" if row["loaded"] is None else ("yes" if row["loaded"] else "no")
        count = row["changed_documents"]
        changed = {None: "unknown", False: "no"}.get(
            row["stale"], f"yes ({count} document{'' if count == 1 else 's'})"
        )
        table.add_row(
            str(row["name"]), f"v{row['version']}", state, str(row["rank"]), changed,
            str(row["task"]),
        )  # fmt: skip
    stdout.print(table)


@adapters_app.command("show")
def adapters_show(
    ctx: typer.Context,
    name: str,
    url: UrlOption = None,
    key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """An adapter's manifest: base model, rank, targets, task, examples, hashes, evaluation;
    and the documents changed since it was trained, when it was trained alongside a collection.

    Example: ragtune adapters show titler
    """
    changes: list[DocumentChange] | None = None
    if url:
        detail = server_call(url, key, "GET", f"/{name}")
        manifest = AdapterManifest.model_validate(detail["manifest"])
        if detail.get("stale") is not None:
            changes = [DocumentChange.model_validate(c) for c in detail.get("changes", [])]
    else:
        settings = command_settings(ctx)
        manifest = registry(settings).get(name)
        found = stale_adapters(settings, [manifest]).get(name)
        changes = list(found.changes) if found else None
    if as_json:
        stdout.print_json(manifest.model_dump_json())
        return
    show_manifest(manifest, changes)


def show_manifest(manifest: AdapterManifest, changes: Sequence[DocumentChange] | None) -> None:
    """The manifest, one field a row; `changes`: the documents changed since training (None:
    not known)."""
    table = Table(show_header=False, box=None)
    advice = manifest.evaluation.get("advise")
    for key, value in manifest.model_dump().items():
        shown = str(value)
        if key == "examples":
            shown = f"{len(value)} prompts" + (f", first: {value[0][:100]!r}" if value else "")
        if key == "evaluation":
            shown = str({k: v for k, v in value.items() if k != "advise"})
        if key == "training_collection" and value is not None:
            shown = (
                f"{value['name']} at revision {value['revision'] or '(none)'}, "
                f"{len(value['documents'])} documents"
            )
        table.add_row(key, data(shown))
    recorded = manifest.training_collection
    if recorded is not None:
        if changes is None:
            table.add_row("stale", Text("unknown (the collection cannot be read now)"))
        else:
            found = Staleness(recorded.name, recorded.revision, "", len(recorded.documents),
                              tuple(changes))  # fmt: skip
            table.add_row("stale", Text(("yes: " if found.stale else "no: ") + found.describe()))
            for change in changes:
                since = f" (ingested {change.since})" if change.since else ""
                table.add_row("", data(f"- {change.change} {change.source}{since}"))
    if isinstance(advice, dict):
        table.add_row("advice", data(f"{advice.get('verdict_words')} ({advice.get('date', '')})"))
        for reason in advice.get("reasons", []):
            table.add_row("", data(f"- {reason}"))
    stdout.print(table)


@adapters_app.command("rm")
def adapters_rm(
    ctx: typer.Context,
    name: str,
    version: Annotated[
        int | None,
        typer.Option(
            "--version", min=1, help="Delete only this old version (not the one in force)."
        ),
    ] = None,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Remove an adapter (every version) from the registry (and the engine, with --url), or
    one old version of it.

    Example: ragtune adapters rm titler [--version 2]
    """
    if url:
        path = f"/{name}" if version is None else f"/{name}/versions/{version}"
        server_call(url, key, "DELETE", path)
        what = name if version is None else f"{name} v{version}"
        stdout.print(f"removed {what} from {url}")
        return
    reg = registry(command_settings(ctx))
    if version is None:
        manifest = reg.remove(name)
        stdout.print(f"removed {manifest.name}")
        return
    manifest = reg.remove_version(name, version)
    stdout.print(f"removed {manifest.name} v{manifest.version}")


@adapters_app.command("load")
def adapters_load(
    ctx: typer.Context, name: str, url: UrlOption = None, key: KeyOption = None
) -> None:
    """Load a registered adapter into the engine (it serves as `name@vN`).

    With --url the server loads it (evicting its least recently used idle adapter when every
    LoRA slot is taken) and loads it again after a restart; without, straight into the engine.

    Example: ragtune adapters load titler --url http://127.0.0.1:8080
    """
    if url:
        status = server_call(url, key, "POST", f"/{name}/load")
        stdout.print(f"loaded {name} v{status['version']} on {', '.join(status['loaded_on'])}")
        return
    settings = command_settings(ctx)
    engine = settings.serving.engine
    reg = registry(settings)
    manifest = reg.get(name)
    anyio.run(_engine_call, engine, "load", manifest.served_name, str(reg.path(manifest)))
    stdout.print(f"loaded {manifest.name} v{manifest.version} into {engine.engine_url}")


@adapters_app.command("unload")
def adapters_unload(
    ctx: typer.Context, name: str, url: UrlOption = None, key: KeyOption = None
) -> None:
    """Unload an adapter from the engine (it stays registered, and loads again on demand).

    Example: ragtune adapters unload titler --url http://127.0.0.1:8080
    """
    if url:
        status = server_call(url, key, "POST", f"/{name}/unload")
        stdout.print(f"unloaded {name} v{status['version']} on {url}")
        return
    settings = command_settings(ctx)
    engine = settings.serving.engine
    manifest = registry(settings).get(name)
    anyio.run(_engine_call, engine, "unload", manifest.served_name, "")
    stdout.print(f"unloaded {manifest.name} v{manifest.version} from {engine.engine_url}")


async def _engine_call(settings: EngineSettings, action: str, served: str, path: str) -> None:
    async with EngineClient.from_settings(settings) as client:
        if action == "load":
            await client.load_adapter(served, str(Path(path).resolve()))
        else:
            await client.unload_adapter(served)


@adapters_app.command("train")
def adapters_train(
    ctx: typer.Context,
    data: Annotated[
        Path,
        typer.Argument(
            help='JSONL: {"instruction", "input", "output"} or {"messages": [...]} per line.'
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Name of the new adapter.")],
    task: Annotated[str, typer.Option("--task", help="What the adapter is for, one sentence.")],
    epochs: Annotated[int, typer.Option(min=1)] = 2,
    rank: Annotated[int, typer.Option(min=1)] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 5e-4,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    max_examples: Annotated[int | None, typer.Option(min=2)] = None,
    eval_split: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.1,
    max_length: Annotated[int, typer.Option(min=16, help="Tokens per example, at most.")] = 512,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection",
            help="The collection the adapter is made alongside: its documents' versions are "
            "recorded, and once they change the adapter is shown stale and the router gives it "
            "the fresh passages.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train a LoRA adapter with PEFT on the served base model and register it.

    The loss covers the answer tokens only; a held-out split is evaluated before and after
    training and saved next to the adapter (heldout.jsonl) for `ragtune eval compare`. The
    manifest records the data file's hash and, with --collection, that collection's revision
    and documents as they were when training began.

    Example: ragtune adapters train titles.jsonl --name titler --task "Write a paper's title
    from its abstract." --epochs 2
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ragtune.adapters.training import TrainingConfig, train_and_register

    settings = command_settings(ctx)
    engine = settings.serving.engine
    launcher = EngineLauncher(engine)
    # Read now, and the store let go of before the long training.
    snapshot = collection_snapshot(settings, collection) if collection else None
    config = TrainingConfig(
        epochs=epochs, rank=rank, alpha=2 * rank, learning_rate=lr, batch_size=batch_size,
        max_examples=max_examples, eval_split=eval_split, max_length=max_length,
    )  # fmt: skip
    progress = Progress(
        TextColumn("training {task.fields[name]}"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=as_json,
    )
    bar = progress.add_task("train", total=None, name=name, loss="-")

    def on_step(step: int, total: int, loss: float) -> None:
        progress.start()  # at the first step: a refused request draws no bar
        progress.update(bar, completed=step, total=total, loss=f"{loss:.3f}")

    try:
        trained = train_and_register(
            registry(settings),
            data,
            name,
            task,
            base_model=launcher.served_model_name(),
            base_model_dir=lambda: Path(launcher.model_path(prepare=True)),
            max_rank=engine.max_lora_rank,
            config=config,
            on_step=on_step,
            check=partial(_parity, engine, launcher.served_model_name(), name),
            collection=snapshot,
        )
    finally:
        progress.stop()
    manifest, result = trained.manifest, trained.result
    if as_json:
        stdout.print_json(manifest.model_dump_json())
        return
    stdout.print(
        f"trained and registered {manifest.name} v{manifest.version}: {result.steps} steps in "
        f"{result.seconds:.0f} s; held-out loss {_loss(result.eval_loss_before)} -> "
        f"{_loss(result.eval_loss_after)}; held-out examples: {trained.held_out_file}"
    )


def _parity(
    engine: EngineSettings, base_model: str, name: str, base_dir: Path, adapter_dir: Path,
    held_out: Sequence[Example],
) -> dict[str, Any]:  # fmt: skip
    """The served adapter against PEFT's (evals.parity) when the engine answers; an adapter
    that does not behave as trained is not registered. Without an engine or held-out examples
    the adapter is registered with the reason the check did not run."""
    from ragtune.evals.parity import served_parity

    if not held_out:
        return {"checked": False, "reason": "no held-out examples (--eval-split 0)"}

    async def run() -> ParityResult | None:
        async with EngineClient.from_settings(engine) as client:
            if not await client.health():
                return None
            return await served_parity(
                client, base_model, base_dir, adapter_dir, held_out, 32, name=name
            )

    result = anyio.run(run)
    if result is None:
        return {
            "checked": False,
            "reason": f"the engine at {engine.engine_url} was not running (`ragtune engine "
            "start` before training checks it)",
        }
    if not result.ok:
        raise InvalidAdapterError(f"{name} not registered: {result.message()}")
    return result.to_dict()


def _loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@adapters_app.command("swap")
def adapters_swap(
    ctx: typer.Context,
    name: str,
    path: Annotated[Path, typer.Argument(help="The new version's PEFT LoRA directory.")],
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="RAGTUNE_URL",
            help="The ragtune server (default: http://HOST:PORT of the settings).",
        ),
    ] = None,
    key: KeyOption = None,
) -> None:
    """Hot-swap a new version of an adapter into a running server, without a dropped request.

    The server loads the new version, switches the name to it, waits for the requests still
    on the old one, then unloads it. A failed load leaves the old version serving. PATH must
    be readable by the server.

    Example: RAGTUNE_ADMIN_KEY=... ragtune adapters swap titler ./titler-v2
    """
    api = command_settings(ctx).serving.api
    base = url or f"http://{api.host}:{api.port}"
    status = server_call(base, key, "POST", f"/{name}/swap", {"path": str(path.resolve())})
    stdout.print(f"{name} now serves v{status['version']} ({status['served_name']})")
