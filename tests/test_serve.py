"""python -m colorgan.serve: the page in a real browser (headless Chromium) and its Gradio API."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import skimage.color
from PIL import Image

from colorgan.inference import colorize
from colorgan.inference import photo as photo_lib
from colorgan.inference import user_hints
from colorgan.data import sources
from tests.conftest import REPO

CHROMIUM = (
  "/usr/bin/chromium"  # Debian's package (.ci/run installs it); Playwright downloads nothing
)
# Headless, and nothing that reaches beyond this machine.
CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
]
TIMEOUT_MS = 120_000


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def workdir(hints_workdir):
  """A run trained with color hints (conftest): the page without hints is the automatic one."""
  return hints_workdir


# `python -c STOPPABLE PARENT_PID MODULE ARGS...` runs `python -m MODULE ARGS...` so that it stops in
# every case: Ctrl-C (SIGINT) works even when this test run ignores SIGINT, as a shell's background
# job (`make test &`) does and its children inherit; and it gets SIGTERM (the server's clean stop)
# when the test process dies first, killed without its finalizers (Linux: PR_SET_PDEATHSIG). Not a
# preexec_fn: that forks the multithreaded test process (JAX warns of deadlocks).
STOPPABLE = """
import ctypes, os, runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
if sys.platform == "linux":
  ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
  if os.getppid() != int(sys.argv[1]):  # the parent died before prctl
    sys.exit(0)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _stoppable(module: str, *args: str) -> list[str]:
  """The command line of `python -m module args...`, stoppable in every case (STOPPABLE)."""
  return [sys.executable, "-c", STOPPABLE, str(os.getpid()), module, *args]


def _start_server(workdir: str, tmp: str) -> tuple[subprocess.Popen, str]:
  """`python -m colorgan.serve` on a free port, in its own process group, temporary files in tmp;
  returns once the page answers and the server says it serves."""
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="true", TMPDIR=tmp)
  process = subprocess.Popen(
    _stoppable("colorgan.serve", f"--workdir={workdir}", f"--port={port}"),
    cwd=REPO,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
    start_new_session=True,
  )
  url = f"http://127.0.0.1:{port}/"
  deadline = time.time() + 240
  while True:
    try:
      urllib.request.urlopen(url, timeout=5)
      # The page answers while Gradio's launch() still runs: Ctrl-C is the clean stop from the
      # line that says so on.
      while not (line := process.stdout.readline()).startswith("colorgan: serving"):
        if not line:
          break
      return process, url
    except OSError:
      if process.poll() is not None or time.time() > deadline:
        _stop_server(process)
        pytest.fail(f"the server did not start:\n{process.communicate()[0]}")
      time.sleep(0.5)


def _stop_server(process: subprocess.Popen, timeout: float = 60) -> int:
  """Ctrl-C (the clean stop: the server removes its temporary folder); its whole process group
  killed if it is still there after `timeout` seconds. Returns the exit status."""
  if process.poll() is None:
    process.send_signal(signal.SIGINT)
    try:
      return process.wait(timeout)
    except subprocess.TimeoutExpired:
      os.killpg(process.pid, signal.SIGKILL)
  return process.wait()


@pytest.fixture(scope="module")
def server(workdir, tmp_path_factory):
  """`python -m colorgan.serve` on a free port, its temporary folders under a folder of the test;
  stopped at the end whatever happened (_stop_server), or with the test process (STOPPABLE)."""
  tmp = tmp_path_factory.mktemp("server_tmp")
  process, url = _start_server(workdir, str(tmp))
  try:
    yield url, tmp, process
  finally:
    _stop_server(process)


def _reference(path: str) -> np.ndarray:
  """What --mode=colorize writes for the photo (same checkpoint): PNG pixels of the host path."""
  return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def expected(workdir):
  """What --mode=colorize writes for a photo (and hints as JSON text), same checkpoint."""
  colorizer = colorize.Colorizer.from_checkpoint(workdir, batch_size=1)

  def colorized(path, hints_text=None):
    photo = photo_lib.load_photo(path)
    points = (
      None
      if hints_text is None
      else user_hints.parse_points(json.loads(hints_text), *photo.l.shape, what="hints")
    )
    return colorizer.colorize_photo(photo, points)

  return colorized


def _distance_to_hints(rgb, points):
  """Lab ab distance of the color under each point to the point's own color."""
  lab = skimage.color.rgb2lab(rgb[..., :3] / 255.0)
  want = skimage.color.rgb2lab(np.array([[p["rgb"] for p in points]]) / 255.0)[0, :, 1:]
  return np.linalg.norm(np.array([lab[p["y"], p["x"], 1:] for p in points]) - want, axis=-1)


