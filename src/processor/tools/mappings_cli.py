"""`processor mappings …`: the IO mappings in Directus's table (`tools/mappings.py`).

Mounted by the main CLI as a command group; the work is in `tools/mappings.py`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from processor.core.logging import configure_logging
from processor.core.settings import Settings, SettingsError, load_settings
from processor.domain.shipped_mappings import UnknownModelError, shipped_models
from processor.tools.mappings import MappingsError, check, load_shipped, upgrade

mappings_app = typer.Typer(
    help="IO mappings (public.io_mappings): load the shipped ones, check, upgrade.",
    no_args_is_help=True,
)
console = Console()


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


async def _connect(settings: Settings) -> asyncpg.Connection:
    return await asyncpg.connect(
        settings.database_url.get_secret_value(), timeout=settings.db_connect_timeout_s
    )


def _failed(exc: BaseException) -> typer.Exit:
    text = str(exc) if isinstance(exc, MappingsError) else f"{type(exc).__name__}: {exc}"
    typer.echo(f"mappings: {text}", err=True)
    return typer.Exit(1)


@mappings_app.command("load")
def load(
    model: Annotated[
        str, typer.Option("--model", help=f"A shipped model: {', '.join(shipped_models())}.")
    ],
    as_model: Annotated[
        str | None,
        typer.Option("--as-model", help="Store the rows under this model name instead."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be added; write nothing.")
    ] = False,
) -> None:
    """Add the shipped rows of a model that the table lacks. Idempotent; a row already
    there (an official's edit) is never changed — the differences are listed."""
    settings = _settings()

    async def go() -> None:
        conn = await _connect(settings)
        try:
            report = await load_shipped(conn, model, as_model=as_model, dry_run=dry_run)
        finally:
            await conn.close()
        verb = "would add" if dry_run else "added"
        console.print(
            f"[bold]{report.model}[/]: {verb} {len(report.added)}, already there"
            f" {len(report.unchanged)}, kept as edited {len(report.kept)}"
        )
        if report.kept:
            table = Table("io", "shipped", "differences (left as they are)")
            for kept in report.kept:
                table.add_row(
                    str(kept.shipped.io_id), kept.shipped.name, "; ".join(kept.differences)
                )
            console.print(table)

    try:
        asyncio.run(go())
    except UnknownModelError:
        typer.echo(
            f"no shipped mappings for {model!r}; shipped: {', '.join(shipped_models())}", err=True
        )
        raise typer.Exit(2) from None
    except (MappingsError, OSError, asyncpg.PostgresError) as exc:
        raise _failed(exc) from None


@mappings_app.command("check")
def check_cmd() -> None:
    """List the rows the decoder skips (and why) and what each device model decodes.
    Exits 1 when a row is skipped."""
    settings = _settings()

    async def go() -> int:
        conn = await _connect(settings)
        try:
            table, errors, models = await check(conn)
        finally:
            await conn.close()
        console.print(f"{len(table.rows)} valid mapping rows, {len(errors)} skipped")
        if errors:
            out = Table("row", "why it is skipped")
            for error in errors:
                out.add_row(error.row_id, error.message)
            console.print(out)
        if models:
            out = Table("device model", "io ids decoded", "version")
            for model, count in models.items():
                out.add_row(model, str(count), table.resolve(model).version or "—")
            console.print(out)
        return 1 if errors else 0

    try:
        code = asyncio.run(go())
    except (MappingsError, OSError, asyncpg.PostgresError) as exc:
        raise _failed(exc) from None
    raise typer.Exit(code)


@mappings_app.command("upgrade")
def upgrade_cmd(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the rewrites; write nothing.")
    ] = False,
) -> None:
    """Rewrite rows of the first vocabulary (int, float, bool, string; multiplier 1) in
    the current one (ADR 0013). The decoder reads old rows the same way meanwhile."""
    settings = _settings()

    async def go() -> int:
        conn = await _connect(settings)
        try:
            changed = await upgrade(conn, dry_run=dry_run)
        finally:
            await conn.close()
        verb = "would rewrite" if dry_run else "rewrote"
        console.print(f"{verb} {len(changed)} rows")
        if changed:
            out = Table("row", "before", "after", "still to fix")
            for c in changed:
                before = ", ".join(f"{k}={v}" for k, v in c.before.items() if v is not None)
                after = ", ".join(f"{k}={v}" for k, v in c.after.items() if v is not None)
                out.add_row(str(c.row_id), before, after, c.problem or "")
            console.print(out)
        return 1 if any(c.problem for c in changed) else 0

    try:
        code = asyncio.run(go())
    except (MappingsError, OSError, asyncpg.PostgresError) as exc:
        raise _failed(exc) from None
    raise typer.Exit(code)
