"""Reference weights as .npz: converted once from PyTorch files, the only format read at run time.

  python -m colorgan.convert_weights inception pt_inception-2015-12-05-6726825d.pth inception.npz
  python -m colorgan.convert_weights lpips alexnet-owt-7be5be79.pth alex.pth lpips_alex.npz

`inception`: pytorch-fid's FID Inception weights (colorgan.evaluation.inception). `lpips`:
torchvision's AlexNet weights and the `lpips` package's `weights/v0.1/alex.pth` linear heads
(colorgan.evaluation.lpips). Conversion alone needs PyTorch (`pip install 'colorgan[convert]'`); the
.pth files are read as plain tensors (`torch.load(weights_only=True)`: no pickled code runs).
Nothing is downloaded: the .pth files are ones you already have. A missing torch, or a file that is
not what it claims, is one line (exit 2).

A .npz holds one float32 array per leaf, named "<collection>/<module>/.../<leaf>"
("params/Mixed_5b/branch1x1/kernel", "batch_stats/..."); `fileio.read_variables` checks it against
the network it is for.
"""

import sys

import numpy as np

from colorgan import cli
from colorgan import errors
from colorgan import fileio


def _load_torch(path: str, what: str) -> dict[str, np.ndarray]:
  """A PyTorch state_dict file as numpy arrays (tensors only: no pickled code is run)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.WeightsError(
      "converting .pth weights needs PyTorch: pip install 'colorgan[convert]' (or torch)"
    ) from None
  try:
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError:
    raise errors.WeightsError(f"{path}: no such file") from None
  except Exception as e:  # pylint: disable=broad-except  (pickle, zip and torch errors)
    raise errors.WeightsError(
      f"{path} is not a PyTorch weights file ({what}): "
      f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
    ) from None
  if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
    loaded = loaded["state_dict"]  # a checkpoint wrapping its state_dict
  if not isinstance(loaded, dict) or not all(torch.is_tensor(v) for v in loaded.values()):
    raise errors.WeightsError(f"{path} is not a state_dict of tensors ({what})")
  return {key: value.detach().cpu().numpy() for key, value in loaded.items()}


def _checked(
  arrays: dict[str, np.ndarray], expected: dict, source: str, what: str
) -> dict[str, np.ndarray]:
  """The converted arrays the network has (others are dropped); WeightsError for one it lacks."""
  fileio.check_tree(arrays, expected, what=f"{source} is not {what}", allow_extra=True)
  return {key: arrays[key] for key in fileio.flatten(expected)}


def convert_inception(pth: str, out: str) -> int:
  """pytorch-fid's pt_inception-2015-12-05-6726825d.pth -> out (.npz). Returns the array count."""
  from colorgan.evaluation import inception  # pylint: disable=g-import-not-at-top

  arrays = _checked(
    inception.from_torch(_load_torch(pth, "pytorch-fid's FID Inception")),
    inception.abstract_variables(),
    pth,
    "pytorch-fid's FID Inception weights",
  )
  _write(out, arrays)
  return len(arrays)


def convert_lpips(alexnet_pth: str, lin_pth: str, out: str) -> int:
  """torchvision's AlexNet weights + lpips's weights/v0.1/alex.pth -> out (.npz)."""
  from colorgan.evaluation import lpips  # pylint: disable=g-import-not-at-top

  expected = lpips.abstract_variables()
  trunk = lpips.alexnet_from_torch(_load_torch(alexnet_pth, "torchvision AlexNet"))
  heads = lpips.heads_from_torch(_load_torch(lin_pth, "lpips v0.1 alex.pth"))
  flat = fileio.flatten(expected)
  arrays = _checked(
    trunk,
    {k: v for k, v in flat.items() if "/lin" not in k},
    alexnet_pth,
    "torchvision's AlexNet weights",
  )
  arrays.update(
    _checked(
      heads,
      {k: v for k, v in flat.items() if "/lin" in k},
      lin_pth,
      "lpips's v0.1 AlexNet linear layers (weights/v0.1/alex.pth)",
    )
  )
  _write(out, arrays)
  return len(arrays)


def _write(out: str, arrays: dict[str, np.ndarray]) -> None:
  with fileio.atomic_path(out) as tmp, open(tmp, "wb") as f:
    np.savez(f, **arrays)


USAGE = (
  "usage: python -m colorgan.convert_weights inception IN.pth OUT.npz | "
  "lpips ALEXNET.pth LIN.pth OUT.npz"
)


@cli.exit_on_error
def main(argv: list[str]) -> None:
  args = argv[1:]
  if not (len(args) == 3 and args[0] == "inception" or len(args) == 4 and args[0] == "lpips"):
    print(USAGE, file=sys.stderr)
    sys.exit(2)
  if args[0] == "inception":
    count = convert_inception(*args[1:])
  else:
    count = convert_lpips(*args[1:])
  print(f"wrote {args[-1]} ({count} arrays)")


if __name__ == "__main__":
  main(sys.argv)
