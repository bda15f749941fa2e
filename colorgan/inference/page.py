"""The page of colorgan.serve: what it shows and does, as Gradio Blocks around a Colorizer.

Gradio is imported only when the page is built (the serve extra). colorgan.serve starts it.
"""

import json
import os
import tempfile

import numpy as np

from colorgan import errors
from colorgan.inference import colorize
from colorgan.inference import photo as photo_lib
from colorgan.inference import user_hints
from colorgan.models import vividness

API_NAME = "colorize"
HINTS_API_NAME = "colorize_with_hints"
VIDEO_API_NAME = "colorize_video"
MAX_CLIP_SECONDS = 30.0  # the page's clips; longer videos: --mode=colorize (resumable, any length)
HINT_COLOR, HINT_SIZE = "#d03030", 24  # the page's first hint: a red square of 24 photo pixels


class Page:
  """The colorize function behind the page: a Colorizer and the temporary folder it works in."""

  def __init__(
    self,
    colorizer: colorize.Colorizer,
    folder: str,
    hint_note: str | None = None,
    calibration: vividness.Calibration | None = None,
    workdir: str | None = None,
  ):
    self.colorizer = colorizer
    self.folder = folder
    self.hint_note = hint_note  # hint_response.page_note: the run barely follows hints
    self.calibration = calibration  # the run's vividness knob (a slider), None: the run has none
    self.workdir = workdir  # where an interpolated run's interpolation.npz is
    self._interpolation = None

  def _at(self, v: float | None) -> dict:
    """colorize_photo's chroma_gain and variables at the slider's vividness v ({}: the Colorizer's,
    the run's default)."""
    if self.calibration is None or v is None:
      return {}
    chosen = vividness.setting(self.calibration, v)
    if chosen.alpha is None:
      return {"chroma_gain": chosen.chroma_gain, "temperature": chosen.temperature}
    if self._interpolation is None:  # read once, on the first move of the slider
      self._interpolation = vividness.read_interpolation(self.workdir)
    final = self.colorizer.final_variables
    return {"variables": vividness.interpolate(final, self._interpolation, chosen.alpha)}

  def colorize_file(self, path: str | None, v: float | None = None):
    """An uploaded file (and the vividness slider's v; None: the run's default) -> (colorized
    uint8 [H, W, 3|4], gray uint8 [H, W], the decoded photo) for the page.

    Raises:
      gradio.Error: the file cannot be colorized (its one-line reason, shown on the page).
    """
    if not path:
      return None, None, None
    photo = self._load(path)
    return self._colorized(photo, None, v), _gray(photo), photo

  def colorize_file_with_hints(self, path: str | None, text: str | None):
    """The `colorize_with_hints` endpoint: an uploaded file and hints as JSON -> colorized."""
    if not path:
      return None
    photo = self._load(path)
    return self._colorized(photo, self._hints(photo, text))

  def recolorize(self, photo: photo_lib.Photo | None, text: str | None, v: float | None = None):
    """The page's photo with the hints in the text box (at vividness v) -> (colorized, gray with
    the hints drawn)."""
    if photo is None:
      return None, None
    points = self._hints(photo, text)
    return self._colorized(photo, points, v), user_hints.draw_hints(
      _gray(photo), text if points else None
    )

  def add_hint(self, photo, text: str | None, rgb: str, size: float, evt, v: float | None = None):
    """A click at evt.index = (x, y) on the gray photo -> (colorized, gray with hints, new text)."""
    if photo is None:
      return None, None, text
    points = json.loads(text)["points"] if (text or "").strip() else []
    x, y = evt.index
    points.append({"x": int(x), "y": int(y), "rgb": user_hints.parse_color(rgb), "size": int(size)})
    text = json.dumps({"points": points})
    return (*self.recolorize(photo, text, v), text)

  def colorize_clip(self, path: str | None) -> str | None:
    """The `colorize_video` endpoint: a clip of at most MAX_CLIP_SECONDS -> the path of its
    colorization (same container, frame times and audio; temporal="ema"; the run's vividness).

    Raises:
      gradio.Error: not a video, too long, or damaged (its one-line reason).
    """
    import gradio as gr  # pylint: disable=g-import-not-at-top
    from colorgan.inference import video  # pylint: disable=g-import-not-at-top
    from colorgan.inference import video_io  # pylint: disable=g-import-not-at-top

    if not path:
      return None
    name = os.path.basename(path)
    try:
      info = video_io.probe(path)
      if info is None:
        raise gr.Error(f"{name} is not a video PyAV can read", print_exception=False)
      seconds = info.duration or (info.frames / float(info.rate) if info.frames else 0.0)
      if seconds > MAX_CLIP_SECONDS:
        raise gr.Error(
          f"{name} is {seconds:.0f} s long: the page takes clips up to {MAX_CLIP_SECONDS:.0f} s "
          "(colorize longer videos with --mode=colorize, which also resumes)",
          print_exception=False,
        )
      out_dir = tempfile.mkdtemp(prefix="clip-", dir=self.folder)
      dst = video.output_path(os.path.join(out_dir, os.path.basename(path)), path)
      try:
        return video.colorize_video(self.colorizer, path, dst, progress=False).path
      except errors.ColorganError as e:
        raise gr.Error(f"{name}: {e}", print_exception=False) from e
    finally:
      self._forget(path)

  def _load(self, path: str) -> photo_lib.Photo:
    import gradio as gr  # pylint: disable=g-import-not-at-top

    try:
      return photo_lib.load_photo(path)
    except photo_lib.BadPhoto as e:
      raise gr.Error(f"{os.path.basename(path)}: {e}", print_exception=False) from e
    finally:
      self._forget(path)

  def _hints(self, photo: photo_lib.Photo, text: str | None) -> user_hints.UserHints | None:
    """The hints in `text` (JSON, as --hints files), None for none. Raises gradio.Error."""
    import gradio as gr  # pylint: disable=g-import-not-at-top

    if not (text or "").strip():
      return None
    if not self.colorizer.takes_hints:
      raise gr.Error(
        "this run was trained without hints (config.hints.enabled=False): clear the hints",
        print_exception=False,
      )
    try:
      return user_hints.parse_points(json.loads(text), *photo.l.shape, what="the hints")
    except json.JSONDecodeError as e:
      raise gr.Error(
        f"the hints are not JSON ({e.msg} at line {e.lineno} column {e.colno})",
        print_exception=False,
      ) from e
    except errors.HintError as e:
      raise gr.Error(str(e), print_exception=False) from e

  def _colorized(
    self, photo: photo_lib.Photo, points: user_hints.UserHints | None, v: float | None = None
  ) -> np.ndarray:
    rgb = self.colorizer.colorize_photo(photo, points, **self._at(v))
    if photo.alpha is not None:  # as colorize mode's PNG output
      rgb = np.dstack([rgb, photo.alpha])
    return rgb

  def _forget(self, path: str) -> None:
    """Deletes an upload once decoded (only ever one inside this page's temporary folder)."""
    real = os.path.realpath(path)
    if real.startswith(os.path.realpath(self.folder) + os.sep) and os.path.isfile(real):
      os.remove(real)


