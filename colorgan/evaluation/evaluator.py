"""Evaluation: the generator (inference mode) and the gray baseline (ab = 0) on the eval split.

Every eval photo is center-cropped as in training's eval path (pipeline.create_eval_dataset), its L
goes through the predict function the caller gives (the generator in inference mode:
models.predict_ab), and the result, rounded to uint8 RGB like a saved picture, is scored against the
photo with colorgan.evaluation.metrics; the gray baseline is the same L with ab = 0. The jitted step
runs over the mesh with the batch sharded; metrics accumulate across batches and devices (padding
masked out). The result is one JSON-ready dict:

  {"step": N, "num_images": n, "image_size": S, "data": {"source", "path" | "tfds_name", "split"},
   "ground_truth": {"colorfulness": ...},
   "model": {"psnr", "ssim", "colorfulness", "delta_colorfulness", "auc", "ab_l1"},
   "baseline": {same keys}}

written (colorgan.evaluation.records) to WORKDIR/eval/step_<N>.json and to TensorBoard as
eval/model/<name>, eval/baseline/<name>;
an evaluation of other data than the run's own eval split (--mode=evaluate with another config.data
or --input: colorgan.evaluation.eval_data) to WORKDIR/eval/<data>/step_<N>.json and eval_<data>/....
With config.eval.inception_weights / lpips_weights set, "model" and "baseline" also hold "fid",
"kid" / "lpips" (colorgan.evaluation.features), and the result names "fid_backend" and
"fid_reference".
A generator trained with hints is also scored with each of config.eval.hint_counts points drawn
from the ground truth (hints.ground_truth_hints: the same points for every run): "by_hints":
{"<n>": {the keys of "model"}} in the JSON, eval/hints_<n>/<name> in TensorBoard, and a
PSNR-by-hints plot, WORKDIR/eval/psnr_by_hints_step_<N>.png.
"""

import functools
import math
import os
from typing import Any, Callable, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from colorgan import checkpointing
from colorgan import color
from colorgan import errors
from colorgan import fileio
from colorgan import hints as hints_lib
from colorgan import models
from colorgan import parallel
from colorgan.data import pipeline
from colorgan.data import sources
from colorgan.evaluation import eval_data
from colorgan.evaluation import features
from colorgan.evaluation import metrics
from colorgan.evaluation import records
from colorgan.models import vividness as vividness_lib

METRIC_NAMES = metrics.METRIC_NAMES

# predict(variables, l, hints) -> ab: the generator in inference mode, e.g.
# functools.partial(models.predict_ab, generator); hints is None for a run without them.
Predict = Callable[[dict[str, Any], jax.Array, jax.Array | None], jax.Array]


def to_uint8(rgb: jax.Array) -> jax.Array:
  """Float RGB in [0, 1] -> uint8, rounded as a saved picture would be."""
  return jnp.round(jnp.clip(rgb, 0.0, 1.0) * 255.0).astype(jnp.uint8)


def eval_step(
  predict: Predict,
  g_variables: dict[str, Any],
  batch: dict[str, jax.Array],
  *,
  with_images: bool = False,
):
  """The metrics of one batch for the model and for the gray baseline.

  Args:
    predict: the generator in inference mode (Predict).
    g_variables: {"params": ..., "batch_stats": ...}, replicated.
    batch: {"image": uint8 [B, S, S, 3], "mask": bool [B]}, sharded over the data axis.
    with_images: also return the generated and gray images (for features.FeatureMetrics).

  Returns:
    (model, baseline) EvalMetrics of the unmasked rows; with_images: (model, baseline, generated,
    gray), the images uint8 RGB [B, S, S, 3].
  """
  rgb = batch["image"]
  generated, gray = eval_images_of(predict, g_variables, rgb)
  scores = (
    metrics.EvalMetrics.from_images(generated, rgb, batch["mask"]),
    metrics.EvalMetrics.from_images(gray, rgb, batch["mask"]),
  )
  return scores + (generated, gray) if with_images else scores


