"""A study over config values in one command: one training run per point of a product of values.

  python launch/sweep.py --config=configs/quickstart.py \
      --sweep='loss.gan=[vanilla,lsgan,hinge] loss.l1_weight=[10,100]'            # prints 6 commands
  python launch/sweep.py ... --run -- --config.total_steps=150   # runs them in turn, then the table
  python launch/sweep.py ... --table                            # the table of what the runs wrote

Each point trains in its own workdir under --workdir, named after its overrides
(`workdirs/sweep/gan=lsgan,l1_weight=10`); arguments after `--` go to every run unchanged. Every
point's config is built and validated before anything runs, so a typo stops the sweep at once, in one
line. Rerunning a sweep resumes each run from its last checkpoint (a finished run ends at once).

The table shows each point's last evaluation: the newest WORKDIR/eval/step_<N>.json (model and gray
baseline metrics, written by --mode=evaluate and by periodic evaluation during training). A run with no
evaluation file falls back to its last logged training scalars, read from its TensorBoard events (the
averages over the last log interval, on training batches); the `source` column says which.
"""

import argparse
import glob
import importlib.util
import itertools
import json
import math
import os
import re
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# Training scalars shown when a run has no evaluation file (all logged by colorgan/training/step.py).
TRAIN_COLUMNS = ("ab_l1_lab", "g_recon", "g_adv", "d_loss", "d_real_logit", "d_fake_logit")


class SweepError(ValueError):
  """A sweep the script cannot run; the message names the part and the fix."""


# ----------------------------------------------------------------------------- the product
def parse_sweep(spec: str) -> list[tuple[str, list[str]]]:
  """'a.b=[1,2] c=x' -> [("a.b", ["1", "2"]), ("c", ["x"])], keys in the order given."""
  items = re.findall(r"\S+=\[[^\]]*\]|\S+", spec)
  axes = []
  for item in items:
    key, sep, values = item.partition("=")
    if not sep or not key:
      raise SweepError(f"--sweep item {item!r} is not KEY=[v1,v2,...] (or KEY=value)")
    if values.startswith("["):
      if not values.endswith("]"):
        raise SweepError(f"--sweep item {item!r}: the value list has no closing ']'")
      values = [v.strip() for v in values[1:-1].split(",")]
    else:
      values = [values]
    if not values or any(not v for v in values):
      raise SweepError(f"--sweep item {item!r} has an empty value")
    if key in dict(axes):
      raise SweepError(f"--sweep names {key} twice: give all its values in one list")
    axes.append((key.removeprefix("config."), values))
  if not axes:
    raise SweepError(
      "--sweep is empty: give KEY=[v1,v2,...] items, e.g. 'loss.gan=[vanilla,hinge]'"
    )
  return axes


def _label(value: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+-]", "_", value)


def point_names(axes: list[tuple[str, list[str]]], points: list[tuple[str, ...]]) -> list[str]:
  """Directory names: 'gan=lsgan,l1_weight=10' (a key's last part unless two keys share it)."""
  leaves = [key.split(".")[-1] for key, _ in axes]
  labels = [leaf if leaves.count(leaf) == 1 else key for leaf, (key, _) in zip(leaves, axes)]
  names = [",".join(f"{label}={_label(v)}" for label, v in zip(labels, point)) for point in points]
  if len(set(names)) != len(names):
    raise SweepError(
      "two sweep points get the same workdir name: make the values differ in "
      "letters, digits or . _ + -"
    )
  return names


def expand(config_arg: str, spec: str, root: str, extra: list[str]) -> list[dict]:
  """The points of the product, each {"name", "overrides", "workdir", "command"}."""
  axes = parse_sweep(spec)
  points = list(itertools.product(*[values for _, values in axes]))
  runs = []
  for name, point in zip(point_names(axes, points), points):
    overrides = {key: value for (key, _), value in zip(axes, point)}
    workdir = os.path.join(root, name)
    command = ["python", "-m", "colorgan.main", f"--config={config_arg}", f"--workdir={workdir}"]
    command += [f"--config.{key}={value}" for key, value in overrides.items()] + list(extra)
    runs.append(dict(name=name, overrides=overrides, workdir=workdir, command=command))
  return runs


