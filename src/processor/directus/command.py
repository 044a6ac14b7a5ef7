"""`processor directus apply`: roles, permissions, the dispatcher's user and Flows, in one
command, safe to repeat.

Secrets never go on the command line: the admin token is read from the environment variable
`--token-env` names (default `PROCESSOR_DIRECTUS_ADMIN_TOKEN`), the dispatcher's static token
from `--dispatcher-token-env` (default `PROCESSOR_DIRECTUS_TOKEN`, the one the dispatcher
authenticates with), both held as SecretStr.

Exit status: 0 applied (or planned, with `--dry-run`); 1 Directus refused or could not be
reached (the message names the request); 2 a usage problem (no admin token).
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

directus_app = typer.Typer(
    help="Directus as code: roles, permissions and Flows (the schema is directus/snapshot.yaml).",
    no_args_is_help=True,
)

_COLOURS = {"create": "green", "update": "yellow", "delete": "red"}


@directus_app.command("apply")
def apply_command(
    url: Annotated[
        str,
        typer.Option(
            "--url",
            envvar="PROCESSOR_DIRECTUS_URL",
            help="Directus's base URL (default: $PROCESSOR_DIRECTUS_URL).",
        ),
    ],
    token_env: Annotated[
        str,
        typer.Option(
            "--token-env", help="The environment variable holding an admin's static token."
        ),
    ] = "PROCESSOR_DIRECTUS_ADMIN_TOKEN",
    dispatcher_token_env: Annotated[
        str,
        typer.Option(
            "--dispatcher-token-env",
            help="The environment variable holding the dispatcher's token; when it is unset "
            "the dispatcher's user is left as it is.",
        ),
    ] = "PROCESSOR_DIRECTUS_TOKEN",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; change nothing.")
    ] = False,
) -> None:
    """Make Directus hold the declared roles, permissions, dispatcher user and Flows.

    Creates what is missing, updates what differs, deletes the managed roles' permissions
    and the managed Flows that are no longer declared. A second run changes nothing.
    """
    from pydantic import SecretStr

    from processor.directus.apply import DirectusError, apply
    from processor.directus.client import AdminClient
    from processor.directus.plan import PlanError
    from processor.directus.presets import apply_presets

    console = Console()
    admin = os.environ.get(token_env, "")
    if not admin:
        typer.echo(f"set {token_env} to a Directus administrator's static token", err=True)
        raise typer.Exit(2)
    dispatcher = os.environ.get(dispatcher_token_env) or None

    async def go() -> None:
        async with AdminClient(url, SecretStr(admin)) as client:
            outcome = await apply(
                client,
                dispatcher_token=None if dispatcher is None else SecretStr(dispatcher),
                dry_run=dry_run,
            )
            layouts = await apply_presets(client, dry_run=dry_run)
        plan = outcome.plan
        for warning in plan.warnings:
            console.print(f"[yellow]warning[/]: {warning}")
        if plan.changes:
            title = "would change (dry run)" if dry_run else "changed"
            table = Table(title=f"Directus {title}")
            for column in ("kind", "name", "change", "detail"):
                table.add_column(column)
            for c in plan.changes:
                colour = _COLOURS[c.change]
                table.add_row(c.kind, c.name, f"[{colour}]{c.change}[/]", c.detail)
            console.print(table)
        verb = "would change" if dry_run else "changed"
        if layouts:
            console.print(f"default layouts {verb}: {', '.join(layouts)}")
        console.print(
            f"{len(plan.changes) + len(layouts)} {verb}, {plan.unchanged} unchanged"
            + (" (dry run: nothing was sent)" if dry_run else "")
        )

    try:
        asyncio.run(go())
    except (DirectusError, PlanError) as exc:
        typer.echo(f"directus apply: {exc}", err=True)
        raise typer.Exit(1) from None
