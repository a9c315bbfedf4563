"""The car park, analysed from Python: waits from the operations, a sweep against theory.

The plain-script version of carpark_analysis.ipynb (the same steps, printing instead of
displaying). Run it from anywhere with sim installed:

    python examples/carpark_analysis.py

It writes its runs under ./logs and two pictures beside them. Every run uses the virtual
clock: one process runs at a time and simulated time jumps ahead, so a run is deterministic
for its seed and takes as long as its operations, not as long as the cars drive.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script draws into files; the notebook draws inline

import matplotlib.pyplot as plt

import sim
from sim.queueing import finite_source

OUT = Path("logs")
# A config as data, the same content as a TOML file. Five spaces, twelve cars: often full,
# so there are waits worth looking at.
CARPARK = {
    "scenario": "carpark",
    "title": "5 spaces, 12 cars, 25 visits each",
    "params": {
        "capacity": 5,
        "cars": 12,
        "visits": 25,
        "drive": {"dist": "exponential", "mean": 20},
        "park": {"dist": "exponential", "mean": 10},
    },
    "clock": {"mode": "virtual", "speedup": 24000},
}

# 1. One run: how long did the cars wait at the barrier?
run = sim.run(CARPARK, seed=1, out=OUT)
print(run)
print({k: round(v, 3) for k, v in run.metrics.items() if k.startswith("wait_")})
print([f"{v.status}: {v.name}" for v in run.verdicts])

# 2. The waits, one per acquire of the semaphore: the same numbers the summary reports.
acquires = run.ops.query("prim == 'spaces' and op == 'acquire'")
print(len(acquires), "acquires;", f"{(acquires.wait_sim_min > 0.01).mean():.0%} had to wait")
print("mean wait from .ops:", round(acquires.wait_sim_min.mean(), 3), "sim min;",
      "summary:", round(run.metrics["wait_mean"], 3))  # fmt: skip
fig, ax = plt.subplots(figsize=(7, 3))
ax.hist(acquires.wait_sim_min, bins=30)
ax.set_xlabel("wait at the barrier (simulated minutes)")
ax.set_ylabel("acquires")
fig.tight_layout()
fig.savefig(OUT / "waits.png")

# Who held a space for how long, from .holds; what each car did, from .states.
print(run.holds.groupby("actor").held_sim_min.sum().describe().round(1).to_dict())
print(run.states.groupby("state").duration_s.sum().round(3).to_dict())

# 3. A sweep over the number of cars, against the finite-source model (M/M/c//N).
done = sim.sweep(CARPARK, {"params.cars": [6, 10, 14]}, repeat=3, jobs=2, seed=1,
                 out=OUT)  # fmt: skip
table = done.summary[["params.cars", "ok", "steady_wait_mean_mean", "steady_wait_mean_ci95",
                      "theory_steady_wait_mean"]]  # fmt: skip
print(table.round(3).to_string(index=False))
# The model, straight from sim.queueing, for the single run above (and the run's own .theory).
model = finite_source(12, 5, 20.0, 10.0)
print(run.theory)
print("model at 12 cars:", round(model.wait_mean, 3), "sim min; P(wait)", round(model.p_wait, 3))

fig, ax = plt.subplots(figsize=(7, 3))
ax.errorbar(table["params.cars"], table["steady_wait_mean_mean"],
            yerr=table["steady_wait_mean_ci95"].fillna(0), fmt="o", capsize=3,
            label="measured (mean, 95 % CI)")  # fmt: skip
ax.plot(table["params.cars"], table["theory_steady_wait_mean"], "-", label="M/M/c//N")
ax.set_xlabel("cars")
ax.set_ylabel("steady-state wait (sim min)")
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "sweep.png")
print("pictures:", OUT / "waits.png", OUT / "sweep.png")