# ----------------------------------------------------------------------------- checking the points
def load_config(config_arg: str):
  """get_config() of a config file, as --config=path[:arg] names it."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    raise SweepError(f"--config={config_arg}: no such file")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise SweepError(f"--config={config_arg}: {type(e).__name__}: {e}") from None


def _set(config, key: str, value: str, where: str) -> None:
  """config.key = value, parsed as the type the config has there (as --config.key=value is)."""
  *parents, leaf = key.split(".")
  target = config
  for part in parents:
    if part not in target or not hasattr(target[part], "keys"):
      raise SweepError(f"{where}: {key!r} is not a key of the config")
    target = target[part]
  if leaf not in target or hasattr(target[leaf], "keys"):
    raise SweepError(f"{where}: {key!r} is not a key of the config")
  old = target[leaf]
  try:
    if isinstance(old, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(value)
      parsed = value.lower() in ("true", "1")
    elif isinstance(old, int):
      parsed = int(value)
    elif isinstance(old, float):
      parsed = float(value)
    else:
      parsed = value
  except ValueError:
    raise SweepError(f"{where}: {key}={value!r} is not a {type(old).__name__}") from None
  target[leaf] = parsed


def check_points(config_arg: str, runs: list[dict], extra: list[str]) -> None:
  """Builds and validates every point's config: a mistake surfaces before the first run."""
  from colorgan import configuration  # pylint: disable=g-import-not-at-top
  from colorgan import errors  # pylint: disable=g-import-not-at-top

  fixed = {}
  for arg in extra:
    if not arg.startswith("--config.") or "=" not in arg:
      continue  # other flags are colorgan.main's to judge
    key, _, value = arg[len("--config.") :].partition("=")
    fixed[key] = value
  for run in runs:
    config = load_config(config_arg)
    for key, value in fixed.items():
      _set(config, key, value, f"--config.{key}")
    for key, value in run["overrides"].items():
      _set(config, key, value, f"--sweep {key}")
    try:
      configuration.validate(config)
    except errors.ConfigError as e:
      raise SweepError(f"sweep point {run['name']}: {e}") from None


# ----------------------------------------------------------------------------- results
def _flatten(tree: dict, prefix: str = "") -> dict[str, float]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      flat[f"{prefix}{key}"] = float(value)
  return flat


def last_eval(workdir: str) -> tuple[int, dict[str, float]] | None:
  """(step, metrics) of the newest eval/step_<N>.json, nested keys joined by '.'; None if none.

  The file's own "step" is the returned step, not a metric (the table has a step column already).
  """
  files = []
  for path in glob.glob(os.path.join(workdir, "eval", "step_*.json")):
    match = re.fullmatch(r"step_(\d+)\.json", os.path.basename(path))
    if match:
      files.append((int(match.group(1)), path))
  for step, path in sorted(files, reverse=True):
    try:
      with open(path) as f:
        metrics = _flatten(json.load(f))
      metrics.pop("step", None)
      return step, metrics
    except (OSError, ValueError):
      continue  # a file being written: the previous one will do
  return None


def last_train_scalars(workdir: str) -> tuple[int, dict[str, float]] | None:
  """(step, scalars) of the last step the run logged, from its TensorBoard events; None if none."""
  paths = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  if not paths:
    return None
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  by_step: dict[int, dict[str, float]] = {}
  for path in paths:
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          if value.HasField("tensor") and not value.tensor.string_val:
            number = tf.make_ndarray(value.tensor)
            if number.size != 1:
              continue
            number = float(number.reshape(()))
          elif value.HasField("simple_value"):
            number = float(value.simple_value)
          else:
            continue
          by_step.setdefault(event.step, {})[value.tag] = number
    except tf.errors.DataLossError:
      pass  # the tail of a file still being written
  steps = [s for s, scalars in by_step.items() if any(k in scalars for k in TRAIN_COLUMNS)]
  if not steps:
    return None
  return max(steps), by_step[max(steps)]


