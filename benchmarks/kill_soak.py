"""kill -9 soak: SIGKILL a real training run at random moments, resume it each time, count the losses.

  python benchmarks/kill_soak.py --workdir=/tmp/soak --kills=10
  python benchmarks/kill_soak.py --workdir=/tmp/soak --kills=10 --reference=/tmp/soak_ref

Runs `python -m colorgan.main --config=configs/quickstart.py` (overrides via --override) and kills it
--kills times: the first --startup_kills at a random moment after the launch (in imports, compilation
or early training), every --save_kill_every-th one the moment a checkpoint's tmp directory appears
(mid-save), the others at a random moment of training (uniform in [0, --train_delay] s after the run
logs its first step). With --jax_cache (default: next to the workdir) restarts load the compiled step
from JAX's persistent cache, as a production job would, instead of compiling it again. After each
kill the same command runs again. A restart counts as resumed when it starts training at
the latest committed checkpoint (the step it logs) with no error. Steps lost by a kill: the last step
the killed run logged minus the step the next run resumed at. A last, uninterrupted rerun finishes
the run; with --reference, an uninterrupted run in another workdir is compared leaf by leaf.
The last line is a JSON object with the figures.
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEP = re.compile(r"\] step (\d+)/(\d+) ")
_START = re.compile(r"Training (\d+) -> (\d+) steps")


class Run:
  """One `python -m colorgan.main` process, its output read line by line."""

  def __init__(self, workdir: str, config: str, overrides: list[str], jax_cache: str | None):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    if jax_cache:
      env["JAX_COMPILATION_CACHE_DIR"] = jax_cache
    self.proc = subprocess.Popen(
      [
        sys.executable,
        "-m",
        "colorgan.main",
        f"--config={config}",
        f"--workdir={workdir}",
        "--config.log_every_steps=1",
        *overrides,
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    self.lines: list[str] = []
    self.start_step: int | None = None
    self.total_steps: int | None = None
    self.last_step: int | None = None
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append(line.rstrip("\n"))
      if m := _START.search(line):
        self.start_step, self.total_steps = int(m[1]), int(m[2])
      if m := _STEP.search(line):
        self.last_step = int(m[1])

  def alive(self) -> bool:
    return self.proc.poll() is None

  def kill(self) -> None:
    if self.alive():
      self.proc.send_signal(signal.SIGKILL)

  def wait(self) -> int:
    code = self.proc.wait()
    self._reader.join(30)
    return code


def committed_steps(workdir: str) -> list[int]:
  directory = os.path.join(workdir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(n) for n in names if n.isdigit())


def tmp_dirs(workdir: str) -> list[str]:
  directory = os.path.join(workdir, "checkpoints")
  try:
    return [n for n in os.listdir(directory) if ".orbax-checkpoint-tmp" in n]
  except FileNotFoundError:
    return []


def compare(workdir: str, reference: str) -> bool:
  """Every leaf of the two runs' latest checkpoints equal (np.array_equal)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  trees = []
  for path in (workdir, reference):
    manager = ocp.CheckpointManager(
      os.path.join(os.path.abspath(path), "checkpoints"), item_names=("state",)
    )
    step = manager.latest_step()
    trees.append(
      manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore())).state
    )
    manager.close()
  import jax  # pylint: disable=g-import-not-at-top

  def data(x):
    return np.asarray(
      jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    )

  a, b = (jax.tree.leaves_with_path(t) for t in trees)
  return len(a) == len(b) > 0 and all(
    pa == pb and np.array_equal(data(xa), data(xb)) for (pa, xa), (pb, xb) in zip(a, b)
  )


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--config", default="configs/quickstart.py")
  parser.add_argument(
    "--override",
    action="append",
    default=[],
    help="extra --config.KEY=VALUE, e.g. --override=--config.total_steps=300",
  )
  parser.add_argument("--kills", type=int, default=10)
  parser.add_argument("--startup_kills", type=int, default=1)
  parser.add_argument(
    "--min_delay",
    type=float,
    default=5.0,
    help="startup kills: seconds after the launch, uniform in [min_delay, max_delay]",
  )
  parser.add_argument("--max_delay", type=float, default=90.0)
  parser.add_argument(
    "--train_delay",
    type=float,
    default=60.0,
    help="other kills: up to this many seconds after training started",
  )
  parser.add_argument(
    "--save_kill_every",
    type=int,
    default=3,
    help="every N-th kill waits for a save in flight (0: never)",
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--reference", help="workdir for an uninterrupted run to compare against")
  parser.add_argument(
    "--jax_cache",
    help="JAX compilation cache directory (default: "
    "WORKDIR.jax_cache; 'none' to compile on every start)",
  )
  args = parser.parse_args()
  if os.path.exists(args.workdir) and os.listdir(args.workdir):
    sys.exit(f"kill_soak: --workdir={args.workdir} is not empty: the soak starts a fresh run")
  jax_cache = args.jax_cache or os.path.abspath(args.workdir) + ".jax_cache"
  jax_cache = None if jax_cache == "none" else jax_cache
  rng = random.Random(args.seed)
  started = time.time()
  kills, awaiting, errors = [], [], []  # awaiting: kills whose restart has not trained yet

  def settle(run: Run, committed_before: list[int]) -> None:
    """A run that started training decides the kills before it: resumed at the latest commit?"""
    if run.start_step is None:
      return
    latest = committed_before[-1] if committed_before else 0
    for record in awaiting:
      record["resumed"] = run.start_step == latest
      record["resumed_at"] = run.start_step
      record["steps_lost"] = max(0, (record["last_step"] or 0) - run.start_step)
    awaiting.clear()

  for k in range(1, args.kills + 1):
    committed_before = committed_steps(args.workdir)
    run = Run(args.workdir, args.config, args.override, jax_cache)
    if args.save_kill_every and k % args.save_kill_every == 0:
      while run.alive() and not tmp_dirs(args.workdir):
        time.sleep(0.001)
      moment = "mid-save"
    else:
      if k <= args.startup_kills:
        delay = rng.uniform(args.min_delay, args.max_delay)
        moment = f"{delay:.1f} s after the launch"
      else:
        while run.alive() and run.last_step is None:
          time.sleep(0.01)
        delay = rng.uniform(0, args.train_delay)
        moment = f"{delay:.1f} s into training"
      deadline = time.time() + delay
      while run.alive() and time.time() < deadline:
        time.sleep(0.01)
    in_flight = tmp_dirs(args.workdir)
    if not run.alive():
      print(f"kill {k}: the run ended before the kill (exit {run.proc.returncode})", flush=True)
      errors += [line for line in run.lines if "Error" in line or "Traceback" in line][:3]
      break
    run.kill()
    run.wait()
    settle(run, committed_before)
    committed = committed_steps(args.workdir)
    record = {
      "kill": k,
      "moment": moment,
      "started_at": run.start_step,
      "last_step": run.last_step,
      "committed": committed[-1] if committed else None,
      "save_in_flight": bool(in_flight),
      "tmp_dirs_left": len(tmp_dirs(args.workdir)),
    }
    kills.append(record)
    awaiting.append(record)
    print(
      f"kill {k} ({moment}): started at step {run.start_step}, killed after step "
      f"{run.last_step}; latest committed {record['committed']}; save in flight: "
      f"{bool(in_flight)}",
      flush=True,
    )

  # The final, uninterrupted rerun finishes the run.
  committed_before = committed_steps(args.workdir)
  final = Run(args.workdir, args.config, args.override, jax_cache)
  code = final.wait()
  settle(final, committed_before)
  if code != 0:
    errors += final.lines[-5:]
  print(
    f"final run: exit {code}, started at step {final.start_step}, reached {final.last_step}",
    flush=True,
  )

  identical = None
  if args.reference and code == 0:
    ref = Run(args.reference, args.config, args.override, jax_cache)
    if ref.wait() == 0:
      identical = compare(args.workdir, args.reference)

  decided = [r for r in kills if "resumed" in r]
  summary = {
    "kills": len(kills),
    "kills_mid_save": sum(r["save_in_flight"] for r in kills),
    "kills_before_training": sum(r["started_at"] is None for r in kills),
    "restarts_checked": len(decided),
    "resumed": sum(bool(r["resumed"]) for r in decided),
    "max_steps_lost": max((r["steps_lost"] for r in decided), default=None),
    "final_exit": code,
    "final_step": final.last_step,
    "total_steps": final.total_steps,
    "bit_identical_to_uninterrupted": identical,
    "wall_s": round(time.time() - started, 1),
    "errors": errors,
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
