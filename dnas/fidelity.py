"""Pareto multi-fidelity: training epochs as the fidelity, in rungs, with asynchronous
successive halving on the Pareto ranks (MO-ASHA, Schmucker et al. 2021, "stopping" variant).

A candidate trains to the first rung; there it continues only if it stands in the best
``1 / reduction_factor`` of all candidates that have reached that rung so far, in the order
NSGA-II selects survivors (Pareto rank on (cost, accuracy at that rung), then crowding distance).
The first candidates to reach a rung always continue (the best 1 of fewer than
``reduction_factor``), as in Optuna's SuccessiveHalvingPruner. A decision reads only what the
study's storage holds at that moment: no worker ever waits for another.
"""

from __future__ import annotations

from dataclasses import dataclass

from dnas import pareto


def rungs(min_epochs: int, epochs: int, reduction_factor: int) -> tuple[int, ...]:
    """The epochs at which candidates are compared: min_epochs * factor**i below ``epochs``,
    then ``epochs`` itself (the top rung). ``min_epochs >= epochs`` gives one rung: no
    multi-fidelity."""
    out, r = [], min_epochs
    while r < epochs:
        out.append(r)
        r *= reduction_factor
    return (*out, epochs)


@dataclass(frozen=True)
class Decision:
    promote: bool
    place: int  # 1-based position of the candidate among those at the rung, best first
    competitors: int  # candidates at the rung, the deciding one included
    keep: int  # how many of them continue

    def __str__(self) -> str:
        verdict = "promoted" if self.promote else "stopped"
        return f"{verdict}: place {self.place} of {self.competitors}, best {self.keep} continue"


def decide(me: int, points: dict[int, tuple[float, float]], reduction_factor: int) -> Decision:
    """Whether candidate ``me`` continues past a rung. ``points`` maps every candidate at the
    rung (``me`` included) to (cost, accuracy at the rung)."""
    ids = sorted(points)  # earlier trials first: the last tie-break
    ranked = [ids[i] for i in pareto.order([points[i] for i in ids])]
    keep = max(1, len(ids) // reduction_factor)
    place = ranked.index(me) + 1
    return Decision(place <= keep, place, len(ids), keep)