def test_api_returns_the_colorized_png(server, expected):
  from gradio_client import Client  # pylint: disable=g-import-not-at-top
  from gradio_client import handle_file  # pylint: disable=g-import-not-at-top

  url, _, _ = server
  photo = sources.bundled_photo_paths()[6]  # china.jpg, 427 x 640
  result = Client(url, verbose=False).predict(handle_file(photo), api_name="/colorize")
  with Image.open(result) as image:
    assert image.format == "PNG" and image.size == Image.open(photo).size
    np.testing.assert_array_equal(np.asarray(image.convert("RGB")), expected(photo))


def test_api_colorizes_with_hints(server, expected):
  from gradio_client import Client  # pylint: disable=g-import-not-at-top
  from gradio_client import handle_file  # pylint: disable=g-import-not-at-top

  url, _, _ = server
  photo = sources.bundled_photo_paths()[6]  # china.jpg, 427 x 640
  text = json.dumps({"points": [{"x": 200, "y": 150, "rgb": [30, 60, 220], "size": 60}]})
  client = Client(url, verbose=False)
  result = client.predict(handle_file(photo), text, api_name="/colorize_with_hints")
  with Image.open(result) as image:
    got = np.asarray(image.convert("RGB"))
  np.testing.assert_array_equal(got, expected(photo, text))
  assert not np.array_equal(got, expected(photo))
  bad = json.dumps({"points": [{"x": 640, "y": 1, "rgb": [1, 2, 3]}]})
  with pytest.raises(Exception, match=r"point 0 at \(x=640, y=1\) is outside the photo"):
    client.predict(handle_file(photo), bad, api_name="/colorize_with_hints")


def _wait_for_new_result(page, src):
  page.wait_for_function(
    "src => { const img = document.querySelector('#colorized img');"
    " return img && img.src !== src; }",
    arg=src,
    timeout=TIMEOUT_MS,
  )
  return page.locator("#colorized img").get_attribute("src")


def _fetch(src):
  with urllib.request.urlopen(src) as response:
    return np.asarray(Image.open(response).convert("RGB"))


def _playwright():
  """Playwright's sync API, with Debian's chromium there to drive. Skipped on a developer's machine
  without them; in CI (.ci/run installs both) their absence fails the test."""
  missing = None
  try:
    import playwright.sync_api as playwright  # pylint: disable=import-outside-toplevel
  except ImportError:
    missing = "playwright is not installed: make install"
  if missing is None and not os.path.exists(CHROMIUM):
    missing = f"{CHROMIUM} is missing: apt-get install chromium"
  if missing is None:
    return playwright
  if os.environ.get("CI"):
    pytest.fail(missing)
  pytest.skip(missing)


@pytest.mark.browser
def test_hints_clicked_on_the_page_pull_the_colors(server, expected, tmp_path):
  """Two hints, each a color picked and a click on the gray photo: the colors under them move
  toward the picked colors; "Clear hints" brings back the automatic colorization."""
  playwright = _playwright()
  url, _, _ = server
  photo = str(tmp_path / "hint_me.png")
  Image.open(sources.bundled_photo_paths()[1]).resize((301, 207)).save(photo)
  picks = [("#1e3cdc", (1 / 3, 1 / 3)), ("#dc2818", (2 / 3, 2 / 3))]  # blue, then red
  with playwright.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url)
    page.locator("#photo input[type=file]").set_input_files(photo)
    page.locator("#colorized img").wait_for(timeout=TIMEOUT_MS)
    gray = page.locator("#gray img")
    gray.wait_for(timeout=TIMEOUT_MS)
    src = page.locator("#colorized img").get_attribute("src")
    size = page.locator("#hint_size input[type=number]")
    size.fill("40")
    size.press("Enter")
    for color, (fx, fy) in picks:
      page.locator("#hint_color button.dialog-button").click()  # the picker's dialog
      hex_input = page.locator("#hint_color .input-wrap input[type=text]")
      hex_input.fill(color)
      hex_input.press("Enter")
      page.locator("h1").first.click()  # closes the dialog
      page.locator("#hint_color .color-picker").wait_for(state="hidden", timeout=TIMEOUT_MS)
      box = gray.bounding_box()
      page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
      src = _wait_for_new_result(page, src)
    with_hints = _fetch(src)
    text = page.locator("#hints textarea").input_value()
    points = json.loads(text)["points"]
    assert [p["rgb"] for p in points] == [[30, 60, 220], [220, 40, 24]]
    assert [p["size"] for p in points] == [40, 40]
    for p, (_, (fx, fy)) in zip(points, picks):  # where the clicks were, in photo pixels
      assert abs(p["x"] - fx * 301) <= 2 and abs(p["y"] - fy * 207) <= 2
    np.testing.assert_array_equal(with_hints, expected(photo, text))
    before, after = (
      _distance_to_hints(expected(photo), points),
      _distance_to_hints(with_hints, points),
    )
    assert np.all(after < before - 5), (before, after)
    marked = _fetch(gray.get_attribute("src"))  # the hints are drawn on the gray photo
    assert np.ptp(marked.astype(int), axis=-1).max() > 100

    page.locator("#clear_hints").click()
    src = _wait_for_new_result(page, src)
    np.testing.assert_array_equal(_fetch(src), expected(photo))
    assert page.locator("#hints textarea").input_value() == ""
    browser.close()