def results(runs: list[dict]) -> list[dict]:
  rows = []
  for run in runs:
    row = dict(point=run["name"], step=None, source="-", metrics={})
    found = last_eval(run["workdir"])
    if found:
      row.update(step=found[0], source="eval", metrics=found[1])
    else:
      found = last_train_scalars(run["workdir"])
      if found:
        row.update(
          step=found[0],
          source="train",
          metrics={k: v for k, v in found[1].items() if k in TRAIN_COLUMNS},
        )
    if "status" in run:
      row["status"] = run["status"]
    rows.append(row)
  return rows


def _format(value) -> str:
  if value is None:
    return "-"
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
  return str(value)


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
  """A Markdown table: point, step, source, then the metric columns (all found, or `columns`)."""
  if columns is None:
    seen = []
    for row in rows:
      seen += [k for k in row["metrics"] if k not in seen]
    train_first = [k for k in TRAIN_COLUMNS if k in seen]
    columns = train_first + sorted(k for k in seen if k not in TRAIN_COLUMNS)
  status = any("status" in row for row in rows)
  header = ["point", "step", "source"] + (["status"] if status else []) + columns
  body = [
    [row["point"], _format(row["step"]), row["source"]]
    + ([row.get("status", "-")] if status else [])
    + [_format(row["metrics"].get(c)) for c in columns]
    for row in rows
  ]
  widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
  lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in [header] + body]
  lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- the command
def run_all(runs: list[dict]) -> None:
  """Runs the points one after another; each run's output streams through."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
  for i, run in enumerate(runs, 1):
    print(f"[sweep {i}/{len(runs)}] {shlex.join(run['command'])}", flush=True)
    result = subprocess.run([sys.executable] + run["command"][1:], env=env, check=False)
    run["status"] = "ok" if result.returncode == 0 else f"exit {result.returncode}"
    if result.returncode < 0 or result.returncode == 130:  # interrupted: stop the sweep too
      raise KeyboardInterrupt


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(
    prog="launch/sweep.py",
    description=__doc__.split("\n\n")[0],
    epilog="Arguments after -- are passed to every run, e.g. -- --config.total_steps=150",
  )
  parser.add_argument("--config", required=True, help="config file (path[:arg]), as for colorgan")
  parser.add_argument(
    "--sweep",
    required=True,
    help="space-separated KEY=[v1,v2,...] items; the runs are their product",
  )
  parser.add_argument("--workdir", default="workdirs/sweep", help="parent of the runs' workdirs")
  parser.add_argument("--run", action="store_true", help="run the points in turn, then the table")
  parser.add_argument("--table", action="store_true", help="only print the table of the results")
  parser.add_argument(
    "--metrics", default="", help="comma-separated table columns (default: every metric found)"
  )
  parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  try:
    runs = expand(args.config, args.sweep, args.workdir, args.extra)
    if not args.table:
      check_points(args.config, runs, args.extra)
  except SweepError as e:
    print(f"sweep: error: {e}", file=sys.stderr)
    return 2
  columns = [c for c in args.metrics.split(",") if c] or None

  if not args.run and not args.table:
    for run in runs:
      print(shlex.join(run["command"]))
    return 0
  if args.run:
    try:
      run_all(runs)
    except KeyboardInterrupt:
      for run in runs:
        run.setdefault("status", "not run")
      print(format_table(results(runs), columns))
      print("sweep: interrupted; the table shows what the runs wrote so far", file=sys.stderr)
      return 130
  print(format_table(results(runs), columns))
  return 1 if any(run.get("status", "ok") != "ok" for run in runs) else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
