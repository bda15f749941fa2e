"""A local page to colorize photos with a trained run: `python -m colorgan.serve --workdir=W`.

  python -m colorgan.serve --workdir=workdirs/quickstart [--port=7860] [--host=127.0.0.1] [--step=N]

Gradio (the `serve` extra: pip install -e '.[serve]'). Drop or pick a photo (the bundled photos are
the examples): the page shows the gray input (the photo's own L) and the colorized result side by
side at full resolution, and the result downloads as PNG. The colorization is --mode=colorize's
(colorize.Colorizer, photo.load_photo, photo.compose). Its API name is `colorize`:

  gradio_client.Client(url).predict(handle_file(photo), api_name="/colorize")  # -> the PNG's path

With a run trained with color hints (config.hints.enabled), a click on the gray photo puts a hint
there in the picked color and size (pixels of the photo) and colorizes again; the hints are the
JSON of `--mode=colorize --hints` (editable in the page, "Clear hints" removes them), and a second
endpoint takes them with the photo:

  Client(url).predict(handle_file(photo), '{"points": [{"x": 120, "y": 64, "rgb": [200, 30, 40],
                      "size": 9}]}', api_name="/colorize_with_hints")  # -> the PNG's path

When the run's hint response, measured at the end of its training, is weak (under 1 dB for 10
points: colorgan.evaluation.hint_response), a line on the page says that clicks may change little.

A file that is not an image, corrupt or over Pillow's decompression-bomb limit, and hints that do
not fit the photo get their one-line message on the page; the server goes on serving. Uploads land
only in a temporary folder of this process: each is deleted once decoded, and the folder when the
server stops. Nothing is fetched from
the internet (analytics off, system fonts, no share link).
"""

import errno
import importlib.util
import os
import shutil
import signal
import socket
import sys
import tempfile

# Before gradio is imported: it reads these at import time.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import numpy as np  # noqa: E402

from colorgan import cli  # noqa: E402
from colorgan import errors  # noqa: E402
from colorgan.evaluation import hint_response  # noqa: E402
from colorgan.inference import colorize  # noqa: E402
from colorgan.inference import page as page_lib  # noqa: E402
from colorgan.inference import photo as photo_lib  # noqa: E402
from colorgan.models import vividness  # noqa: E402
from colorgan.data import sources  # noqa: E402

EXTRA = "pip install -e '.[serve]'"
# Gradio refuses larger uploads before they reach colorgan; Pillow's pixel limit guards the decode.
MAX_FILE_SIZE = "200mb"

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when run, not on import: main.py has --workdir and --step too."""
  flags.DEFINE_string("workdir", None, "The training run whose generator colorizes.")
  flags.DEFINE_integer("step", None, "The checkpoint step (default: the latest).")
  flags.DEFINE_integer("port", 7860, "The port to serve on.", lower_bound=1, upper_bound=65535)
  flags.DEFINE_string(
    "host",
    "127.0.0.1",
    "The address to bind: 127.0.0.1 (this machine only) "
    "unless told otherwise, e.g. 0.0.0.0 for the local network.",
  )


def _copy_examples(folder: str) -> list[str]:
  """The bundled photos, copied into the page's folder: Gradio serves only from allowed places."""
  os.makedirs(os.path.join(folder, "examples"))
  paths = []
  for source in sources.bundled_photo_paths():
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
    colorizer = colorize.Colorizer.from_checkpoint(
      workdir, step, vividness.resolve(workdir, None), batch_size=1
    )
    page = page_lib.Page(
      colorizer,
      folder,
      hint_note=hint_response.page_note(workdir),
      calibration=vividness.read(workdir),
      workdir=workdir,
    )
    # Compiled now, not at the first upload.
    colorizer.colorize_photo(photo_lib.Photo(np.full((8, 8), 50.0, np.float32), None))
    demo = page_lib.build(page, _copy_examples(folder))
    theme = gr.themes.Default(
      font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )  # no web fonts fetched
    _, url, _ = demo.launch(
      server_name=host,
      server_port=port,
      share=False,
      inbrowser=False,
      prevent_thread_lock=True,
      show_error=True,
      quiet=True,
      ssr_mode=False,
      mcp_server=False,
      pwa=False,
      enable_monitoring=False,
      max_file_size=MAX_FILE_SIZE,
      theme=theme,
      footer_links=["api"],
    )
  except BaseException:
    shutil.rmtree(folder, ignore_errors=True)
    raise
  if not block:
    return demo, url, folder
  print(
    f"colorgan: serving the generator of step {colorizer.step} at {url} (Ctrl-C stops)", flush=True
  )
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


