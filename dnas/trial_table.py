"""A study's trials read straight from Optuna's SQL tables: the report's loader for big studies.

``study.get_trials()`` on Optuna's ``RDBStorage`` builds an ORM object for every row of the six
trial tables (170,000 of them for ``benchmarks/bench_report.py``'s 10,000 trials) and parses a
parameter's distribution from JSON twice for every row. ``load_trials`` reads the same tables
with one plain SQLAlchemy Core SELECT each and parses each distinct distribution once: 10,000
trials in about 1.5 s instead of 9-12 s. Its trials are the ``FrozenTrial``s Optuna's loader
builds (``tests/test_trial_table.py`` compares them field by field, on SQLite and PostgreSQL).
Any other storage, or a schema version this module does not know, is read by Optuna itself.
"""

from __future__ import annotations

import datetime
import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# Optuna's RDB schema as its tables name it (alembic revision, version_info.schema_version): the
# layout below, unchanged from Optuna 3.2 to 5.x.
KNOWN_SCHEMAS = {("v3.2.0.a", 12)}

_FLOAT = sa.Float(precision=53)  # Optuna's FLOAT_PRECISION: a double on every database
_TRIALS = sa.table(
    "trials",
    sa.column("trial_id", sa.Integer),
    sa.column("number", sa.Integer),
    sa.column("study_id", sa.Integer),
    sa.column("state", sa.String),  # an Enum(TrialState), stored by name
    sa.column("datetime_start", sa.DateTime),  # naive UTC
    sa.column("datetime_complete", sa.DateTime),
)


def _child(name: str, primary_key: str, **columns: Any) -> sa.TableClause:
    """One of the tables of a trial's rows: trial_id, its primary key (the order rows were
    written in), then ``columns``."""
    extra = (sa.column(c, kind) for c, kind in columns.items())
    return sa.table(
        name, sa.column("trial_id", sa.Integer), sa.column(primary_key, sa.Integer), *extra
    )


_VALUES = _child(
    "trial_values", "trial_value_id", objective=sa.Integer, value=_FLOAT, value_type=sa.String
)
_PARAMS = _child(
    "trial_params", "param_id", param_name=sa.String, param_value=_FLOAT, distribution_json=sa.Text
)
_USER_ATTRS = _child(
    "trial_user_attributes", "trial_user_attribute_id", key=sa.String, value_json=sa.Text
)
_SYSTEM_ATTRS = _child(
    "trial_system_attributes", "trial_system_attribute_id", key=sa.String, value_json=sa.Text
)
_INTERMEDIATE = _child(
    "trial_intermediate_values",
    "trial_intermediate_value_id",
    step=sa.Integer,
    intermediate_value=_FLOAT,
    intermediate_value_type=sa.String,
)
# Optuna stores infinities (and NaN intermediate values) as NULL with a type saying which.
_SPECIAL = {"INF_POS": float("inf"), "INF_NEG": float("-inf"), "NAN": float("nan")}


def load_trials(study: optuna.Study) -> list[FrozenTrial]:
    """All trials of ``study``, in trial-number order, as ``study.get_trials(deepcopy=False)``
    gives them (do not change them: trials share their distribution objects)."""
    from optuna.storages import RDBStorage
    from optuna.storages._cached_storage import _CachedStorage

    storage = study._storage
    if isinstance(storage, _CachedStorage):
        storage = storage._backend
    trials = None
    if isinstance(storage, RDBStorage):
        with storage.engine.connect() as conn:
            if _schema(conn) in KNOWN_SCHEMAS:
                trials = _read(conn, study._study_id)
    return study.get_trials(deepcopy=False) if trials is None else trials


def _schema(conn: sa.Connection) -> tuple[str, int] | None:
    try:
        revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        schema = conn.execute(sa.text("SELECT schema_version FROM version_info")).scalar_one()
    except sa.exc.SQLAlchemyError:  # no such table, or not one row: not a schema we know
        conn.rollback()
        return None
    return revision, schema


def _read(conn: sa.Connection, study_id: int) -> list[FrozenTrial]:
    from optuna.trial import FrozenTrial, TrialState

    t = _TRIALS
    rows = conn.execute(
        sa.select(t.c.trial_id, t.c.number, t.c.state, t.c.datetime_start, t.c.datetime_complete)
        .where(t.c.study_id == study_id)
        .order_by(t.c.trial_id)
    )
    fields: dict[int, dict[str, Any]] = {
        r.trial_id: {
            "number": r.number,
            "state": TrialState[r.state],
            "value": None,
            "datetime_start": _local(r.datetime_start),
            "datetime_complete": _local(r.datetime_complete),
            "params": {},
            "distributions": {},
            "user_attrs": {},
            "system_attrs": {},
            "intermediate_values": {},
            "trial_id": r.trial_id,
        }
        for r in rows
    }
    values: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, kind in _children(conn, study_id, _VALUES):
        values.setdefault(trial_id, {})[objective] = _SPECIAL.get(kind, value)
    _add_params(fields, _children(conn, study_id, _PARAMS))
    for key, table in (("user_attrs", _USER_ATTRS), ("system_attrs", _SYSTEM_ATTRS)):
        for trial_id, name, value_json in _children(conn, study_id, table):
            if trial_id in fields:
                fields[trial_id][key][name] = _json(value_json)
    for trial_id, step, value, kind in _children(conn, study_id, _INTERMEDIATE):
        if trial_id in fields:
            fields[trial_id]["intermediate_values"][step] = _SPECIAL.get(kind, value)
    trials = [FrozenTrial(**f, values=_listed(values.get(i))) for i, f in fields.items()]
    return sorted(trials, key=lambda trial: trial.number)


class Unreadable:
    """An attribute whose stored JSON does not parse (a damaged database): no reader takes it
    for a value of any type, so it is left out and listed like any malformed attribute."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<not JSON: {self.text[:20]!r}>"


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except (TypeError, ValueError):  # not JSON, or NULL
        return Unreadable(str(text))


def _children(conn: sa.Connection, study_id: int, table: sa.TableClause) -> sa.CursorResult:
    """(trial_id, *columns) of the study's rows of a ``_child`` table, in the order written."""
    trial_id, key, *columns = table.c
    of_study = sa.select(_TRIALS.c.trial_id).where(_TRIALS.c.study_id == study_id)
    return conn.execute(sa.select(trial_id, *columns).where(trial_id.in_(of_study)).order_by(key))


def _add_params(fields: dict[int, dict[str, Any]], rows: sa.CursorResult) -> None:
    """Each parameter in its distribution's external form (a choice, an int), as Optuna does;
    a distribution's JSON is parsed once, however many trials share it."""
    from optuna.distributions import json_to_distribution

    parsed: dict[str, Any] = {}
    for trial_id, name, internal, dist_json in rows:
        if trial_id not in fields:  # a trial added after the trials were read
            continue
        dist = parsed.get(dist_json)
        if dist is None:
            dist = parsed[dist_json] = json_to_distribution(dist_json)
        fields[trial_id]["params"][name] = dist.to_external_repr(internal)
        fields[trial_id]["distributions"][name] = dist


def _listed(by_objective: dict[int, float] | None) -> list[float] | None:
    if not by_objective:
        return None
    values: list[float] = [0] * len(by_objective)
    for objective, value in by_objective.items():
        values[objective] = value
    return values


def _local(utc: datetime.datetime | None) -> datetime.datetime | None:
    """Optuna's RDB storage keeps naive UTC and gives back naive local time."""
    if utc is None:
        return None
    return utc.replace(tzinfo=datetime.timezone.utc).astimezone().replace(tzinfo=None)