@pytest.mark.browser
def test_the_page_in_a_browser(server, expected, tmp_path):
  playwright = _playwright()
  url, server_tmp, process = server
  photo = str(tmp_path / "upload_me.png")  # a name and pixels no example has; an odd size
  Image.open(sources.bundled_photo_paths()[1]).resize((301, 207)).save(photo)
  notes = tmp_path / "notes.txt"
  notes.write_text("not a photo\n")
  with playwright.sync_playwright() as p:
    browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    page = browser.new_page(accept_downloads=True, viewport={"width": 1280, "height": 900})
    hosts = set()
    page.on("request", lambda request: hosts.add(request.url.split("/")[2]))
    page.goto(url)
    page.get_by_text("Bundled photos").wait_for(timeout=TIMEOUT_MS)  # the examples are offered

    page.locator("#photo input[type=file]").set_input_files(photo)
    result = page.locator("#colorized img")
    result.wait_for(timeout=TIMEOUT_MS)
    page.locator("#gray img").wait_for(timeout=TIMEOUT_MS)  # side by side with the gray input
    with page.expect_download(timeout=TIMEOUT_MS) as download:
      page.locator("#colorized").get_by_role("button", name="Download").click()
    saved = tmp_path / "download"
    download.value.save_as(saved)
    with Image.open(saved) as image:
      assert image.format == "PNG" and image.size == Image.open(photo).size  # full resolution
      np.testing.assert_array_equal(np.asarray(image.convert("RGB")), expected(photo))
    with Image.open(saved) as image:
      gray_src = page.locator("#gray img").get_attribute("src")
      with urllib.request.urlopen(gray_src) as response:
        gray = np.asarray(Image.open(response).convert("RGB")).astype(np.int32)
      assert gray.shape[:2] == image.size[::-1] and np.ptp(gray, axis=-1).max() == 0  # gray
    screenshot = tmp_path / "serve.png"
    page.screenshot(path=screenshot, full_page=True)
    if os.environ.get("COLORGAN_SERVE_SCREENSHOT"):  # how docs/serve.png is made
      shutil.copy(screenshot, os.environ["COLORGAN_SERVE_SCREENSHOT"])

    # A text file: its one-line reason on the page, and the page goes on working.
    first_src = result.get_attribute("src")
    page.locator("#photo button[aria-label='Clear']").first.click()
    page.locator("#photo input[type=file]").set_input_files(notes)
    page.get_by_text("notes.txt: not an image").first.wait_for(timeout=TIMEOUT_MS)
    page.locator("#photo button[aria-label='Clear']").first.click()
    other = str(tmp_path / "other.jpg")
    Image.open(sources.bundled_photo_paths()[2]).convert("RGB").save(other, quality=90)
    page.locator("#photo input[type=file]").set_input_files(other)
    page.wait_for_function(
      "src => { const img = document.querySelector('#colorized img');"
      " return img && img.src !== src; }",
      arg=first_src,
      timeout=TIMEOUT_MS,
    )
    with urllib.request.urlopen(result.get_attribute("src")) as response:
      np.testing.assert_array_equal(
        np.asarray(Image.open(response).convert("RGB")), expected(other)
      )
    browser.close()
  assert hosts == {url.split("/")[2]}, hosts  # nothing but the page's own server

  # Uploads are deleted once decoded; the server's temporary folder goes when it stops.
  names = {"upload_me.png", "notes.txt", "other.jpg"}
  assert not [f for _, _, fs in os.walk(server_tmp) for f in fs if f in names]
  assert _stop_server(process) == 0  # Ctrl-C: a clean exit
  assert not os.listdir(server_tmp), os.listdir(server_tmp)


def test_without_gradio_one_line_names_the_extra(tmp_path):
  program = "\n".join(
    [
      "import importlib.util, runpy, sys",
      "find_spec = importlib.util.find_spec",
      "importlib.util.find_spec = lambda name, *a: None if name == 'gradio' else find_spec(name, *a)",
      f"sys.argv = ['serve', '--workdir={tmp_path}']",
      "runpy.run_module('colorgan.serve', run_name='__main__')",
    ]
  )
  result = subprocess.run(
    [sys.executable, "-c", program],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
    "colorgan: error: the page needs Gradio, which is not installed: pip install -e '.[serve]'"
  )


