"""`aipp batch`: the Ray Data batch job (also ``python -m pipelines.batch_summarize``).

The job's own entry point is :func:`main` here, so the job module never imports its CLI
(one direction: CLI -> job).
"""

from __future__ import annotations

import signal
import sys

import typer

from pipelines.sources import DEFAULT_EXTENSIONS


def register(cli: typer.Typer) -> None:
    @cli.command()
    def batch(
        input: str = typer.Option(
            ..., "--input", "-i", help="Folder, glob or fsspec URL (s3://bucket/prefix/) to read."
        ),
        output: str = typer.Option(
            ..., "--output", "-o", help="Folder or fsspec URL for the results (part files)."
        ),
        format: str = typer.Option("parquet", "--format", help="parquet or jsonl."),
        extensions: str = typer.Option(
            ",".join(DEFAULT_EXTENSIONS), help="File extensions to read, comma-separated."
        ),
        force: bool = typer.Option(False, help="Redo files an earlier run already finished."),
        limit: int = typer.Option(None, min=1, help="Process at most this many files this run."),
        address: str = typer.Option(
            None, help="Ray cluster to join (default: RAY_ADDRESS, else start a local Ray)."
        ),
        num_cpus: int = typer.Option(
            None, help="Logical CPUs for a local Ray this job starts (default: 2 per core)."
        ),
        device: str = typer.Option("auto", help="auto (GPU when the cluster has one), cpu, gpu."),
        summarizer: str = typer.Option(
            "auto",
            help="actor (the service's summarizer in an actor pool) or vllm (ray.data.llm; "
            "GPU + AIPP_LLM_ENGINE=vllm); auto picks vllm when both hold.",
        ),
        stt_actors: int = typer.Option(None, min=1, help="Whisper actors (default: sized)."),
        llm_actors: int = typer.Option(
            None, min=1, help="Summary actors/engines (default: sized)."
        ),
        stt_threads: int = typer.Option(None, min=1, help="CPU threads per Whisper actor."),
        llm_threads: int = typer.Option(None, min=1, help="CPU threads per llama.cpp actor."),
        gpu_fraction: float = typer.Option(
            0.5, help="Share of a GPU per Whisper actor; the vLLM engine gets the rest."
        ),
        gpus: int = typer.Option(
            None,
            min=1,
            help="With --device gpu: GPUs to plan for even if none is free yet (the "
            "autoscaler adds GPU nodes for the pending actors).",
        ),
        language: str = typer.Option(None, help="Spoken language (default: detect)."),
        instruction: str = typer.Option(None, help="Extra instruction for every summary."),
        diarize: bool = typer.Option(False, help="Label who spoke when (speaker per segment)."),
        min_speakers: int = typer.Option(None, min=1, max=20, help="With --diarize: at least."),
        max_speakers: int = typer.Option(None, min=1, max=20, help="With --diarize: at most."),
        rows_per_file: int = typer.Option(
            64, min=1, help="Rows per output part file (a part is also cut every flush interval)."
        ),
        flush_interval_s: float = typer.Option(
            30.0, min=0.0, help="Write buffered rows at least this often (seconds)."
        ),
        record_tasks: bool = typer.Option(
            None,
            "--record-tasks/--no-record-tasks",
            help="Record each file as a finished task (default: on when AIPP_DATABASE_URL is set).",
        ),
        tenant: str = typer.Option("batch", help="Tenant that owns the recorded tasks."),
        quiet: bool = typer.Option(False, help="Print only the final BATCH_REPORT line."),
    ) -> None:
        """Transcribe and summarize every audio file under INPUT into OUTPUT, on Ray Data."""
        from pipelines.batch_plan import BatchError, BatchOptions
        from pipelines.batch_summarize import run_batch
        from pipelines.results import FORMATS
        from pipelines.sources import SourceError, parse_extensions

        if format not in FORMATS:
            raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
        if device not in ("auto", "cpu", "gpu"):
            raise typer.BadParameter("choose auto, cpu or gpu", param_hint="--device")
        if summarizer not in ("auto", "actor", "vllm"):
            raise typer.BadParameter("choose auto, actor or vllm", param_hint="--summarizer")
        opts = BatchOptions(
            input=input,
            output=output,
            format=format,
            extensions=parse_extensions(extensions),
            force=force,
            limit=limit,
            address=address,
            num_cpus=num_cpus,
            device=device,
            summarizer=summarizer,
            stt_actors=stt_actors,
            llm_actors=llm_actors,
            stt_threads=stt_threads,
            llm_threads=llm_threads,
            gpu_fraction=gpu_fraction,
            gpus=gpus,
            language=language,
            instruction=instruction,
            diarize=diarize,
            min_speakers=min_speakers,
            max_speakers=max_speakers,
            rows_per_file=rows_per_file,
            flush_interval_s=flush_interval_s,
            record_tasks=record_tasks,
            tenant=tenant,
            quiet=quiet,
        )
        try:
            run_batch(opts)
        except (BatchError, SourceError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


def _on_sigterm(signum, frame):  # `ray job stop` / Kubernetes: stop like Ctrl-C
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    """``python -m pipelines.batch_summarize``: the ``batch`` command alone."""
    app = typer.Typer(add_completion=False)
    register(app)
    signal.signal(signal.SIGTERM, _on_sigterm)
    app(args=argv if argv is not None else sys.argv[1:], prog_name="batch_summarize")
