"""`run_pbt`: population-based training in one run (`ptm tune MODEL --pbt`).

P members train in lockstep (`training.fit`); every `interval` epochs the bottom quantile copies
weights, optimizer state and BatchNorm statistics from a random member of the top quantile (a
gather on the population axis), then perturbs each searched hyperparameter by 0.8 or 1.2, or
resamples it from the space with probability 0.25 (Ray Tune's defaults, synchronous as in the
paper's appendix A.1). Every random choice derives from `seed` and the epoch, so a run is
deterministic, and it saves after each exploit step and when stopped: resuming continues bit
for bit. The lineage (who copied whom, when, and each member's hyperparameters) travels in
every member's checkpoint and ends in pbt.json; pbt.png draws the schedules.

    from ptm_func import run_pbt
    report = run_pbt("net", space={"lr": "1e-3:1e-1:log", "momentum": "0:0.95"},
                     population=8, interval=4, epochs=20, device="cpu")
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ptm_func.data.sources import load_dataset
from ptm_func.errors import PlotUnavailable, SettingsError
from ptm_func.files import atomic, jsonio
from ptm_func.files.ownership import first_free, owned
from ptm_func.files.resume import load_runs, save_runs
from ptm_func.nets import rng
from ptm_func.nets.references import use_model
from ptm_func.nets.registry import reference_of_model
from ptm_func.reports.study_chart import schedule_chart
from ptm_func.runs.arguments import check_common, whole
from ptm_func.runs.reporter import Reporter
from ptm_func.runs.search_space import HYPER, Dimension, Space
from ptm_func.runs.signals import StopOnSignal
from ptm_func.runs.sweep import holds_files, numbered_folders
from ptm_func.training.config import TrainConfig, book_setup
from ptm_func.training.devices import resolve_device
from ptm_func.training.loop import fit
from ptm_func.training.members import unstack
from ptm_func.training.state import (
    TrainResult,
    TrainState,
    init_train_state,
    member_state,
    per_member,
    select_members,
    stack_members,
)

SPEC_NAME, CHART_NAME = "pbt.json", "pbt.png"


@dataclass(frozen=True)
class Rules:
    """How the population is exploited and explored (Ray Tune's PBT defaults)."""

    interval: int = 4  # epochs between exploit steps
    quantile: float = 0.25  # the bottom fraction copies from the top fraction
    resample: float = 0.25  # the chance a hyperparameter is drawn again instead of perturbed
    factors: tuple[float, float] = (0.8, 1.2)

    def check(self, population: int, epochs: int) -> None:
        if population < 2:
            raise SettingsError(f"--population must be >= 2, got {population}")
        if not 1 <= self.interval:
            raise SettingsError(f"--interval must be >= 1 epoch, got {self.interval}")
        if not 0 < self.quantile <= 0.5:
            raise SettingsError(f"--quantile must be in (0, 0.5], got {self.quantile}")
        if not 0 <= self.resample <= 1:
            raise SettingsError(f"--resample must be in [0, 1], got {self.resample}")
        if len(self.factors) != 2 or not all(math.isfinite(f) and f > 0 for f in self.factors):
            raise SettingsError(f"--perturb takes two positive factors, e.g. 0.8,1.2, got {self.factors}")
        if self.interval >= epochs:
            raise SettingsError(f"--interval {self.interval} leaves no exploit step in {epochs} epochs")


@dataclass
class PbtReport:
    variant: str
    folder: Path
    members: list[dict[str, Any]] = field(default_factory=list)  # best val accuracy first
    events: list[dict[str, Any]] = field(default_factory=list)  # the lineage
    chart: Path | None = None
    interrupted: bool = False
    signal: int = 0


def draw(dim: Dimension, gen: torch.Generator) -> float | int:
    """A value of `dim` from `gen` (uniform, log-uniform, or one of the choices)."""
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    if dim.choices:
        return dim.choices[min(int(u * len(dim.choices)), len(dim.choices) - 1)]
    assert dim.low is not None and dim.high is not None
    if dim.log:
        return math.exp(math.log(dim.low) + u * (math.log(dim.high) - math.log(dim.low)))
    return dim.low + u * (dim.high - dim.low)


def perturb(
    dim: Dimension, value: float | int, rules: Rules, gen: torch.Generator
) -> tuple[float | int, str]:
    """Explore: resample with probability rules.resample, else scale by a factor (a choice moves
    to its neighbour); a range's value stays inside it."""
    if float(torch.rand((), generator=gen, dtype=torch.float64)) < rules.resample:
        return draw(dim, gen), "resampled"
    up = bool(torch.randint(2, (), generator=gen))
    if dim.choices:
        at = dim.choices.index(value) if value in dim.choices else 0
        at = min(max(at + (1 if up else -1), 0), len(dim.choices) - 1)
        return dim.choices[at], "shifted"
    assert dim.low is not None and dim.high is not None
    factor = rules.factors[1] if up else rules.factors[0]
    return min(max(value * factor, dim.low), dim.high), f"x{factor:g}"


def exploit_step(epoch: int, vals: list[float], values: list[dict[str, Any]], space: Space, rules: Rules,
                 seed: int) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    """One synchronous exploit-and-explore step after `epoch`: (the member each slot now takes
    its weights from, each member's new values, the lineage events)."""
    k = len(vals)
    n = min(max(1, math.ceil(k * rules.quantile)), k // 2)
    ranked = sorted(range(k), key=lambda r: (vals[r], -r))  # worst first; a tie: the later is worse
    bottom, top = sorted(ranked[:n]), ranked[-n:]
    gen = torch.Generator().manual_seed(int(rng.fold_in(rng.fold_in(seed, 7), epoch)) % 2**63)
    sources, new_values, events = list(range(k)), [dict(v) for v in values], []
    for member in bottom:
        donor = top[int(torch.randint(n, (), generator=gen))]
        sources[member] = donor
        how = {}
        for dim in space.dimensions:
            new_values[member][dim.name], how[dim.name] = perturb(dim, values[donor][dim.name], rules, gen)
        events.append({"epoch": epoch, "member": member, "copied": donor, "val": vals[member],
                       "donor_val": vals[donor], "before": values[member], "after": new_values[member],
                       "how": how})  # fmt: skip
    return sources, new_values, events


@dataclass
class _Population:
    """A PBT run as planned: the model, each member's config and searched values, the files."""

    variant: str
    net: Any
    space: Space
    rules: Rules
    seed: int
    configs: list[TrainConfig]
    values: list[dict[str, Any]]
    folder: Path
    events: list[dict[str, Any]] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)

    def paths(self) -> list[Path]:
        return [self.folder / f"member-{r:02d}.safetensors" for r in range(len(self.configs))]


def run_pbt(
    variant: str | None = None,
    *,
    space: dict[str, str] | None = None,
    population: int = 8,
    rules: Rules | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    data: str | Path | None = None,
    classes: list[str] | None = None,
    device: str | torch.device = "auto",
    reporter: Reporter | None = None,
    stop_on_signals: bool = False,
    **settings: Any,
) -> PbtReport:
    """Population-based training of `variant` over `space` (lr, momentum, weight decay, ...).

    Member r starts from values drawn from `space` with `seed` and trains with seed
    TrainConfig.seed + r; `settings` (epochs, batch_size, ...) are shared. `out` defaults to
    runs/pbt-VARIANT (numbered when taken); `resume` continues the run in that folder.
    """
    check_common(
        out=out, resume=resume, data=data, classes=classes, device=device, checkpoint_every=0,
        reporter=reporter, stop_on_signals=stop_on_signals, track=None,
    )  # fmt: skip
    whole("population", population)
    whole("seed", seed)
    reporter = reporter or Reporter()
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if resume is not None:
        plan, start = _resumed(Path(resume), dev)
        data, classes = data or plan.spec["data"], plan.spec["classes"]
    else:
        if variant is None:
            raise SettingsError("give a MODEL for population-based training (or --resume FOLDER)")
        plan, start = (
            _planned(use_model(variant), space or {}, population, rules or Rules(), seed, out, settings),
            None,
        )
    stop = StopOnSignal(reporter.message)
    folder_lock = owned(plan.folder) if out is not None or resume is not None else first_free(
        numbered_folders(plan.folder), holds_files)  # fmt: skip
    with folder_lock as plan.folder, stop.installed() if stop_on_signals else contextlib.nullcontext():
        if resume is None and holds_files(plan.folder):
            raise SettingsError(f"{plan.folder} holds files already; give another --out, or --resume it")
        dataset = load_dataset(data, classes, dev, notify=reporter.note)
        if resume is None:
            plan.net = plan.net.with_classes(len(dataset.classes))
            plan.spec = _spec(plan, dataset)
        atomic.atomic_write_text(plan.folder / SPEC_NAME, jsonio.dumps(plan.spec, indent=2) + "\n")
        if start is None:  # saved before the first step: a run killed in epoch 1 resumes too
            start = stack_members(
                [init_train_state(plan.net, c, dev, momentum_buffers=True) for c in plan.configs]
            )
            _save(plan, start)
        reporter.message(
            f"population-based training of {plan.variant}: {len(plan.configs)} members, exploit every "
            f"{plan.rules.interval} epochs (bottom {plan.rules.quantile:g} copies the top, perturbs "
            f"x{plan.rules.factors[0]:g}/x{plan.rules.factors[1]:g} "
            f"or resamples at {plan.rules.resample:g}); "
            f"{plan.space.describe()}; in {plan.folder}"
        )
        with reporter.running(plan.configs[0].epochs, start.epoch if start else 0):
            result = fit(plan.net, dataset, plan.configs, start=start, exploit=_exploiter(plan),
                         on_epoch=lambda stats, ts: reporter.epoch(stats), on_step=reporter.step,
                         stop_requested=stop)  # fmt: skip
        _save(plan, result.train_state, result)
        report = PbtReport(plan.variant, plan.folder, events=plan.events, interrupted=result.interrupted,
                           signal=stop.signal)  # fmt: skip
        if not result.interrupted:
            report.members = _results(plan, result)
            plan.spec.update(events=plan.events, results=report.members)
            atomic.atomic_write_text(plan.folder / SPEC_NAME, jsonio.dumps(plan.spec, indent=2) + "\n")
            report.chart = _chart(plan)
        return report


def _planned(variant, texts, population, rules, seed, out, settings) -> _Population:
    space = Space.parse(texts)
    wrong = [d.name for d in space.dimensions if d.name not in HYPER]
    if wrong:
        raise SettingsError(
            f"--pbt perturbs {', '.join(HYPER)}; not {', '.join(wrong)} (one model, one step)"
        )
    if not 0 <= seed < 2**63:
        raise SettingsError(f"--seed must be in 0..2**63-1, got {seed}")
    settings = {**settings, **space.fixed}  # one value for every member: a fixed setting
    epochs = settings.get("epochs", TrainConfig.epochs)
    rules.check(population, epochs)
    settings["eval_every"] = math.gcd(rules.interval, epochs)  # val at every exploit step and the end
    base_seed = settings.pop("seed", TrainConfig.seed)
    gen = torch.Generator().manual_seed(int(rng.fold_in(seed, 0)) % 2**63)
    values = [{d.name: draw(d, gen) for d in space.dimensions} for _ in range(population)]
    try:
        net, _ = book_setup(variant, **settings)
        configs = [book_setup(variant, **settings, **v, seed=base_seed + r)[1] for r, v in enumerate(values)]
    except ValueError as err:
        raise SettingsError(str(err)) from None
    folder = Path(out) if out is not None else Path("runs") / f"pbt-{variant}"
    return _Population(variant, net, space, rules, seed, configs, values, folder)


def _resumed(folder: Path, dev) -> tuple[_Population, TrainState]:
    """The run saved in `folder`: its plan, and the members where they stopped."""
    try:
        spec = json.loads((folder / SPEC_NAME).read_text(encoding="utf-8"))
        space = Space.parse(spec["space_texts"])
        rules = Rules(**{**spec["rules"], "factors": tuple(spec["rules"]["factors"])})
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SettingsError(f"{folder} holds no readable {SPEC_NAME} ({err}): not a PBT run") from None
    if spec.get("reference"):
        use_model(spec["reference"])  # a user's model: imported again, as it was named
    net, _ = book_setup(spec["variant"], **spec["model_config"])
    paths = [folder / f"member-{r:02d}.safetensors" for r in range(spec["population"])]
    loaded = load_runs(paths, dev)
    facts = loaded[0][0].training
    plan = _Population(spec["variant"], net, space, rules, spec["seed"], [c for _, _, c in loaded],
                       facts["pbt_values"], folder, list(facts["pbt_events"]), spec)  # fmt: skip
    return plan, stack_members([ts for _, ts, _ in loaded])


def _spec(plan: _Population, dataset) -> dict[str, Any]:
    texts = {}
    for d in plan.space.dimensions:
        if d.choices:
            texts[d.name] = ",".join(f"{c!r}" for c in d.choices)
        else:
            texts[d.name] = f"{d.low!r}:{d.high!r}" + (":log" if d.log else "") + (":int" if d.whole else "")
    texts.update({k: repr(v) for k, v in plan.space.fixed.items()})
    return {
        "variant": plan.variant,
        **({} if plan.net.builtin else {"reference": reference_of_model(plan.variant)}),
        "model_config": dict(plan.net.config),
        "space_texts": texts,
        "population": len(plan.configs),
        "rules": {
            "interval": plan.rules.interval,
            "quantile": plan.rules.quantile,
            "resample": plan.rules.resample,
            "factors": list(plan.rules.factors),
        },  # fmt: skip
        "seed": plan.seed,
        "seeds": [c.seed for c in plan.configs],
        "initial": plan.values,
        "data": dataset.source,
        "classes": list(dataset.classes),
    }


def _exploiter(plan: _Population):
    """fit's exploit hook: every `interval` epochs, copy, perturb, record, save."""

    def exploit(stats, ts: TrainState, configs: list[TrainConfig]):
        if stats.epoch % plan.rules.interval:
            return None
        vals = list((stats.members or {}).get("val_accuracy") or [])
        if len(vals) != len(configs) or any(v is None for v in vals):
            return None  # a member diverged: no ranking this time
        sources, values, events = exploit_step(
            stats.epoch, vals, plan.values, plan.space, plan.rules, plan.seed
        )
        new_ts = select_members(ts, sources)
        new_configs = [replace(c, **{k: v for k, v in values[r].items()}) for r, c in enumerate(configs)]
        plan.values, plan.configs = values, new_configs
        plan.events.extend(events)
        _save(plan, new_ts)
        return new_ts, new_configs

    return exploit


def _save(plan: _Population, ts: TrainState, result: TrainResult | None = None) -> None:
    """Every member's checkpoint, as one commit; the lineage rides in each one's facts."""
    facts = {"variant": plan.variant, "pbt_values": plan.values, "pbt_events": plan.events}
    runs = []
    done = (
        result if result is not None and not result.interrupted and result.val_accuracy is not None else None
    )
    for r, (path, config) in enumerate(zip(plan.paths(), plan.configs, strict=True)):
        # to resume, every member keeps its momentum buffer (an exploit step may give it momentum)
        member = done.member(r) if done is not None else _with_buffers(ts, r, config)
        extra = {}
        if done is not None:
            extra = {
                "train_accuracy": per_member(done.train_accuracy)[r],
                "val_accuracy": per_member(done.val_accuracy)[r],
            }
        runs.append((path, plan.net, member, config, {**facts, **extra, "epochs_done": member.epoch}))
    save_runs(runs)


def _with_buffers(ts: TrainState, r: int, config: TrainConfig) -> TrainState:
    """Member r of the population as saved to resume: its momentum buffer kept even at momentum 0."""
    return replace(member_state(ts, r, config), opt_state=unstack(ts.opt_state, r))


def _results(plan: _Population, result) -> list[dict[str, Any]]:
    rows = []
    for r, values in enumerate(plan.values):
        copied = sum(e["member"] == r for e in plan.events)
        rows.append({"member": r, **values, "seed": plan.configs[r].seed, "copies": copied,
                     "train_accuracy": result.train_accuracy[r], "val_accuracy": result.val_accuracy[r],
                     "checkpoint": str(plan.paths()[r])})  # fmt: skip
    return sorted(rows, key=lambda row: -(row["val_accuracy"] or 0.0))


def schedules(spec_initial: list[dict[str, Any]], events: list[dict[str, Any]], epochs: int) -> list[list]:
    """Each member's hyperparameters over the epochs: [(epoch from, values)], from the lineage."""
    out = [[(0, dict(v))] for v in spec_initial]
    for event in sorted(events, key=lambda e: e["epoch"]):
        out[event["member"]].append((event["epoch"], dict(event["after"])))
    return out


def _chart(plan: _Population) -> Path | None:
    try:
        lines = schedules(plan.spec["initial"], plan.events, plan.configs[0].epochs)
        logs = [d.name for d in plan.space.dimensions if d.log]
        title = (
            f"PBT of {plan.variant}: {len(plan.configs)} members, exploit every {plan.rules.interval} epochs"
        )
        return schedule_chart(lines, [d.name for d in plan.space.dimensions], logs, plan.configs[0].epochs,
                              plan.folder / CHART_NAME, title)  # fmt: skip
    except PlotUnavailable:  # matplotlib missing: the results stand without the chart
        return None
