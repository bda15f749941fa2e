"""The recipe study of README "Recipes": every recipe at equal compute, several seeds, scored on val/.

  python benchmarks/recipe_study.py --data=../shared/data/bsds500 --out=/tmp/recipe_study \
      --recipes=l1,l2,gan,l2_cf --seeds=0,1,2            # trains what is missing, then scores
  python benchmarks/recipe_study.py ... --stage=train    # only train (runs already there are kept)
  python benchmarks/recipe_study.py ... --stage=report   # only score and tabulate

Each run is `python -m colorgan.main --config=configs/quickstart.py` on DATA's train/ (64 px, batch
16, 600 generator updates, pretraining phases included) with the recipe's overrides, in
OUT/<recipe>/seed<N>; a run whose final checkpoint is there is not trained again. Scoring restores
each run's generator and colorizes DATA's val/ (center crops) at every vividness of --vividness
(colorgan.inference.vividness): per-image PSNR, SSIM, colourfulness, AuC and ab error, the gray
baseline and the photos' own colourfulness. The report gives, per recipe, the mean over seeds with a
95% interval (t over seeds), the paired per-image PSNR difference to the same seed's L2 run with a
bootstrap 95% interval, and the two front figures of the issue: the colourfulness reached at
PSNR >= the L1 recipe's - 0.15 dB, and the PSNR at colourfulness >= 0.74 of the photos'. Writes
OUT/study.json and OUT/front.png; the last line printed is the JSON summary.
"""

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

