"""Scores the runs of recipe_study.py on val/ and writes the report (study.json, front.png, grid.png).

Every number comes from the package's own code: checkpointing.restore_for_inference for the
generator, evaluation.calibration for the predictions, the vividness ends and the per-image metrics
(evaluation.metrics.image_metrics, the metrics evaluation reports).
"""

import functools
import json
import math
import os
import pickle

import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw

from colorgan import checkpointing
from colorgan import models
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.evaluation import calibration
from colorgan.evaluation import plot
from colorgan.models import vividness

METRICS = ("psnr", "ssim", "colorfulness", "auc", "ab_l1")
ACCURACY_SLACK_DB = 0.15  # the "PSNR >= the L1 recipe's - 0.15 dB"
COLORFULNESS_SHARE = 0.74  # the issue's "colourfulness >= 0.74 x the photos'"
GRID_PHOTOS = 6
COLORS = [
  (31, 119, 180),
  (255, 127, 14),
  (44, 160, 44),
  (214, 39, 40),
  (148, 103, 189),
  (140, 86, 75),
  (227, 119, 194),
  (127, 127, 127),
  (188, 189, 34),
  (23, 190, 207),
]


def t_interval(values) -> tuple[float, float]:
  """(mean, half width of the 95% t interval) over seeds (half width nan for one seed)."""
  values = np.asarray(values, np.float64)
  if len(values) < 2:
    return float(values.mean()), float("nan")
  from scipy import stats  # pylint: disable=g-import-not-at-top

  half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
  return float(values.mean()), float(half)


def bootstrap_interval(differences, *, samples: int = 10_000, seed: int = 0) -> list[float]:
  """95% bootstrap interval of the mean of per-image differences (resampling images)."""
  differences = np.asarray(differences, np.float64)
  rng = np.random.default_rng(seed)
  means = differences[rng.integers(0, len(differences), (samples, len(differences)))].mean(axis=1)
  return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def score_run(workdir: str, grid: list[float]) -> dict:
  """score_run_now's result, kept in WORKDIR/study_scores.pkl for the same grid and checkpoint."""
  path = os.path.join(workdir, "study_scores.pkl")
  key = (tuple(grid), sorted(os.listdir(os.path.join(workdir, "checkpoints"))))
  if os.path.isfile(path):
    with open(path, "rb") as f:
      cached = pickle.load(f)
    if cached["key"] == key:
      return cached["scores"]
  scores = score_run_now(workdir, grid)
  with open(path, "wb") as f:
    pickle.dump({"key": key, "scores": scores}, f)
  return scores


def score_run_now(workdir: str, grid: list[float]) -> dict:
  """Per-image metrics of one run at gain 1 (as trained), at each vividness of `grid` and at the
  run's default vividness; the calibration; the photos and their predictions (for the grid image)."""
  inference = checkpointing.restore_for_inference(workdir)
  config = inference.config
  source = sources.create_source(config)
  photos = pipeline.load_eval_images(config, source.eval, 10_000)
  l, pred_ab = calibration.predict_photos(config, inference.g_variables, photos)
  # The run's own rule for its default vividness (configs/recommended.py aims at a colourfulness).
  rule = {"colorfulness_share": config.vividness.get("colorfulness_share", 0.0)}
  if models.is_classification(config):  # v: the annealed mean's temperature
    cal, _ = calibration.choose_temperature(config, inference.g_variables, photos, **rule)
    generator = models.create_generator(config)
    predict_t = jax.jit(lambda v, l, t: models.predict_ab(generator, v, l, None, temperature=t))

    def predictions(v):
      t = cal.parameter(v)
      predict = lambda variables, l, hints: predict_t(variables, l, t)  # noqa: E731
      return calibration.predict_photos(config, inference.g_variables, photos, predict)[1], 1.0

  elif config.get("phases", {}).get("interpolate", False):  # v: the interpolation weight
    final = jax.device_get(inference.g_variables)
    saved = vividness.read_interpolation(workdir)
    cal, _ = calibration.choose_interpolated(config, final, saved, photos, **rule)
    predict = jax.jit(functools.partial(models.predict_ab, models.create_generator(config)))

    def predictions(v):
      variables = vividness.interpolate(final, saved, v)
      return calibration.predict_photos(config, variables, photos, predict)[1], 1.0

  else:  # v: a chroma gain on the predictions
    cal, _ = calibration.choose(l, pred_ab, photos, **rule)
    predictions = lambda v: (pred_ab, cal.chroma_gain(v))  # noqa: E731

  def scores(v):
    ab, gain = predictions(v)
    return calibration.image_scores(l, ab, photos, gain)

  default_ab, default_gain = predictions(cal.default)
  return {
    "calibration": cal,
    "raw": calibration.image_scores(l, pred_ab, photos, 1.0),
    "default": scores(cal.default),
    "gray": calibration.image_scores(l, pred_ab, photos, 0.0),
    "grid": [scores(v) for v in grid],
    "photos": photos,
    "l": l,
    "pred_ab": default_ab * default_gain,  # at the default vividness
  }


