"""Colorize photos at full resolution with a trained generator (`--mode=colorize`).

For each photo of a plan (colorgan.inference.photo: decoding, geometry, composing, writing):
  1. Decode it and compute its own full-resolution lightness L (photo.load_photo).
  2. The generator works at `size` (the run's image_size or --colorize_size) on the WHOLE photo: L
     is resized so that its long side is `size` and mirror-padded to size x size
     (photo.model_input), so photos of any shape batch together and nothing is distorted or cropped.
  3. The predicted ab of the photo's area is upsampled to the original size and joined with the
     original L, out-of-gamut chroma reduced (photo.upsample_ab, photo.compose): the output's L
     equals the input's up to uint8 rounding.
Photos are decoded and written by a thread pool and run through the generator in batches. A bad
file (corrupt, not an image, larger than photo.MAX_PIXELS) is reported in one line and the others
go on; `Colorizer.run` returns the failure count.
"""

import concurrent.futures
import functools
import os
import sys
from typing import Callable
import warnings

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
import tqdm

from colorgan import checkpointing
from colorgan import configuration
from colorgan import errors
from colorgan import hints as hints_lib
from colorgan import models
from colorgan import parallel
from colorgan.inference import photo as photo_lib
from colorgan.inference import user_hints
from colorgan.models import vividness


def progress_bar(total: int, unit: str, desc: str) -> tqdm.tqdm:
  """A progress bar on stderr when it is a terminal, where tqdm.write clears it for a message line.

  Off a terminal (a log file, a pipe, CI) the bar is only carriage returns: each message written
  between two redraws would land on the bar's line, so there is no bar there; the messages and the
  closing summary say what happened.
  """
  return tqdm.tqdm(
    total=total, unit=unit, desc=desc, file=sys.stderr, disable=not sys.stderr.isatty()
  )