STEPS = 600
BASE = (
  "--config=configs/quickstart.py",
  "--config.batch_size=16",
  "--config.image_size=64",
  "--config.data.source=folder",
  "--config.data.load_size=72",
  f"--config.total_steps={STEPS}",
  "--config.eval_every_steps=0",
  f"--config.sample_every_steps={STEPS}",
  f"--config.checkpoint_every_steps={STEPS}",
  "--config.log_every_steps=100",
)
# name -> the overrides on BASE. Each knob was chosen on val/ (README "Recipes").
RECIPES = {
  "gan": (),  # today's default: vanilla GAN + 100 L1, Adam(2e-4, 0.5, 0.999)
  "l1": ("--config.loss.gan=none",),
  "l2": ("--config.loss.gan=none", "--config.loss.reconstruction=l2"),
  "huber": ("--config.loss.gan=none", "--config.loss.reconstruction=huber"),
  "l2_tuned": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=l2",
    "--config.optim.b1=0.9",
    "--config.optim.g_schedule=linear_decay",
  ),
  # l2_tuned at a higher learning rate (5e-4, decaying linearly over the second half).
  "l2_tuned_lr": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=l2",
    "--config.optim.b1=0.9",
    "--config.optim.g_schedule=linear_decay",
    "--config.optim.g_learning_rate=5e-4",
  ),
  # L2 + the two-sided colourfulness match (loss.colorfulness), at the weight chosen on val/ among
  # 10 and 30 (the pilots l2_cf10, l2_cf30).
  "l2_cf10": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=l2",
    "--config.loss.colorfulness=match",
    "--config.loss.colorfulness_weight=10",
  ),
  "l2_cf30": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=l2",
    "--config.loss.colorfulness=match",
    "--config.loss.colorfulness_weight=30",
  ),
  # Zhang et al.'s classification head (261 ab bins, rebalanced cross-entropy) with an L2 term on its
  # T = 1 decode (lambda 100, as the L2 recipe), no GAN; vividness is the annealed mean's T.
  "classification": (
    "--config.loss.gan=none",
    "--config.model.ab_head=classification",
    "--config.loss.reconstruction=l2",
  ),
  # L2 with an EMA of G's weights (0.995, warmed up): what the samples, evaluation and colorize use.
  "l2_ema": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=l2",
    "--config.g_ema_decay=0.995",
  ),
  # l2_tuned + a light colourfulness match (weight 3).
  "l2_tuned_cf3": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=l2",
    "--config.optim.b1=0.9",
    "--config.optim.g_schedule=linear_decay",
    "--config.loss.colorfulness=match",
    "--config.loss.colorfulness_weight=3",
  ),
  # configs/recommended.py: Huber, precise BatchNorm statistics (32 batches) and the default vividness
  # at 0.74 of the photos' colourfulness.
  "recommended": (
    "--config.loss.gan=none",
    "--config.loss.reconstruction=huber",
    "--config.precise_bn_batches=32",
    "--config.vividness.colorfulness_share=0.74",
  ),
  # L2 pretraining, then a short GAN in the same run (config.phases), weights interpolated between
  # the two (the vividness): hinge loss, a small receptive field D (d_layers 2: 34 px) with spectral
  # norm, R1 with StyleGAN2-ADA's gamma = 0.0002 * 64**2 / 16, TTUR (D 4e-4, G 1e-4), feature
  # matching 10. 632 steps: 32 of them D warm-up, so G gets 600 updates, as every recipe.
  "l2_gan_interp": (
    "--config.total_steps=632",
    "--config.checkpoint_every_steps=632",
    "--config.sample_every_steps=632",
    "--config.loss.reconstruction=l2",
    "--config.loss.gan=hinge",
    "--config.loss.penalty=r1",
    "--config.loss.penalty_weight=0.0512",
    "--config.model.d_layers=2",
    "--config.model.d_spectral_norm=True",
    "--config.loss.feature_matching_weight=10",
    "--config.optim.g_learning_rate=1e-4",
    "--config.optim.d_learning_rate=4e-4",
    "--config.phases.reconstruction=0.6",
    "--config.phases.d_warmup=0.05",
    "--config.phases.gan_ramp=0.1",
    "--config.phases.interpolate=True",
  ),
}

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "A folder with train/ and val/ photo folders.")
flags.DEFINE_string("out", "/tmp/recipe_study", "Where the runs and the report go.")
flags.DEFINE_list("recipes", list(RECIPES), f"Recipes among {', '.join(RECIPES)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "config.seed of each run of a recipe.")
flags.DEFINE_enum("stage", "all", ["all", "train", "report"], "What to do.")
flags.DEFINE_list(
  "vividness", ["0", "0.25", "0.5", "0.75", "1"], "Vividness values each run is scored at."
)


def run_dir(recipe: str, seed: str) -> str:
  return os.path.join(FLAGS.out, recipe, f"seed{seed}")


def trained(workdir: str) -> bool:
  """A run is done when its config's last checkpoint is there."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return False
  with open(path) as f:
    total = json.load(f)["total_steps"]
  return os.path.isdir(os.path.join(workdir, "checkpoints", str(total)))


def train(recipe: str, seed: str) -> None:
  workdir = run_dir(recipe, seed)
  if trained(workdir):
    return
  command = [
    sys.executable,
    "-m",
    "colorgan.main",
    f"--workdir={workdir}",
    *BASE,
    f"--config.data.path={os.path.abspath(FLAGS.data)}",
    f"--config.seed={seed}",
    *RECIPES[recipe],
  ]
  print(f"training {recipe} seed {seed} in {workdir}", flush=True)
  start = time.time()
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "study_train.log"), "w") as log:
    result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=False)
  if result.returncode:
    sys.exit(f"recipe_study.py: error: {recipe} seed {seed} failed: see {workdir}/study_train.log")
  print(f"  done in {time.time() - start:.0f} s", flush=True)


def main(argv):
  del argv
  if not FLAGS.data:
    sys.exit("recipe_study.py: error: --data is required")
  unknown = [r for r in FLAGS.recipes if r not in RECIPES]
  if unknown:
    sys.exit(f"recipe_study.py: error: unknown recipes {unknown}; known: {', '.join(RECIPES)}")
  if FLAGS.stage in ("all", "train"):
    for seed in FLAGS.seeds:  # seed-major: a partial study still has every recipe's first seed
      for recipe in FLAGS.recipes:
        train(recipe, seed)
  if FLAGS.stage in ("all", "report"):
    import recipe_report  # pylint: disable=g-import-not-at-top  (JAX only for scoring)

    summary = recipe_report.report(FLAGS, run_dir, trained)
    print(json.dumps(summary))


if __name__ == "__main__":
  app.run(main)