def eval_images_of(
  predict: Predict, g_variables: dict[str, Any], rgb: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """(generated, gray baseline) uint8 RGB [B, S, S, 3] of uint8 RGB photos [B, S, S, 3]."""
  l, _ = color.rgb_uint8_to_model_lab(rgb)
  fake_ab = predict(g_variables, l, None)
  generated = to_uint8(color.model_lab_to_rgb(l, fake_ab))
  gray = to_uint8(color.model_lab_to_rgb(l, jnp.zeros_like(fake_ab)))
  return generated, gray


def eval_images(config: ml_collections.ConfigDict, images: pipeline.Images) -> pipeline.Images:
  """The first config.num_eval_images of the eval images, files or a TFDS split (all when 0)."""
  n = config.num_eval_images
  return images.first(n) if n else images


def accumulate_step(
  predict: Predict,
  g_variables: dict[str, Any],
  batch: dict[str, jax.Array],
  totals: tuple[metrics.EvalMetrics, metrics.EvalMetrics],
  *,
  with_images: bool = False,
):
  """eval_step's metrics merged into the running (model, baseline) totals, in the same program.

  Merging outside jit runs each addition as a program of its own on every device; in a 2-process
  CPU run those merges were where both processes stood when XLA:CPU's gloo collectives deadlocked.
  with_images: returns (totals, generated, gray), the images as eval_step gives them.
  """
  model, baseline, *images = eval_step(predict, g_variables, batch, with_images=with_images)
  totals = totals[0].merge(model), totals[1].merge(baseline)
  return (totals, *images) if with_images else totals


def accumulate_hint_step(
  predict: Predict,
  g_variables: dict[str, Any],
  batch: dict[str, jax.Array],
  batch_index: jax.Array,
  count: jax.Array,
  total: metrics.EvalMetrics,
  *,
  max_count: int,
) -> metrics.EvalMetrics:
  """The model's metrics of one batch with `count` ground-truth points per photo, merged into total.

  Args:
    batch: as eval_step's, the global batch number `batch_index` of the eval split: row r holds
      photo batch_index * B + r, whose index seeds its points.
    count: int scalar <= max_count (static): the points of a smaller count are among a larger one's.
  """
  rgb = batch["image"]
  l, real_ab = color.rgb_uint8_to_model_lab(rgb)
  index = batch_index * rgb.shape[0] + jnp.arange(rgb.shape[0])
  hints = hints_lib.ground_truth_hints(real_ab, index, count, max_count)
  fake_ab = predict(g_variables, l, hints)
  generated = to_uint8(color.model_lab_to_rgb(l, fake_ab))
  return total.merge(metrics.EvalMetrics.from_images(generated, rgb, batch["mask"]))


def hint_counts(config: ml_collections.ConfigDict, use_hints: bool) -> tuple[int, ...]:
  """config.eval.hint_counts, sorted and once each; ConfigError for a generator without hints."""
  counts = tuple(sorted(set(config.get("eval", {}).get("hint_counts", ()))))
  if counts and not use_hints:
    raise errors.ConfigError(
      f"config.eval.hint_counts={counts} needs a generator trained with hints "
      "(config.hints.enabled=True); this run's generator takes none"
    )
  return counts


class Evaluator:
  """The eval step compiled once for a run; call it with generator variables, as often as needed.

  It knows the generator only through `predict` (Predict): built by the caller, e.g.
  functools.partial(models.predict_ab, generator), so that evaluation needs no training code.
  """

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    predict: Predict,
    mesh: jax.sharding.Mesh,
    images: pipeline.Images,
    *,
    use_hints: bool | None = None,
    data: dict[str, Any] | None = None,
  ):
    """Compiles the eval step (and the step with hints, for config.eval.hint_counts).

    Args:
      config: the run config.
      predict: the generator in inference mode (Predict).
      mesh: the device mesh.
      images: the eval images (Source.eval: files or a TFDS split), of which the first
        config.num_eval_images are scored.
      use_hints: whether the generator takes hints; None: hints.enabled(config), true of a
        generator built from this config.
      data: what `images` are, for the result's "data"; None: config.data's eval split.

    Raises:
      errors.ConfigError: an eval batch the devices cannot split, an empty eval split, or
        config.eval.hint_counts for a generator without hints.
    """
    parallel.check_batch_size(config.eval_batch_size, mesh, key="eval_batch_size")
    self.images = eval_images(config, images)
    self.num_images = self.images.num_images
    if not self.num_images:
      raise errors.ConfigError("the eval split holds no photo: check config.data")
    self.mesh = mesh
    self.image_size = config.image_size
    self.data = data or eval_data.record(config)
    # create_eval_dataset batches by config.batch_size: give it the eval batch size.
    self._data_config = config.copy_and_resolve_references()
    self._data_config.batch_size = config.eval_batch_size
    self._rows = parallel.process_batch_rows(mesh, config.eval_batch_size)
    # FID, KID and LPIPS (config.eval.*): the step hands its images on to them, on the devices.
    self.features = features.FeatureMetrics(config, mesh) if features.enabled(config) else None
    if features.off_message(config):
      logging.info("%s", features.off_message(config))
    with_images = self.features is not None
    totals_out = parallel.replicated(mesh)
    self._step = jax.jit(
      functools.partial(accumulate_step, predict, with_images=with_images),
      in_shardings=(
        parallel.replicated(mesh),
        parallel.batch_sharding(mesh),
        parallel.replicated(mesh),
      ),
      out_shardings=(
        (totals_out, parallel.batch_sharding(mesh), parallel.batch_sharding(mesh))
        if with_images
        else totals_out
      ),
      donate_argnums=2,
    )
    if use_hints is None:
      use_hints = hints_lib.enabled(config)
    self.hint_counts = hint_counts(config, use_hints)
    if self.hint_counts:
      self._hint_step = jax.jit(
        functools.partial(accumulate_hint_step, predict, max_count=max(self.hint_counts)),
        in_shardings=(
          parallel.replicated(mesh),
          parallel.batch_sharding(mesh),
          parallel.replicated(mesh),
          parallel.replicated(mesh),
          parallel.replicated(mesh),
        ),
        out_shardings=parallel.replicated(mesh),
        donate_argnums=4,
      )

  @property
  def num_batches(self) -> int:
    return math.ceil(self.num_images / self._data_config.batch_size)

  def __call__(
    self, g_variables: dict[str, Any], step: int, *, progress: bool = False
  ) -> dict[str, Any]:
    """Scores the generator `g_variables` (replicated over the mesh) at training step `step`."""
    dataset = pipeline.create_eval_dataset(self._data_config, self.images, rows=self._rows)
    empty = metrics.EvalMetrics.empty()
    totals = jax.tree.map(lambda x: parallel.replicate(self.mesh, np.asarray(x)), (empty, empty))
    feature_totals = self.features.start() if self.features else None
    with jax.set_mesh(self.mesh):
      for batch in tqdm.tqdm(
        dataset.as_numpy_iterator(),
        total=self.num_batches,
        unit="batch",
        desc="evaluate",
        disable=not progress,
        leave=False,
      ):
        batch = parallel.global_batch(self.mesh, batch)
        if self.features:
          totals, generated, gray = self._step(g_variables, batch, totals)
          self.features.add(feature_totals, batch["image"], generated, gray, batch["mask"])
        else:
          totals = self._step(g_variables, batch, totals)
    # On the host from here: what is left is a few divisions, with no program over the mesh.
    model, baseline = jax.device_get(totals)
    model_values = {k: float(v) for k, v in model.compute().items()}
    baseline_values = {k: float(v) for k, v in baseline.compute().items()}
    result = {
      "step": int(step),
      "num_images": model.num_images(),
      "image_size": self.image_size,
      "data": self.data,
      "ground_truth": {"colorfulness": model_values["true_colorfulness"]},
      "model": {k: model_values[k] for k in METRIC_NAMES},
      "baseline": {k: baseline_values[k] for k in METRIC_NAMES},
    }
    if self.features:
      extra = self.features.finish(feature_totals)
      for who in ("model", "baseline"):
        result[who].update(extra.pop(who))
      result.update(extra)
    if self.hint_counts:
      result["by_hints"] = self.by_hints(g_variables, progress=progress)
    return result

  def by_hints(
    self, g_variables: dict[str, Any], *, progress: bool = False
  ) -> dict[str, dict[str, float]]:
    """{"<n>": the model's metrics with n ground-truth points per photo} for each of hint_counts."""
    dataset = pipeline.create_eval_dataset(self._data_config, self.images, rows=self._rows)
    replicate = lambda x: parallel.replicate(self.mesh, np.asarray(x))  # noqa: E731
    totals = [jax.tree.map(replicate, metrics.EvalMetrics.empty()) for _ in self.hint_counts]
    counts = [replicate(np.int32(n)) for n in self.hint_counts]
    with jax.set_mesh(self.mesh):
      for i, batch in enumerate(
        tqdm.tqdm(
          dataset.as_numpy_iterator(),
          total=self.num_batches,
          unit="batch",
          desc="evaluate with hints",
          disable=not progress,
          leave=False,
        )
      ):
        batch, index = parallel.global_batch(self.mesh, batch), replicate(np.int32(i))
        totals = [
          self._hint_step(g_variables, batch, index, count, total)
          for count, total in zip(counts, totals)
        ]
    return {
      str(n): {k: float(v) for k, v in jax.device_get(total).compute().items() if k in METRIC_NAMES}
      for n, total in zip(self.hint_counts, totals)
    }