def _gray(photo: photo_lib.Photo) -> np.ndarray:
  """The photo's L as sRGB gray, uint8 [H, W] (ab = 0; the mean evens out the conversion's +-1
  between channels)."""
  gray = photo_lib.compose(photo.l, np.zeros(photo.l.shape + (2,), np.float32))
  return np.round(gray.mean(axis=-1)).astype(np.uint8)


def build(page: Page, examples: list[str]):
  """The Gradio Blocks of the page."""
  import gradio as gr  # pylint: disable=g-import-not-at-top

  takes_hints = page.colorizer.takes_hints
  with gr.Blocks(title="colorgan", delete_cache=(600, 3600)) as demo:
    gr.Markdown(
      f"# colorgan\nA grayscale photo in, its colorization out (checkpoint step "
      f"{page.colorizer.step}, generator at {page.colorizer.size} px). Drop a photo or "
      "pick an example; the result keeps the photo's own lightness at full resolution."
      + (
        " **Click the gray photo to give a color there** (pick the color and size "
        "first); each click colorizes again."
        if takes_hints
        else ""
      )
    )
    if takes_hints and page.hint_note:
      gr.Markdown(page.hint_note, elem_id="hint_note")
    photo = gr.File(label="Photo", file_count="single", type="filepath", elem_id="photo")
    with gr.Row(visible=takes_hints):
      hint_color = gr.ColorPicker(value=HINT_COLOR, label="Hint color", elem_id="hint_color")
      hint_size = gr.Slider(
        1, 256, value=HINT_SIZE, step=1, label="Hint size (photo pixels)", elem_id="hint_size"
      )
      clear = gr.Button("Clear hints", elem_id="clear_hints")
    vivid = _vividness_slider(gr, page)
    with gr.Row(equal_height=True):
      gray = gr.Image(
        label="Gray input" + (": click to place a hint" if takes_hints else ""),
        type="numpy",
        format="png",
        image_mode=None,
        interactive=False,
        buttons=["fullscreen"],
        elem_id="gray",
      )
      result = gr.Image(
        label="Colorized",
        type="numpy",
        format="png",
        image_mode=None,
        interactive=False,
        buttons=["download", "fullscreen"],
        elem_id="colorized",
      )
    with gr.Row(visible=takes_hints):
      hints_text = gr.Textbox(
        label="Hints (JSON, as --mode=colorize --hints files)", lines=2, elem_id="hints", scale=4
      )
      apply = gr.Button("Colorize with these hints", elem_id="apply_hints", scale=1)
    gray_state, photo_state = gr.State(), gr.State()
    gr.Examples(examples=[[p] for p in examples], inputs=photo, label="Bundled photos")
    # The public endpoints' only output is the colorized PNG: `colorize` (the photo) and
    # `colorize_with_hints` (the photo and hints as JSON, through hidden inputs). The rest of the
    # page follows from States (not part of the API) in private steps.
    photo.change(
      page.colorize_file,
      inputs=[photo, vivid],
      outputs=[result, gray_state, photo_state],
      api_name=API_NAME,
      concurrency_limit=1,
    ).then(
      lambda g: (g, ""), inputs=gray_state, outputs=[gray, hints_text], api_visibility="private"
    )
    vivid.release(
      lambda p, text, v: page.recolorize(p, text, v)[0],
      inputs=[photo_state, hints_text, vivid],
      outputs=result,
      api_visibility="private",
      concurrency_limit=1,
    )
    _clip_section(gr, page)
    if takes_hints:
      _hint_events(
        gr, page, photo_state, hints_text, hint_color, hint_size, gray, result, apply, clear, vivid
      )
  return demo


