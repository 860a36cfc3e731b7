"""Proposals within budget by construction (dnas.proposal), checked against brute force."""

from __future__ import annotations

import math

import optuna
import pytest

from dnas.budget import allows_all, parse_budgets
from dnas.config import SearchConfig
from dnas.cost import count
from dnas.datasets import DATASETS
from dnas.proposal import FeasibleSpace
from dnas.space import candidates, within
from dnas.worker import make_sampler

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.mark.parametrize(
    "space, budgets",
    [
        ("all", ["1M-params", "20M-flops"]),
        ("densenet", ["20k-params", "3M-flops"]),
        ("densenet-bc", ["200k-params"]),
        ("wrn", ["60k-params", "10M-flops"]),
    ],
)
def test_random_proposals_are_all_within_budget_and_reach_the_whole_feasible_set(space, budgets):
    info, budgets = DATASETS["fashion-mnist"], parse_budgets(budgets)
    fs = FeasibleSpace(space, info, budgets)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(400):
        trial = study.ask()
        spec = fs.suggest(trial)
        assert allows_all(budgets, count(spec, (28, 28))), spec.name
        seen.add(spec.name.split("-drop")[0])
        study.tell(trial, 0.0)
    # Every proposal is one of the enumerated space's candidates within budget (brute force).
    family = "densenet" if space == "densenet-bc" else space
    names = {c.spec.name for c in within(budgets, list(candidates(family, info)))}
    assert seen <= names and len(seen) >= min(len(names), 40)


@pytest.mark.parametrize("b, theta, k", [(False, 1.0, 12), (True, 0.5, 8), (False, 0.25, 16)])
def test_the_last_choice_spans_exactly_the_feasible_depths(b, theta, k):
    """Fraction 0 draws n = 1 and a fraction near 1 the deepest network within budget, which
    brute force over the enumerated space finds independently."""
    info, budgets = DATASETS["fashion-mnist"], parse_budgets(["1M-params", "20M-flops"])
    fs = FeasibleSpace("densenet", info, budgets)
    feasible = [
        c.spec
        for c in within(budgets, list(candidates("densenet", info)))
        if (c.spec.bottleneck, c.spec.compression) == (b, theta)
    ]
    fits = [s.depth for s in feasible if s.growth_rate == k]
    growths = fs._growths("densenet", b, theta)
    assert set(growths) == {s.growth_rate for s in feasible}
    u_k = (growths.index(k) + 0.5) / len(growths)
    drawn = []
    for u in (0.0, 0.9999):
        params = {"densenet_bottleneck": b, "densenet_compression": theta, "densenet_dropout": 0,
                  "densenet_growth": u_k, "densenet_depth": u}  # fmt: skip
        drawn.append(fs.suggest(optuna.trial.FixedTrial(params)).depth)
    assert drawn == [min(fits), max(fits)]


@pytest.mark.parametrize(
    "space, budgets",
    [("densenet", ["20k-params", "3M-flops"]), ("wrn", ["60k-params", "10M-flops"])],
)
def test_the_candidates_are_every_architecture_within_budget_with_each_dropout(space, budgets):
    # What a search queues when its sampler keeps to candidates it had (TrialRunner.queue_untried).
    info, budgets = DATASETS["fashion-mnist"], parse_budgets(budgets)
    fs = FeasibleSpace(space, info, budgets)
    listed = fs.candidates()
    brute = {c.spec.name for c in within(budgets, list(candidates(space, info)))}
    rates = {"densenet": {0.0, 0.2}, "wrn": {0.0, 0.3}}[space]  # the papers' (issue's) rates
    by_architecture: dict[str, set[float]] = {}
    for spec in listed:
        by_architecture.setdefault(spec.name.split("-drop")[0], set()).add(spec.dropout)
    assert set(by_architecture) == brute and all(r == rates for r in by_architecture.values())
    assert len(listed) == len(brute) * len(rates) == len({s.name for s in listed})
    study = optuna.create_study()
    for spec in listed:
        study.enqueue_trial(fs.params_for(spec))
    for spec in listed:  # suggest, fed the values queued, returns exactly the candidate
        trial = study.ask()
        assert fs.suggest(trial) == spec
        study.tell(trial, 0.5)