def evaluate_and_record(
  evaluator: Evaluator, g_variables: dict[str, Any], step: int, workdir: str, writer=None
) -> dict[str, Any]:
  """The training loop's periodic evaluation: every host scores, the chief writes."""
  result = evaluator(g_variables, step)
  if jax.process_index() == 0:
    path = records.record(result, workdir, writer)
    logging.info(
      "eval step %d on %d photos (model/gray baseline): %s -> %s",
      step,
      result["num_images"],
      records.summary_line(result),
      path,
    )
  return result


def evaluate_checkpoint(
  config: ml_collections.ConfigDict,
  workdir: str,
  step: int | None = None,
  *,
  inputs: Sequence[str] | None = None,
  vividness: float | None = None,
) -> dict[str, Any]:
  """`--mode=evaluate`: restores the generator of a checkpoint and evaluates it on the eval split.

  The generator is built from the checkpoint's own config; `config` picks the eval data (data.*,
  image_size, eval_batch_size, num_eval_images), or `inputs` (--input: photos, folders, globs)
  does, every photo of them. The result goes to WORKDIR/eval/step_<N>.json when it scores what the
  run's own evaluations score, else beside it to WORKDIR/eval/<data>/step_<N>.json
  (eval_data.name). `vividness` (None: the run's default, where it has a calibration) scales the
  generator's colors (models.vividness); a result at a vividness goes to a
  vividness_<v>/ folder inside that one, so it never replaces the run's own record. A workdir that
  cannot be written (a finished run on a read-only mount) is evaluated all the same: the result is
  returned, with a warning, unsaved.

  Raises:
    FileNotFoundError: no checkpoint (or not that step) in workdir.
    errors.RestoreError: the checkpoint is damaged.
    errors.ConfigError: an eval batch size the devices cannot split, or an empty eval split.
    errors.DataError: `inputs` name no usable photo.
  """
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  (imports TensorFlow)

  writable = jax.process_index() == 0 and os.path.isdir(workdir)  # else restoring says why
  if writable:
    try:
      fileio.ensure_writable(workdir)
    except errors.WorkdirError as e:
      logging.warning("%s: the result is printed, not saved in the workdir", e)
      writable = False
  if inputs:
    images, data = eval_data.input_images(inputs), eval_data.input_record(inputs)
    config = config.copy_and_resolve_references()
    config.num_eval_images = 0  # every photo
  mesh = parallel.create_mesh()
  inference = checkpointing.restore_for_inference(workdir, step, sharding=parallel.replicated(mesh))
  generator = models.create_generator(inference.config)
  setting = vividness_lib.resolve(workdir, vividness)
  if not inputs:
    images, data = sources.create_source(config).eval, eval_data.record(config)
  evaluator = Evaluator(
    config,
    functools.partial(
      models.predict_ab, generator, chroma_gain=setting.chroma_gain, temperature=setting.temperature
    ),
    mesh,
    images,
    use_hints=generator.use_hints,
    data=data,
  )
  name = _data_folder(config, inference.config, data, evaluator)
  if setting.v is not None:  # not the run's own colors: never its record
    name = os.path.join(name or "", f"vividness_{setting.v:g}")
  logging.info(
    "Evaluating step %d of %s on %d photos of %s",
    inference.step,
    workdir,
    evaluator.num_images,
    "its own eval split" if name is None else name,
  )
  variables = inference.g_variables
  if setting.alpha is not None:
    variables = jax.device_put(
      vividness_lib.variables_at(workdir, variables, setting), parallel.replicated(mesh)
    )
  result = evaluator(variables, inference.step, progress=True)
  result.update(setting.describe())
  if writable:
    writer = metric_writers.create_default_writer(workdir, just_logging=False)
    path = records.record(result, workdir, writer, name=name)
    writer.flush()
    logging.info("(model/gray baseline) %s -> %s", records.summary_line(result), path)
  return result


def _data_folder(
  config: ml_collections.ConfigDict,
  run_config: ml_collections.ConfigDict,
  data: dict[str, Any],
  evaluator: Evaluator,
) -> str | None:
  """None for the run's own eval split (eval/step_<N>.json), else the folder under eval/."""
  if data["source"] != "input" and eval_data.is_runs_own(config, run_config):
    return None
  name = eval_data.name(data)
  if data == eval_data.record(run_config):  # the run's photos, other sizes or numbers of them
    name += f"-{evaluator.num_images}photos-{evaluator.image_size}px"
  return name
