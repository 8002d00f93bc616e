"""Where a campaign's state lives: `start` reads the list and makes the state, `resume` finds it
again. An SQLite file beside the list by default; with a PostgreSQL `TELEBRIDGE_DB` that
database (`campaign_pg`, imported only then), unless an explicit state file is given.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from telebridge.outbound.campaign_csv import read_list
from telebridge.outbound.campaign_plan import CampaignError, Plan
from telebridge.outbound.campaign_state import CampaignState, CampaignStore, state_path_for
from telebridge.settings import POSTGRES_SCHEMES

if TYPE_CHECKING:  # psycopg: the `cluster` extra
    from telebridge.outbound.campaign_pg import PostgresCampaignState

__all__ = ["resume", "resume_path", "start"]


def _postgres_url(database: Path | str | None) -> str | None:
    # As the call log decides (calllog/log.py): a text starting with a PostgreSQL scheme.
    if isinstance(database, str) and database.startswith(POSTGRES_SCHEMES):
        return database
    return None


def _postgres_store() -> type[PostgresCampaignState]:
    try:  # only here: the base install has no psycopg, and SQLite users never load it
        from telebridge.outbound.campaign_pg import PostgresCampaignState
    except ImportError:
        raise CampaignError(
            "TELEBRIDGE_DB: a campaign's state in PostgreSQL needs psycopg: "
            "pip install 'telebridge[cluster]'"
        ) from None
    return PostgresCampaignState


def start(
    list_path: Path,
    plan: Plan,
    state_path: Path | None = None,
    *,
    database: Path | str | None = None,
) -> CampaignStore:
    """Read and check the list, then create the campaign's state: in PostgreSQL when `database`
    (`TELEBRIDGE_DB`) is a URL and no `state_path` is given, else in a file (default: beside
    the list)."""
    plan = plan.checked()
    columns, rows = read_list(list_path)
    # Absolute paths: `resume` may run from another folder.
    results = (
        Path(plan.results) if plan.results else list_path.with_name(list_path.stem + ".results.csv")
    )
    plan = replace(plan, results=str(results.resolve()))
    url = _postgres_url(database)
    if url is not None and state_path is None:
        return _postgres_store().create(url, plan, columns, rows, list_path.resolve())
    path = state_path or state_path_for(list_path)
    return CampaignState.create(path, plan, columns, rows, list_path.resolve())


def resume(key: str, *, database: Path | str | None = None) -> CampaignStore:
    """The state of the campaign `key` names: a state file, or a list (`LIST.csv`: the file beside
    it). With a PostgreSQL `database`: also a campaign id, and a list finds the unfinished
    campaign started from the same bytes (a state file beside it, when there is none, wins)."""
    url = _postgres_url(database)
    path = Path(key)
    if url is None or (path.is_file() and path.suffix.lower() != ".csv"):
        return CampaignState.open(resume_path(path))
    try:
        store: CampaignStore = _postgres_store().open(url, key)
    except CampaignError:
        if path.suffix.lower() == ".csv" and state_path_for(path).is_file():
            return CampaignState.open(state_path_for(path))
        raise
    results = Path(store.plan.results)
    if not results.parent.is_dir():  # resumed on another machine: the results beside the list
        here = (
            path.with_name(path.stem + ".results.csv")
            if path.suffix.lower() == ".csv"
            else Path(f"campaign-{key}.results.csv")
        )
        try:
            store.set_plan(replace(store.plan, results=str(here.resolve())))
        except BaseException:
            store.close()
            raise
    return store


def resume_path(path: Path) -> Path:
    """The state file for `path`, which may be the state file or the campaign's list."""
    if path.suffix.lower() == ".csv":
        return state_path_for(path)
    return path