def _clip_section(gr, page: Page) -> None:
  """A short clip in, its colorization out (the `colorize_video` endpoint)."""
  with gr.Accordion(f"Video: a clip of up to {MAX_CLIP_SECONDS:.0f} s", open=False):
    with gr.Row(equal_height=True):
      clip = gr.Video(label="Clip", sources=["upload"], elem_id="clip")
      colorized = gr.Video(label="Colorized clip", interactive=False, elem_id="colorized_clip")
  clip.upload(
    page.colorize_clip, inputs=clip, outputs=colorized, api_name=VIDEO_API_NAME, concurrency_limit=1
  )


def _vividness_slider(gr, page: Page):
  """The vividness slider, shown for a run with a calibration (models.vividness), at its default."""
  return gr.Slider(
    0,
    1,
    value=page.calibration.default if page.calibration else 0,
    step=0.05,
    label="Vividness: 0 the most accurate colors, 1 as colourful as photos (the run's default "
    "chosen on its validation photos)",
    visible=page.calibration is not None,
    elem_id="vividness",
  )


def _hint_events(
  gr, page: Page, photo_state, hints_text, hint_color, hint_size, gray, result, apply, clear, vivid
) -> None:
  """The page's hint events: a click on the gray photo adds a hint, the box's JSON can be applied or
  cleared, and a hidden button is the `colorize_with_hints` endpoint."""

  def on_click(photo, text, rgb, size, v, evt: gr.SelectData):  # gradio passes the click's pixel
    return page.add_hint(photo, text, rgb, size, evt, v)

  private = dict(api_visibility="private", concurrency_limit=1)
  gray.select(
    on_click,
    inputs=[photo_state, hints_text, hint_color, hint_size, vivid],
    outputs=[result, gray, hints_text],
    **private,
  )
  apply.click(
    page.recolorize, inputs=[photo_state, hints_text, vivid], outputs=[result, gray], **private
  )
  clear.click(
    lambda p, v: (*page.recolorize(p, "", v), ""),
    inputs=[photo_state, vivid],
    outputs=[result, gray, hints_text],
    **private,
  )
  api_photo = gr.File(type="filepath", visible=False)
  api_hints = gr.Textbox(visible=False)
  gr.Button(visible=False).click(
    page.colorize_file_with_hints,
    inputs=[api_photo, api_hints],
    outputs=result,
    api_name=HINTS_API_NAME,
    concurrency_limit=1,
  )
