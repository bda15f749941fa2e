"""A local page to colorize photos with a trained run: `python -m colorgan.serve --workdir=W`.

  python -m colorgan.serve --workdir=workdirs/quickstart [--port=7860] [--host=127.0.0.1] [--step=N]

Gradio (the `serve` extra: pip install -e '.[serve]'). Drop or pick a photo (the bundled photos are
the examples): the page shows the gray input (the photo's own L) and the colorized result side by
side at full resolution, and the result downloads as PNG. The colorization is --mode=colorize's
(colorize.Colorizer, load_photo, compose). Its API name is `colorize`:

  gradio_client.Client(url).predict(handle_file(photo), api_name="/colorize")  # -> the PNG's path

A file that is not an image, corrupt or over Pillow's decompression-bomb limit gets its one-line
message on the page; the server goes on serving. Uploads land only in a temporary folder of this
process: each is deleted once decoded, and the folder when the server stops. Nothing is fetched from
the internet (analytics off, system fonts, no share link).
"""

import importlib.util
import os
import shutil
import signal
import sys
import tempfile

# Before gradio is imported: it reads these at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402

from colorgan import colorize  # noqa: E402
from colorgan import input_pipeline  # noqa: E402

EXTRA = "pip install -e '.[serve]'"
API_NAME = "colorize"
# Gradio refuses larger uploads before they reach colorgan; Pillow's pixel limit guards the decode.
MAX_FILE_SIZE = "200mb"

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when run, not on import: main.py has --workdir and --step too."""
  flags.DEFINE_string("workdir", None, "The training run whose generator colorizes.")
  flags.DEFINE_integer("step", None, "The checkpoint step (default: the latest).")
  flags.DEFINE_integer("port", 7860, "The port to serve on.", lower_bound=0, upper_bound=65535)
  flags.DEFINE_string("host", "127.0.0.1", "The address to bind: 127.0.0.1 (this machine only) "
                      "unless told otherwise, e.g. 0.0.0.0 for the local network.")

class Page:
  """The colorize function behind the page: a Colorizer and the temporary folder it works in."""

  def __init__(self, colorizer: colorize.Colorizer, folder: str):
    self.colorizer = colorizer
    self.folder = folder

  def colorize(self, path: str | None):
    """An uploaded file -> (colorized uint8 [H, W, 3|4], gray uint8 [H, W]) for the page.

    Raises:
      gradio.Error: the file cannot be colorized (its one-line reason, shown on the page).
    """
    import gradio as gr  # pylint: disable=g-import-not-at-top
    if not path:
      return None, None
    name = os.path.basename(path)
    try:
      photo = colorize.load_photo(path)
    except colorize.BadPhoto as e:
      raise gr.Error(f"{name}: {e}", print_exception=False) from e
    finally:
      self._forget(path)
    rgb = self.colorizer.colorize_photo(photo)
    # The photo's L as sRGB gray (ab = 0; the mean evens out the conversion's +-1 between channels).
    gray = colorize.compose(photo.l, np.zeros(photo.l.shape + (2,), np.float32))
    gray = np.round(gray.mean(axis=-1)).astype(np.uint8)
    if photo.alpha is not None:  # as colorize mode's PNG output
      rgb = np.dstack([rgb, photo.alpha])
    return rgb, gray

  def _forget(self, path: str) -> None:
    """Deletes an upload once decoded (only ever one inside this page's temporary folder)."""
    real = os.path.realpath(path)
    if real.startswith(os.path.realpath(self.folder) + os.sep) and os.path.isfile(real):
      os.remove(real)


def build(page: Page, examples: list[str]):
  """The Gradio Blocks of the page."""
  import gradio as gr  # pylint: disable=g-import-not-at-top
  with gr.Blocks(title="colorgan", delete_cache=(600, 3600)) as demo:
    gr.Markdown(f"# colorgan\nA grayscale photo in, its colorization out (checkpoint step "
                f"{page.colorizer.step}, generator at {page.colorizer.size} px). Drop a photo or "
                "pick an example; the result keeps the photo's own lightness at full resolution.")
    photo = gr.File(label="Photo", file_count="single", type="filepath", elem_id="photo")
    with gr.Row(equal_height=True):
      gray = gr.Image(label="Gray input", type="numpy", format="png", image_mode=None,
                      interactive=False, buttons=["fullscreen"], elem_id="gray")
      result = gr.Image(label="Colorized", type="numpy", format="png", image_mode=None,
                        interactive=False, buttons=["download", "fullscreen"], elem_id="colorized")
    gray_state = gr.State()
    gr.Examples(examples=[[p] for p in examples], inputs=photo, label="Bundled photos")
    # One public endpoint, `colorize`, whose only output is the colorized PNG; the gray view
    # follows from a State (State values are not part of the API).
    photo.change(page.colorize, inputs=photo, outputs=[result, gray_state], api_name=API_NAME,
                 concurrency_limit=1).then(lambda g: g, inputs=gray_state, outputs=gray,
                                           api_visibility="private")
  return demo


def _copy_examples(folder: str) -> list[str]:
  """The bundled photos, copied into the page's folder: Gradio serves only from allowed places."""
  os.makedirs(os.path.join(folder, "examples"))
  paths = []
  for source in input_pipeline.bundled_photo_paths():
    paths.append(shutil.copy(source, os.path.join(folder, "examples", os.path.basename(source))))
  return paths


def serve(workdir: str, *, step: int | None, host: str, port: int, block: bool = True):
  """Starts the page and serves until Ctrl-C or SIGTERM, then removes its temporary folder.

  With block=False it returns (demo, url, folder) at once; the caller then closes demo and removes
  folder.

  Raises:
    FileNotFoundError: no checkpoint in workdir (or not that step).
    ImportError: gradio is not installed.
  """
  folder = tempfile.mkdtemp(prefix="colorgan-serve-")
  # Every upload and every file Gradio keeps goes here; gradio reads it when first imported.
  os.environ["GRADIO_TEMP_DIR"] = os.path.join(folder, "uploads")
  import gradio as gr  # pylint: disable=g-import-not-at-top
  try:
    colorizer = colorize.Colorizer.from_checkpoint(workdir, step, batch_size=1)
    page = Page(colorizer, folder)
    colorizer.colorize_photo(colorize.Photo(np.full((8, 8), 50.0, np.float32), None))  # compile now
    demo = build(page, _copy_examples(folder))
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts fetched
    _, url, _ = demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                            prevent_thread_lock=True, show_error=True, quiet=True, ssr_mode=False,
                            mcp_server=False, pwa=False, enable_monitoring=False,
                            max_file_size=MAX_FILE_SIZE, theme=theme, footer_links=["api"])
  except BaseException:
    shutil.rmtree(folder, ignore_errors=True)
    raise
  if not block:
    return demo, url, folder
  print(f"colorgan: serving the generator of step {colorizer.step} at {url} (Ctrl-C stops)",
        flush=True)
  signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop: the same clean exit
  try:
    demo.block_thread()  # returns on KeyboardInterrupt
  finally:
    demo.close()
    shutil.rmtree(folder, ignore_errors=True)
  return None


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _error(f"unexpected argument(s) {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    _error("--workdir is required: the training run to serve, e.g. --workdir=workdirs/quickstart")
  if importlib.util.find_spec("gradio") is None:  # not imported here: serve() sets its folder first
    _error(f"the page needs Gradio, which is not installed: {EXTRA}")
  try:
    serve(FLAGS.workdir, step=FLAGS.step, host=FLAGS.host, port=FLAGS.port)
  except FileNotFoundError as e:
    _error(f"--workdir={FLAGS.workdir}: {' '.join(str(e).split())}")
  except OSError as e:  # the port is taken, the address cannot be bound
    _error(f"--host={FLAGS.host} --port={FLAGS.port}: {' '.join(str(e).split())}")


def _error(message: str) -> None:
  print(f"colorgan: error: {message}", file=sys.stderr)
  sys.exit(2)


if __name__ == "__main__":
  define_flags()
  logging.set_verbosity(logging.WARNING)
  app.run(main)
