"""The domain stage's handler: what the runner calls for a batch, a window, a tick.

`DomainOutputs` satisfies the runner's protocols (runner.py): `prefilter` (the batch's
fast path, fast_path.py) in the runner's transaction holding the windows' device
locks, then `__call__` once per window it returned (the full path, full_path.py) in a
transaction of its own holding that device's lock, and `tick` (the clock, clock.py).
It holds no state between those calls: what `prefilter` found of a window travels
with the window it returns (`fast_path.CheckedWindow`).

Invariant: everything written is a function of stored positions, the configuration,
officials' rows and the clock (DESIGN rule 7), in the caller's transaction, as diffs
against the stage's record of its outputs (store.py): handling a window again writes
nothing new. Rows with `source = 'manual'` are never written or deleted.
"""

from __future__ import annotations

from processor.domain.timing import DEFAULT_SETTINGS, TimingSettings
from processor.domain_runner import clock, fast_path, full_path
from processor.domain_runner.config_source import ConfigSource
from processor.domain_runner.notices import Window
from processor.domain_runner.race import Race
from processor.storage.pool import DbConnection


class DomainOutputs:
    """The `WindowHandler` the domain stage runs in production."""

    def __init__(
        self,
        source: ConfigSource,
        settings: TimingSettings = DEFAULT_SETTINGS,
        race: Race | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.race = race or Race()

    async def prefilter(self, conn: DbConnection, windows: list[Window]) -> list[Window]:
        """The common case for a whole batch part at once (`fast_path.prefilter`); the
        windows left for `__call__`, each carrying what was found of it."""
        snapshot = await self.source.current(conn)
        return await fast_path.prefilter(conn, snapshot, windows, self.settings, self.race)

    async def __call__(self, conn: DbConnection, window: Window) -> None:
        """One device's window (`full_path.handle`): one `prefilter` returned, or any
        window handled alone."""
        snapshot = await self.source.current(conn)
        await full_path.handle(conn, snapshot, window, self.settings, self.race)

    async def tick(self, conn: DbConnection) -> None:
        """What the clock decides (`clock.tick`)."""
        await clock.tick(conn, self.source, self.race)