def test_dropout_is_searched_with_the_papers_values():
    info, budgets = DATASETS["fashion-mnist"], parse_budgets(["1M-params"])
    fs = FeasibleSpace("all", info, budgets)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drops = {"densenet": set(), "wrn": set()}
    for _ in range(200):
        trial = study.ask()
        spec = fs.suggest(trial)
        drops[spec.family].add(spec.dropout)
        study.tell(trial, 0.0)
    assert drops == {"densenet": {0.0, 0.2}, "wrn": {0.0, 0.3}}


def test_a_budget_no_wrn_meets_leaves_only_densenets():
    # The smallest WRN (wrn-10-1) has 77,850 parameters on Fashion-MNIST by dnas.cost.
    fs = FeasibleSpace("all", DATASETS["fashion-mnist"], parse_budgets(["20k-params"]))
    assert fs.families == ["densenet"]
    assert FeasibleSpace("wrn", DATASETS["fashion-mnist"], parse_budgets(["20k-params"])).empty()


def test_the_default_sampler_learns_over_the_fractions():
    """Told that accuracy grows with FLOPs, TPE (dnas's default sampler, seeded: deterministic)
    ends with candidates nearer the FLOPs budget than random sampling over the same fractions."""
    info, budgets = DATASETS["fashion-mnist"], parse_budgets(["1M-params", "20M-flops"])
    fs = FeasibleSpace("all", info, budgets)
    last = {}
    for name, sampler in (("tpe", make_sampler(SearchConfig())),
                          ("random", optuna.samplers.RandomSampler(seed=0))):  # fmt: skip
        study = optuna.create_study(direction="maximize", sampler=sampler)
        flops = []
        for _ in range(40):
            trial = study.ask()
            flops.append(count(fs.suggest(trial), (28, 28)).flops)
            study.tell(trial, flops[-1] / 20e6)
        assert max(flops) <= 20e6
        last[name] = sum(flops[-10:]) / 10
    assert last["tpe"] > 1.2 * last["random"]


DESIGN_BUDGETS = [("1M-params", "20M-flops"), ("90k-params", "60M-memory")]


@pytest.mark.parametrize("space", ["all", "densenet-bc", "wrn"])
@pytest.mark.parametrize("budget_texts", DESIGN_BUDGETS)
def test_initial_design_spreads_over_log_params_and_round_trips(space, budget_texts):
    fs = FeasibleSpace(space, DATASETS["fashion-mnist"], parse_budgets(budget_texts), 64)
    picks = fs.spread(6)
    sizes = [count(s, (28, 28)).params for s in picks]
    assert len(set(picks)) == 6 and sizes == sorted(sizes)
    feasible = {s: count(s, (28, 28)).params for s in fs.feasible()}
    lo, hi = math.log(min(feasible.values())), math.log(max(feasible.values()))
    step = (hi - lo) / 5
    taken: set = set()
    for i in range(6):  # brute force: each point's pick is the quickest near it
        point = lo + i * step
        off = {s: abs(math.log(p) - point) for s, p in feasible.items() if s not in taken}
        near = [s for s, d in off.items() if d <= step / 4]  # a quarter of the spacing
        pick = next(s for s in picks if s not in taken and (s in near or not near))
        if near:
            assert fs.activations(pick) == min(fs.activations(s) for s in near)
        else:  # a sparse space: the nearest there is
            assert off[pick] == min(off.values())
        taken.add(pick)
    assert taken == set(picks)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for spec in picks:
        study.enqueue_trial(fs.params_for(spec))
    for spec in picks:  # suggest, fed the enqueued values, returns exactly the picks
        trial = study.ask()
        assert fs.suggest(trial) == spec
        study.tell(trial, [0.5, 1.0])