def summarize(runs: dict[str, dict[str, dict]], grid: list[float]) -> dict:
  """The study table: per recipe, the mean over seeds with a 95% t interval of each metric, as
  trained (raw) and at the default vividness, the paired PSNR difference to L2, and the fronts."""
  any_run = next(iter(next(iter(runs.values())).values()))
  photos_cf = float(np.mean(any_run["raw"]["true_colorfulness"]))
  table = {"photos_colorfulness": photos_cf, "gray": {}, "recipes": {}}
  for name in METRICS:
    table["gray"][name] = float(np.mean(any_run["gray"][name]))
  l1_psnr = None
  if "l1" in runs:
    l1_psnr = float(np.mean([np.mean(r["raw"]["psnr"]) for r in runs["l1"].values()]))
  table["l1_psnr"] = l1_psnr
  for recipe, seeds in runs.items():
    row = {"seeds": sorted(seeds)}
    for at in ("raw", "default"):
      row[at] = {}
      for name in METRICS:
        row[at][name] = t_interval([np.mean(r[at][name]) for r in seeds.values()])
      per_seed_gap = [
        np.mean(r[at]["colorfulness"]) - np.mean(r[at]["true_colorfulness"]) for r in seeds.values()
      ]
      row[at]["colorfulness_gap"] = t_interval(per_seed_gap)
      row[at]["abs_colorfulness_gap_per_image"] = t_interval(
        [
          np.mean(np.abs(r[at]["colorfulness"] - r[at]["true_colorfulness"]))
          for r in seeds.values()
        ]
      )
      row[at]["colorfulness_share"] = row[at]["colorfulness"][0] / photos_cf
    row["default_vividness"] = t_interval([r["calibration"].default for r in seeds.values()])
    if "l2" in runs:
      paired = [
        seeds[s]["default"]["psnr"] - runs["l2"][s]["raw"]["psnr"] for s in seeds if s in runs["l2"]
      ]
      if paired:
        per_image = np.mean(paired, axis=0)  # over seeds, image by image
        row["delta_psnr_vs_l2"] = [float(per_image.mean()), bootstrap_interval(per_image)]
    curve = [
      (
        float(np.mean([np.mean(r["grid"][i]["psnr"]) for r in seeds.values()])),
        float(np.mean([np.mean(r["grid"][i]["colorfulness"]) for r in seeds.values()])),
      )
      for i in range(len(grid))
    ]
    row["curve"] = [
      {"vividness": v, "psnr": p, "colorfulness": c} for v, (p, c) in zip(grid, curve)
    ]
    if l1_psnr is not None:
      ok = [c for p, c in curve if p >= l1_psnr - ACCURACY_SLACK_DB]
      row["colorfulness_at_l1_psnr"] = max(ok) if ok else None
    ok = [p for p, c in curve if c >= COLORFULNESS_SHARE * photos_cf]
    row["psnr_at_074_colorfulness"] = max(ok) if ok else None
    d = row["default"]
    row["meets_goal"] = bool(
      l1_psnr is not None
      and d["psnr"][0] >= l1_psnr - ACCURACY_SLACK_DB
      and d["colorfulness"][0] >= COLORFULNESS_SHARE * photos_cf
    )
    table["recipes"][recipe] = row
  return table


