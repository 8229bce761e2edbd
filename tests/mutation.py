"""`make mutation`: mutation testing of the learning core with mutmut (not part of
`make test` nor CI: it takes about an hour on 2 cores).

mutmut (configured in pyproject.toml) copies the package to mutants/, makes small changes
("mutants") to it one at a time and runs the fast tests that cover each changed function;
a mutant that no test fails on "survives". Only the functions of ``CORE`` are run: the
losses, GAE and rollout storage, action masks and env-defined actions, the stacked
update's minibatch loss and batch, and the trainer's per-step storage with its truncation
bootstrap.

Every survivor must be killed by a new test or listed in ``EQUIVALENTS``, one per line
with a reason: ``ippo_cli.losses.x_normalize__mutmut_12  # why no test can tell``. This
prints the kill rate, the listed survivors, and the diff of every survivor not listed;
it exits 1 if there is any. Names are numbered per function: editing a function renumbers
its mutants, whose survivors then show up again for review.

    python -m tests.mutation          # run, then report
    python -m tests.mutation --report # report on the last run only
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENTS = REPO / "tests" / "mutation_equivalents.txt"
CORE = (
    "ippo_cli.losses.*",
    "ippo_cli.rollout.*",
    "ippo_cli.masks.*",
    "ippo_cli.stacked_update.x__minibatch_terms__mutmut_*",
    "ippo_cli.stacked_update.x__stacked_batch__mutmut_*",
    "ippo_cli.trainer.xǁTrainerǁ_store_step__mutmut_*",
)
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
# What each mutmut status counts as here.
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
SURVIVED = {"survived", "no tests", "suspicious"}


def equivalents() -> dict[str, str]:
    """Listed mutant -> the reason it cannot be killed."""
    listed = {}
    for number, line in enumerate(EQUIVALENTS.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, reason = line.partition("#")
        if not reason.strip():
            sys.exit(f"{EQUIVALENTS.name}:{number}: '{name.strip()}' needs a reason after '#'")
        listed[name.strip()] = reason.strip()
    return listed


def results() -> dict[str, str]:
    """Status of every mutant of the core after the last run."""
    out = subprocess.run(
        [MUTMUT, "results", "--all", "true"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    statuses = dict(re.findall(r"^\s+(\S+): (.+)$", out, re.M))
    return {
        name: status
        for name, status in statuses.items()
        if any(fnmatch.fnmatch(name, pattern) for pattern in CORE)
    }


def report() -> int:
    statuses = results()
    listed = equivalents()
    counts = Counter(statuses.values())
    killed = sum(n for s, n in counts.items() if s in KILLED)
    survivors = sorted(name for name, s in statuses.items() if s in SURVIVED)
    unchecked = sorted(name for name, s in statuses.items() if s not in KILLED | SURVIVED)
    new = [name for name in survivors if name not in listed]
    stale = sorted(name for name in listed if statuses.get(name) not in SURVIVED)
    checked = killed + len(survivors)
    rate = killed / checked if checked else 0.0
    print(f"learning core: {len(statuses)} mutants, {checked} run, {killed} killed ({rate:.1%})")
    print(f"  {len(survivors) - len(new)} survivors listed as equivalent in {EQUIVALENTS.name}")
    for name in unchecked:
        print(f"  not run ({statuses[name]}): {name}")
    for name in stale:
        print(f"  listed but no longer surviving (remove it): {name}")
    for name in new:
        diff = subprocess.run([MUTMUT, "show", name], cwd=REPO, capture_output=True, text=True)
        print(f"\nnew survivor ({statuses[name]}): {name}\n{diff.stdout.strip()}")
    if new:
        print(f"\n{len(new)} new survivors: kill each with a test or list it in {EQUIVALENTS}")
    return 1 if new or unchecked else 0


def main() -> int:
    if "--report" not in sys.argv[1:]:
        subprocess.run([MUTMUT, "run", *CORE], cwd=REPO, check=True)
    return report()


if __name__ == "__main__":
    raise SystemExit(main())