@cli.exit_on_error
def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, a mistake (e.g. --port=70000) in one line (exit 2), not absl's FATAL text."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    raise errors.UsageError(f"{cli.one_line(e)} (see --helpshort)") from None


def check_address(host: str, port: int) -> None:
  """Binds --host:--port for a moment, before the checkpoint is restored: a port in use or an
  address this machine does not have is one line naming the flag (Gradio's own message, raised
  after the restore, points at its GRADIO_SERVER_PORT variable instead).

  Raises:
    errors.UsageError: the address cannot be served.
  """
  bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [::1]
  try:
    family, kind, proto, _, address = socket.getaddrinfo(
      bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
  except (socket.gaierror, UnicodeError) as e:
    reason = getattr(e, "strerror", None) or cli.one_line(e)
    raise errors.UsageError(
      f"--host={host} is not a known address ({reason}): use "
      "127.0.0.1 (this machine only) or 0.0.0.0 (the local network)"
    ) from None
  with socket.socket(family, kind, proto) as probe:
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
    try:
      probe.bind(address)
    except OSError as e:
      raise errors.UsageError(address_message(host, port, e)) from None


def address_message(host: str, port: int, error: OSError) -> str:
  """One line for an address that cannot be served, naming the flag to change."""
  if error.errno == errno.EADDRINUSE or "Cannot find empty port" in str(error):
    return (
      f"--port={port} is in use (another server, or a colorgan.serve still running): choose "
      f"another --port, e.g. --port={port + 1 if port < 65535 else 7860}"
    )
  if error.errno == errno.EACCES:
    return (
      f"--port={port} cannot be bound here ({error.strerror}; ports below 1024 need root): "
      "choose another --port, e.g. --port=7860"
    )
  if error.errno == errno.EADDRNOTAVAIL:
    return (
      f"--host={host} is not an address of this machine: use 127.0.0.1 (this machine only) "
      "or 0.0.0.0 (the local network)"
    )
  return f"--host={host} --port={port} cannot be served: {cli.one_line(error)}"


@cli.exit_on_error
def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise errors.UsageError(f"unexpected argument(s) {' '.join(argv[1:])}")
  if not FLAGS.workdir:
    raise errors.UsageError(
      "--workdir is required: the training run to serve, e.g. --workdir=workdirs/quickstart"
    )
  if importlib.util.find_spec("gradio") is None:  # not imported here: serve() sets its folder first
    raise errors.UsageError(f"the page needs Gradio, which is not installed: {EXTRA}")
  check_address(FLAGS.host, FLAGS.port)
  try:
    serve(FLAGS.workdir, step=FLAGS.step, host=FLAGS.host, port=FLAGS.port)
  except KeyboardInterrupt:  # Ctrl-C before the page was up (serve() removed its folder)
    sys.exit(130)
  except FileNotFoundError as e:
    raise errors.UsageError(f"--workdir={FLAGS.workdir}: {cli.one_line(e)}") from None
  except OSError as e:  # taken since check_address, or an address uvicorn cannot serve
    raise errors.UsageError(address_message(FLAGS.host, FLAGS.port, e)) from None


if __name__ == "__main__":
  define_flags()
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=parse_flags)