# ----------------------------------------------------------------------------- stopping, flags
def _alive(pid: int) -> bool:
  """Whether pid runs (a zombie no parent has reaped yet counts as gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_the_server_stops_on_ctrl_c_when_the_test_run_ignores_it(workdir, tmp_path):
  """A shell's background job (`make test &`, a CI step) ignores SIGINT, and so would the server
  it starts: the server fixture's Ctrl-C would do nothing and leave it running."""
  previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `&` in a script sets it
  try:
    process, _ = _start_server(workdir, str(tmp_path))
  finally:
    signal.signal(signal.SIGINT, previous)
  try:
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0  # the clean stop, as Ctrl-C in a terminal
  finally:
    _stop_server(process, timeout=1)
  assert not os.listdir(tmp_path), os.listdir(tmp_path)  # its temporary folder removed


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_the_server_goes_when_the_test_process_dies(tmp_path):
  """A test process killed without its finalizers (SIGKILL, a closed terminal) takes its server
  along: a stand-in child started as _start_server starts the server (STOPPABLE)."""
  program = "\n".join(
    [
      "import os, subprocess",
      "from tests.test_serve import _stoppable",
      "sleep = _stoppable('timeit', '-n1', '-r1', 'import time; time.sleep(300)')  # a stand-in",
      "child = subprocess.Popen(sleep, start_new_session=True)",
      "print(child.pid, flush=True)",
      "os._exit(0)  # no finalizer, no wait",
    ]
  )
  result = subprocess.run(
    [sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=120
  )
  pid = int(result.stdout.split()[-1])
  deadline = time.time() + 30
  while _alive(pid) and time.time() < deadline:
    time.sleep(0.2)
  if _alive(pid):
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"the child {pid} outlived its parent")


def _serve_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", "colorgan.serve", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )


def test_port_mistakes_are_one_line_naming_the_port(tmp_path):
  # Checked before the run is restored: no run is needed to see them.
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    in_use = _serve_cli(f"--workdir={tmp_path}", f"--port={port}")
  for result, message in (
    (
      in_use,
      f"--port={port} is in use (another server, or a colorgan.serve still running): "
      f"choose another --port, e.g. --port={port + 1}",
    ),
    (
      _serve_cli(f"--workdir={tmp_path}", "--port=70000"),
      "flag --port=70000: 70000 is not an integer in the range [1, 65535] (see --helpshort)",
    ),
    (
      _serve_cli(f"--workdir={tmp_path}", "--port=0"),
      "flag --port=0: 0 is not an integer in the range [1, 65535] (see --helpshort)",
    ),
    (
      _serve_cli(f"--workdir={tmp_path}", "--host=192.0.2.1"),
      "--host=192.0.2.1 is not an address of this machine: use 127.0.0.1 (this machine only) "
      "or 0.0.0.0 (the local network)",
    ),
  ):
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"colorgan: error: {message}"], result.stderr


def test_gradios_port_error_names_the_flag():
  """The port taken between the check and Gradio's launch: Gradio's text, which points at its
  GRADIO_SERVER_PORT variable, becomes the same line."""
  from colorgan import serve  # pylint: disable=g-import-not-at-top

  gradio_error = OSError(
    "Cannot find empty port in range: 7860-7860. You can specify a different "
    "port by setting the GRADIO_SERVER_PORT environment variable or passing "
    "the `server_port` parameter to `launch()`."
  )
  message = serve.address_message("127.0.0.1", 7860, gradio_error)
  assert message.startswith("--port=7860 is in use") and "GRADIO" not in message


def test_skipped_tests_say_why_without_rs(tmp_path):
  """conftest's summary hook: a skipped browser test's reason above pytest's last line, with -q."""
  (tmp_path / "test_skips.py").write_text(
    "import pytest\n\n\ndef test_needs_a_browser():\n"
    "  pytest.skip('/usr/bin/chromium is missing: apt-get install chromium')\n"
  )
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "pytest",
      "-q",
      "-p",
      "tests.conftest",
      "-p",
      "no:cacheprovider",
      str(tmp_path / "test_skips.py"),
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  lines = result.stdout.splitlines()
  assert result.returncode == 0, result.stdout
  assert lines[-2:-1] == [
    "1 skipped: /usr/bin/chromium is missing: apt-get install chromium (test_skips.py)"
  ], lines
  assert lines[-1].startswith("1 skipped")