class Colorizer:
  """A restored generator that colorizes batches of photos at full resolution."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    g_variables: dict,
    *,
    step: int,
    size: int | None = None,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    workers: int | None = None,
    chroma_gain: float = 1.0,
    temperature: float = 1.0,
  ):
    """Args:
      config: the config the generator was trained with (model.*, image_size, data.resize_mode).
      g_variables: {"params": ..., "batch_stats": ...}, replicated over `mesh`.
      step: the checkpoint step (for messages).
      size: the generator's input size (default config.image_size): a multiple of 2**U-Net depth.
      batch_size: photos per generator call (rounded up to a multiple of the device count).
      mesh: where the generator runs (default parallel.create_mesh()).
      workers: decode/encode threads (default: the CPU count, at most 8).
      chroma_gain: the generator's ab times this (--vividness: models.vividness.resolve).
      temperature: a classification head's annealed mean (models.predict_ab).

    Raises:
      errors.PlanError: a size the generator cannot take.
    """
    self.size = size or config.image_size
    multiple = 2 ** configuration.generator_depth(config)
    if self.size < multiple or self.size % multiple:
      raise errors.PlanError(
        f"--colorize_size={self.size} must be a multiple of {multiple} (2**U-Net depth of this "
        f"run): use {max(multiple, self.size // multiple * multiple)}"
      )
    self.mesh = mesh or parallel.create_mesh()
    devices = self.mesh.devices.size
    self.batch_size = -(-batch_size // devices) * devices
    self.step = step
    self.squash = config.data.resize_mode == "resize"
    self.workers = workers or min(8, os.cpu_count() or 1)
    self.g_variables = g_variables
    self.final_variables = g_variables  # the checkpoint's own (g_variables may be interpolated)
    self.takes_hints = hints_lib.enabled(config)  # the generator was trained with color hints
    # (variables, l) or, with hints, (variables, l, hints): every photo then gets a hint map, empty
    # where it has no hint, so that there is one program.
    batch = parallel.batch_sharding(self.mesh)
    self._shardings = (parallel.replicated(self.mesh), batch) + (
      (batch,) if self.takes_hints else ()
    )
    self._generator = models.create_generator(config)
    self._predicts = {}  # temperature -> the jitted generator (one per temperature asked for)
    self.chroma_gain = chroma_gain
    self.temperature = temperature

  @classmethod
  def from_checkpoint(
    cls, workdir: str, step: int | None = None, setting: vividness.Setting | None = None, **kwargs
  ) -> "Colorizer":
    """The generator of a run's latest (or `step`) checkpoint, at a vividness Setting (None: as
    trained). Raises FileNotFoundError and errors.RestoreError as
    checkpointing.restore_for_inference does."""
    mesh = parallel.create_mesh()
    inference = checkpointing.restore_for_inference(
      workdir, step, sharding=parallel.replicated(mesh)
    )
    variables = inference.g_variables
    if setting is not None:
      kwargs.update(chroma_gain=setting.chroma_gain, temperature=setting.temperature)
      if setting.alpha is not None:
        variables = jax.device_put(
          vividness.variables_at(workdir, variables, setting), parallel.replicated(mesh)
        )
    colorizer = cls(inference.config, variables, step=inference.step, mesh=mesh, **kwargs)
    colorizer.final_variables = inference.g_variables
    return colorizer

  def _predict(self, temperature: float):
    if temperature not in self._predicts:
      self._predicts[temperature] = jax.jit(
        functools.partial(models.predict_ab, self._generator, temperature=temperature),
        in_shardings=self._shardings,
      )
    return self._predicts[temperature]

  def predict_ab(
    self,
    inputs: np.ndarray,
    hints: np.ndarray | None = None,
    chroma_gain: float | None = None,
    variables: dict | None = None,
    temperature: float | None = None,
  ) -> np.ndarray:
    """Model-scale L [n, S, S, 1] (and hint maps [n, S, S, 3], for a generator trained with hints;
    None: no hint) -> model-scale ab [n, S, S, 2], in fixed-size batches, times chroma_gain (None:
    the Colorizer's; one float32 product, as models.predict_ab's), with the generator's `variables`
    and a classification head's `temperature` (None: the Colorizer's)."""
    n = len(inputs)
    batch = {"l": np.zeros((self.batch_size,) + inputs.shape[1:], np.float32)}
    batch["l"][:n] = inputs
    if self.takes_hints:
      batch["hints"] = np.zeros(batch["l"].shape[:-1] + (hints_lib.CHANNELS,), np.float32)
      if hints is not None:
        batch["hints"][:n] = hints
    elif hints is not None:
      raise ValueError("this generator was trained without hints (config.hints.enabled=False)")
    with jax.set_mesh(self.mesh):
      batch = parallel.global_batch(self.mesh, batch)
      args = (batch["l"], batch["hints"]) if self.takes_hints else (batch["l"],)
      predict = self._predict(self.temperature if temperature is None else temperature)
      ab = predict(self.g_variables if variables is None else variables, *args)
    ab = np.asarray(jax.device_get(ab))[:n]
    gain = self.chroma_gain if chroma_gain is None else chroma_gain
    return ab if gain == 1.0 else ab * np.float32(gain)

  def colorize_photo(
    self,
    photo: photo_lib.Photo,
    hints: user_hints.UserHints | None = None,
    chroma_gain: float | None = None,
    variables: dict | None = None,
    temperature: float | None = None,
  ) -> np.ndarray:
    """One decoded photo (and its hints, for a generator trained with them) -> its colorization,
    uint8 RGB [H, W, 3] (the alpha is the caller's); chroma_gain, variables and temperature as
    predict_ab."""
    hint_map = (
      None
      if hints is None
      else photo_lib.model_hints(hints, *photo.l.shape, self.size, self.squash)[None]
    )
    inputs = photo_lib.model_input(photo.l, self.size, self.squash)[None]
    ab = self.predict_ab(inputs, hint_map, chroma_gain, variables, temperature)[0]
    return photo_lib.compose(photo.l, photo_lib.upsample_ab(ab, *photo.l.shape, self.squash))

  def _prepare(
    self, job: photo_lib.Job, hint_file: str | None
  ) -> tuple[photo_lib.Photo, np.ndarray, np.ndarray | None]:
    """Decodes a job's photo: (the photo, its generator input, its hint map or None)."""
    photo = photo_lib.load_photo(job.source)
    hint_map = None
    if hint_file:
      try:
        points = user_hints.read_user_hints(hint_file, *photo.l.shape)
      except errors.HintError as e:  # the photo is not colorized without its hints
        raise photo_lib.BadPhoto(str(e).removeprefix("--hints=")) from e
      hint_map = photo_lib.model_hints(points, *photo.l.shape, self.size, self.squash)
    return photo, photo_lib.model_input(photo.l, self.size, self.squash), hint_map

  def _finish(
    self, job: photo_lib.Job, photo: photo_lib.Photo, ab: np.ndarray, output_format: str
  ) -> None:
    """Composes a job's photo with its predicted ab and writes it."""
    height, width = photo.l.shape
    rgb = photo_lib.compose(photo.l, photo_lib.upsample_ab(ab, height, width, self.squash))
    photo_lib.save(job.output, rgb, photo.alpha, output_format)

  def _run_chunk(
    self,
    pool: concurrent.futures.Executor,
    chunk: list[photo_lib.Job],
    hint_files: dict[str, str],
    output_format: str,
    report: Callable,
  ) -> int:
    """One batch of jobs: decoded in `pool`, predicted together, written in `pool`. A failing job
    goes to `report`; the others go on.

    Returns:
      How many of the decoded photos had an alpha channel.
    """
    prepared = []
    for job, future in [
      (job, pool.submit(self._prepare, job, hint_files.get(job.source))) for job in chunk
    ]:
      try:
        prepared.append((job, *future.result()))
      except Exception as e:  # pylint: disable=broad-except  (one bad file never stops the rest)
        report(job, e)
        continue
      if prepared[-1][1].note:
        tqdm.tqdm.write(f"colorgan: {job.source}: {prepared[-1][1].note}", file=sys.stderr)
    if not prepared:
      return 0
    hint_maps = None
    if self.takes_hints:
      empty = np.zeros((self.size, self.size, hints_lib.CHANNELS), np.float32)
      hint_maps = np.stack([empty if h is None else h for *_, h in prepared])
    abs_ = self.predict_ab(np.stack([inputs for _, _, inputs, _ in prepared]), hint_maps)
    finishing = [
      (job, pool.submit(self._finish, job, photo, ab, output_format))
      for (job, photo, _, _), ab in zip(prepared, abs_)
    ]
    for job, future in finishing:
      try:
        future.result()
      except Exception as e:  # pylint: disable=broad-except
        report(job, e)
    return sum(photo.alpha is not None for _, photo, _, _ in prepared)

  def run(self, work: photo_lib.Plan, hint_files: dict[str, str] | None = None) -> int:
    """Colorizes every job of `work` (photo.plan); a failing file is reported in one line, skipped.

    Args:
      work: the plan.
      hint_files: {job.source: its hint file} (user_hints.match_hint_files) for a generator trained
        with hints; a photo whose hints cannot be read fails (it is not colorized without them).

    Returns:
      The number of photos that failed.
    """
    hint_files = hint_files or {}
    if hint_files and not self.takes_hints:
      raise ValueError("this generator was trained without hints (config.hints.enabled=False)")
    jobs, output_format = work.jobs, work.output_format
    # Photos over MAX_PIXELS are rejected by load_photo; Pillow's warning about them is noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    failed, alpha_dropped = [], 0

    def report(job: photo_lib.Job, error: BaseException) -> None:
      reason = (
        str(error)
        if isinstance(error, photo_lib.BadPhoto)
        else (f"{type(error).__name__}: {' '.join(str(error).split())}")
      )
      tqdm.tqdm.write(f"colorgan: {job.source}: {reason}", file=sys.stderr)
      failed.append(job)

    logging.info(
      "Colorizing %d photo(s) with the generator of step %d at %d px, batches of %d",
      len(jobs),
      self.step,
      self.size,
      self.batch_size,
    )
    if work.earlier_outputs:
      logging.info(
        "Skipped %d file(s) among the inputs that colorgan wrote (earlier outputs)",
        work.earlier_outputs,
      )
    with (
      concurrent.futures.ThreadPoolExecutor(self.workers) as pool,
      progress_bar(len(jobs), "photo", "colorize") as bar,
    ):
      for start in range(0, len(jobs), self.batch_size):
        chunk = jobs[start : start + self.batch_size]
        alpha_dropped += self._run_chunk(pool, chunk, hint_files, output_format, report)
        bar.update(len(chunk))
    if alpha_dropped and output_format == "jpg":
      logging.warning(
        "%d photo(s) had an alpha channel, which jpg cannot hold: use "
        "--output_format=png to keep it",
        alpha_dropped,
      )
    done = len(jobs) - len(failed)
    with_hints = (
      f", {len(set(hint_files) - {job.source for job in failed})} with hints" if hint_files else ""
    )
    print(
      f"colorized {done} of {len(jobs)} photo(s) into {work.output_dir} (checkpoint step "
      f"{self.step}, {self.size} px{with_hints})"
    )
    if failed:
      print(
        f"colorgan: {len(failed)} of {len(jobs)} photo(s) failed (named above)", file=sys.stderr
      )
    return len(failed)