def markdown(table: dict) -> str:
  """The study table for README "Recipes": mean ± 95% t half-width over seeds, at each recipe's
  default vividness (as trained in brackets), and the two front figures."""

  def pm(pair, digits=2):
    mean, half = pair
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" ± {half:.{digits}f}")

  def maybe(x, digits):
    return "—" if x is None else f"{x:.{digits}f}"

  photos = table["photos_colorfulness"]
  lines = [
    "| recipe | seeds | default v | PSNR | SSIM | colourfulness (share of photos') | CF gap | "
    "per-image \\|ΔCF\\| | AuC | ab L1 | ΔPSNR vs L2 [95% CI] | as trained: PSNR / CF | "
    "CF at PSNR ≥ L1 − 0.15 | PSNR at CF ≥ 0.74 photos | both goals |",
    "|---" * 15 + "|",
  ]
  gray = table["gray"]
  lines.append(
    f"| gray baseline | | | {gray['psnr']:.2f} | {gray['ssim']:.4f} | {gray['colorfulness']:.1f} "
    f"(0.00) | | | {gray['auc']:.4f} | {gray['ab_l1']:.2f} | | | | | |"
  )
  for name, row in table["recipes"].items():
    d, raw = row["default"], row["raw"]
    delta = row.get("delta_psnr_vs_l2")
    delta_text = "—" if not delta else f"{delta[0]:+.2f} [{delta[1][0]:+.2f}, {delta[1][1]:+.2f}]"
    lines.append(
      f"| {name} | {len(row['seeds'])} | {pm(row['default_vividness'])} | {pm(d['psnr'])} | "
      f"{pm(d['ssim'], 4)} | {pm(d['colorfulness'], 1)} ({d['colorfulness'][0] / photos:.2f}) | "
      f"{pm(d['colorfulness_gap'], 1)} | {pm(d['abs_colorfulness_gap_per_image'], 1)} | "
      f"{pm(d['auc'], 4)} | {pm(d['ab_l1'])} | {delta_text} | "
      f"{raw['psnr'][0]:.2f} / {raw['colorfulness'][0]:.1f} | "
      f"{maybe(row.get('colorfulness_at_l1_psnr'), 1)} | {maybe(row['psnr_at_074_colorfulness'], 2)} | "
      f"{'yes' if row['meets_goal'] else 'no'} |"
    )
  lines.append(
    f"\nThe photos' colourfulness: {photos:.1f}; L1 recipe's PSNR (as trained): "
    f"{table['l1_psnr']:.2f} dB"
    if table.get("l1_psnr")
    else ""
  )
  return "\n".join(lines)


def front_plot(table: dict) -> Image.Image:
  """PSNR against colourfulness, one curve per recipe over its vividness (dot: default v), the gray
  baseline (x) and the photos' colourfulness (dashed)."""
  width, height, (left, top, right, bottom) = 900, 600, (70, 50, 700, 540)
  points = [(c["colorfulness"], c["psnr"]) for r in table["recipes"].values() for c in r["curve"]]
  points.append((table["gray"]["colorfulness"], table["gray"]["psnr"]))
  xs = [p[0] for p in points] + [table["photos_colorfulness"]]
  ys = [p[1] for p in points]
  x_ticks, y_ticks = plot._ticks(0, max(xs) * 1.05), plot._ticks(min(ys) - 0.3, max(ys) + 0.3)  # pylint: disable=protected-access
  to_x = lambda x: left + (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0]) * (right - left)  # noqa: E731
  to_y = lambda y: bottom - (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0]) * (bottom - top)  # noqa: E731
  image = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(image)
  font = plot._font(13)  # pylint: disable=protected-access
  for t in x_ticks:
    draw.line([(to_x(t), top), (to_x(t), bottom)], fill=(230, 230, 230))
    draw.text((to_x(t), bottom + 6), f"{t:g}", fill="black", font=font, anchor="mt")
  for t in y_ticks:
    draw.line([(left, to_y(t)), (right, to_y(t))], fill=(230, 230, 230))
    draw.text((left - 6, to_y(t)), f"{t:g}", fill="black", font=font, anchor="rm")
  draw.line([(left, top), (left, bottom), (right, bottom)], fill="black")
  draw.text(
    ((left + right) / 2, height - 30), "colourfulness (val/)", fill="black", font=font, anchor="mt"
  )
  draw.text((left, top - 20), "PSNR dB (val/)", fill="black", font=font, anchor="lb")
  x = to_x(table["photos_colorfulness"])
  for y in range(top, bottom, 12):
    draw.line([(x, y), (x, min(y + 6, bottom))], fill=(120, 120, 120), width=2)
  draw.text((x + 4, top), "photos", fill=(120, 120, 120), font=font, anchor="lt")
  gx, gy = to_x(table["gray"]["colorfulness"]), to_y(table["gray"]["psnr"])
  draw.line([(gx - 5, gy - 5), (gx + 5, gy + 5)], fill="black", width=2)
  draw.line([(gx - 5, gy + 5), (gx + 5, gy - 5)], fill="black", width=2)
  draw.text((gx + 8, gy), "gray", fill="black", font=font, anchor="lm")
  for i, (name, row) in enumerate(table["recipes"].items()):
    color = COLORS[i % len(COLORS)]
    line = [(to_x(c["colorfulness"]), to_y(c["psnr"])) for c in row["curve"]]
    draw.line(line, fill=color, width=2)
    d = row["default"]
    dx, dy = to_x(d["colorfulness"][0]), to_y(d["psnr"][0])
    draw.ellipse([dx - 4, dy - 4, dx + 4, dy + 4], fill=color)
    draw.line([(720, 60 + 22 * i), (745, 60 + 22 * i)], fill=color, width=3)
    draw.text((752, 60 + 22 * i), name, fill="black", font=font, anchor="lm")
  draw.text(
    (720, 60 + 22 * len(table["recipes"]) + 10),
    "dot: default vividness",
    fill="black",
    font=font,
    anchor="lm",
  )
  return image


def photo_grid(runs: dict[str, dict[str, dict]], seed: str) -> Image.Image:
  """GRID_PHOTOS val photos (rows): gray input, each recipe at its default vividness (seed `seed`),
  the photo."""
  from colorgan import color  # pylint: disable=g-import-not-at-top

  columns = []
  first = next(iter(runs.values()))[seed]
  photos = first["photos"][:GRID_PHOTOS]
  l = first["l"][:GRID_PHOTOS]
  to_uint8 = lambda ab: np.asarray(  # noqa: E731
    np.round(np.clip(color.model_lab_to_rgb(l, ab), 0, 1) * 255), np.uint8
  )
  columns.append(("gray", to_uint8(np.zeros_like(first["pred_ab"][:GRID_PHOTOS]))))
  for name, seeds in runs.items():
    columns.append((name, to_uint8(seeds[seed]["pred_ab"][:GRID_PHOTOS])))
  columns.append(("photo", photos))
  size = photos.shape[1]
  scale = 2
  cell = size * scale + 4
  image = Image.new("RGB", (cell * len(columns), cell * len(photos) + 20), "white")
  draw = ImageDraw.Draw(image)
  font = plot._font(11)  # pylint: disable=protected-access
  for j, (name, images) in enumerate(columns):
    draw.text((j * cell + cell / 2, 10), name, fill="black", font=font, anchor="mm")
    for i, im in enumerate(images):
      tile = Image.fromarray(im).resize((size * scale, size * scale), Image.NEAREST)
      image.paste(tile, (j * cell + 2, 20 + i * cell + 2))
  return image


def report(flags_values, run_dir, trained) -> dict:
  """Scores every trained run of flags_values.recipes x seeds; writes OUT/study.json, front.png
  and grid.png; returns the summary (the table without per-image data)."""
  grid = [float(v) for v in flags_values.vividness]
  runs: dict[str, dict[str, dict]] = {}
  for recipe in flags_values.recipes:
    for seed in flags_values.seeds:
      workdir = run_dir(recipe, seed)
      if not trained(workdir):
        print(f"  {recipe} seed {seed}: not trained, left out", flush=True)
        continue
      runs.setdefault(recipe, {})[seed] = score_run(workdir, grid)
      print(f"  scored {recipe} seed {seed}", flush=True)
  table = summarize(runs, grid)
  with open(os.path.join(flags_values.out, "study.json"), "w") as f:
    json.dump(table, f, indent=1)
  text = markdown(table)
  with open(os.path.join(flags_values.out, "study.md"), "w") as f:
    f.write(text + "\n")
  print(text, flush=True)
  front_plot(table).save(os.path.join(flags_values.out, "front.png"))
  common = [s for s in flags_values.seeds if all(s in seeds for seeds in runs.values())]
  if common:
    photo_grid(runs, common[0]).save(os.path.join(flags_values.out, "grid.png"))
  return {"benchmark": "recipe_study", "out": flags_values.out, **table}
