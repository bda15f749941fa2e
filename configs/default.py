"""The pix2pix / "Image Colorization with U-Net and GAN" recipe at 256 px.

U-Net-256 generator (54,409,858 params), 70x70 PatchGAN (2,765,633 params), vanilla GAN + 100 * L1,
Adam(2e-4, betas (0.5, 0.999)) for both networks, batch 16.

  python -m colorgan.main --config=configs/default.py --workdir=/tmp/colorgan
  python -m colorgan.main --config=configs/default.py:smoke --workdir=/tmp/smoke   # a laptop-sized run
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.image_size = 256
  config.batch_size = 16  # global, over all devices and hosts
  config.total_steps = 50_000  # the tutorial's 100 epochs of 8,000 COCO photos at batch 16
  config.compute_dtype = "float32"  # or "bfloat16" for activations; params stay float32

  config.log_every_steps = 100
  config.sample_every_steps = 1_000
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  # Besides the latest keep_checkpoints, keep the best checkpoint by this training metric (e.g.
  # "ab_l1_lab"), averaged over the log interval ending at each save, or by the model's metric in
  # the evaluation at each save ("eval/fid", "eval/psnr", ...); "" keeps only the latest.
  config.best_checkpoint_metric = ""
  config.best_checkpoint_mode = "min"  # min | max: which end of best_checkpoint_metric is best
  config.nan_policy = "stop"  # non-finite loss or gradient: stop (nothing saved) | skip the update
  # Resuming in a workdir whose checkpoint has other model / optimizer / loss / data values is
  # refused (one line lists the keys); True continues with the new values.
  config.allow_config_change = False
  config.num_samples = 8  # photos in the sample grid (taken from the eval split)
  config.eval_every_steps = 5_000  # evaluate model and gray baseline (and at the end); 0: never
  config.eval_batch_size = 16  # global batch of evaluation and of --mode=colorize
  config.num_eval_images = 0  # evaluate on the first this many eval photos; 0: all of them
  # FID, KID and LPIPS in evaluation (README "Metrics"): reference networks as .npz files written by
  # `python -m colorgan.convert_weights`; "" leaves that metric out.
  config.eval = ml_collections.ConfigDict()
  config.eval.inception_weights = ""  # pytorch-fid's FID Inception: adds fid and kid
  config.eval.lpips_weights = ""  # AlexNet + lpips v0.1 heads: adds lpips (vs the ground truth)
  config.eval.fid_reference = ""  # statistics .npz (colorgan.fid --save_stats, or pytorch-fid's)
  #                                     to compare with; "": the eval split's own ground truth
  # A hints model is also scored with each of these numbers of points drawn from the ground truth
  # (seeded: the same for every run), e.g. (0, 1, 2, 5, 10, 20, 50): "by_hints" in the eval JSON,
  # eval/hints_<n>/* in TensorBoard and a PSNR-by-hints plot in eval/.
  config.eval.hint_counts = ()

  # Recipes (README "Recipes").
  config.init_generator_from = (
    ""  # a workdir (e.g. of configs/pretrain_l1.py) whose generator starts
  )
  #                                  this run; D and the optimizers start fresh. "": from scratch
  config.d_warmup_steps = 0  # the first steps train D only, against the frozen generator (NoGAN)
  # Phases inside one run (colorgan/training/phases.py), as fractions of total_steps: first G alone
  # with the reconstruction loss (no D step), then D alone (G frozen; instead of d_warmup_steps),
  # then the GAN, its adversarial weight ramped linearly up over the first gan_ramp of the run.
  config.phases = ml_collections.ConfigDict()
  config.phases.reconstruction = 0.0
  config.phases.d_warmup = 0.0
  config.phases.gan_ramp = 0.0
  # Keep G at the end of the reconstruction phase: the run's vividness (README "Recipes") is then the
  # weight of ESRGAN's network interpolation between it (v=0) and the final GAN weights (v=1).
  config.phases.interpolate = False
  config.g_ema_decay = (
    0.0  # > 0: keep an EMA of G's weights, used for samples, evaluation, colorize
  )
  # > 0: at the end of training, re-estimate G's BatchNorm statistics on this many training batches
  # with its weights fixed ("precise BN"; WORKDIR/precise_bn.npz), for everything that shows G.
  config.precise_bn_batches = 0

  # The vividness knob (README "Recipes"): at the end of training, chosen on the first num_images
  # eval photos and written to WORKDIR/vividness.json, which --vividness (colorize, evaluate, export)
  # and the page's slider read. The default v: the largest on a grid of grid_points values in [0, 1]
  # whose mean PSNR is within psnr_tolerance dB of v=0's; or, with colorfulness_share > 0, the
  # smallest whose mean colourfulness reaches that share of the photos'.
  config.vividness = ml_collections.ConfigDict()
  config.vividness.calibrate = False
  config.vividness.grid_points = 21
  config.vividness.psnr_tolerance = 0.15
  config.vividness.num_images = 256
  config.vividness.min_temperature = 0.2  # a classification head's T at v=1 (v=0: T=1, the mean)
  config.vividness.colorfulness_share = 0.0

  # Devices along each axis of the ("data", "model") mesh; -1: all devices the other axis leaves.
  # Batches are split over "data" (batch_size must divide by its size) and the state is replicated;
  # "model" holds room for parameter sharding (today a size > 1 only repeats the computation).
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.model = 1

  config.model = ml_collections.ConfigDict()
  config.model.generator = "unet"  # colorgan.models.GENERATORS
  config.model.discriminator = "patchgan"  # colorgan.models.DISCRIMINATORS
  config.model.num_downs = 0  # U-Net depth; 0: log2(image_size) (unet_256 -> 8)
  config.model.g_base_features = 64  # pix2pix ngf
  # regression (pix2pix: tanh(ab)) | classification (Zhang et al. 2016: logits over 261 ab bins,
  # decoded as the annealed mean; the unet only). With it, loss.classification_weight weighs the
  # rebalanced cross-entropy and loss.reconstruction (use l2) the T=1 decode.
  config.model.ab_head = "regression"
  config.model.dropout_rate = 0.5
  config.model.d_base_features = 64  # pix2pix ndf
  config.model.d_layers = 3  # PatchGAN n_layers: 70x70 receptive field
  config.model.d_spectral_norm = False  # D's convs spectrally normalized, no BatchNorm (SN-GAN)
  # U-Net and PatchGAN convolutions as matrix products (models/layers.py): same parameters and
  # outputs as flax's nn.Conv/nn.ConvTranspose (False: those, the reference), several times faster
  # on XLA:CPU. "auto": True on CPU, False on GPU and TPU (their own convolutions need no im2col
  # copies). Checkpoints move freely between the two (a free key when resuming). Typed `object` so
  # that it takes "auto", True or False (also --config.model.fast_layers=False).
  config.model.fast_layers = config_dict.FieldReference("auto", field_type=object)
  config.model.resnet_depth = 18  # resnet_unet: ResNet-18 or -34 encoder
  config.model.ab_bound = 1.0  # resnet_unet: ab = ab_bound * tanh(.), in (0, 1]
  config.model.init_from = ""  # resnet_unet: encoder weights from a .npz or an orbax
  #                                          checkpoint (a directory); "": trained from scratch

  # User color hints (Zhang et al. 2017; README "Color hints"). enabled: the generator sees L and a
  # hint map (ab where a color is given, 0 elsewhere, and a mask), and training simulates hints from
  # each photo's own colors inside the jitted step. It changes the networks and the training.
  config.hints = ml_collections.ConfigDict()
  config.hints.enabled = False
  config.hints.p = 1 / 8  # points on a hinted image ~ geometric(p) on 1, 2, ...: mean 1/p
  config.hints.no_hint_share = 1 / 8  # share of images with no hint (the automatic colorizer); with
  #                                     p = 1/8 the paper's draw: n points with probability p(1-p)^n
  config.hints.max_points = 64  # the geometric draw's cap (P(> 64) is 0.02% at p = 1/8)
  config.hints.min_patch_size = 1  # each point is a square of side uniform in [min, max] pixels
  config.hints.max_patch_size = 9  # whose color is the photo's mean ab under it (paper: 1 to 9)
  config.hints.center_sigma = 0.25  # locations ~ 2-D Gaussian at the center, sigma = this * side,
  #                                     truncated to the image (paper: 1/4); 0: uniform

  config.loss = ml_collections.ConfigDict()
  config.loss.gan = "vanilla"  # colorgan.training.losses.GAN_LOSSES; none: no D step (L1 only)
  config.loss.gan_weight = 1.0
  config.loss.reconstruction = "l1"  # colorgan.training.losses.RECONSTRUCTION_LOSSES
  config.loss.l1_weight = 100.0  # lambda of the reconstruction term, whichever it is
  config.loss.huber_delta = 0.1  # in model ab units (x110 for Lab units)
  config.loss.penalty = "auto"  # none | gp | r1; auto: the objective's own (gp for wgan_gp)
  config.loss.penalty_weight = 10.0  # lambda of the gradient penalty / gamma of R1
  # Colourfulness of the result against the photo's (README "Recipes"), on RGB in [0, 1] from the
  # differentiable Lab conversion: none | match (two-sided, |CF - CF_true| beyond the margin) | hinge
  # (one-sided: only duller than the photo) | ddcolor (DDColor's 0.5 * sum(1 - CF): a control).
  config.loss.colorfulness = "none"
  config.loss.colorfulness_weight = 1.0
  config.loss.colorfulness_margin = 0.0  # in CF units on [0, 1] RGB (the photos' CF ~ 0.1-0.3)
  # > 0: pix2pixHD's discriminator feature matching, this weight (pix2pixHD: 10) times the mean L1
  # between D's intermediate features on the photo and on the result. Needs an adversarial loss.
  config.loss.feature_matching_weight = 0.0
  # config.model.ab_head="classification": the rebalanced cross-entropy's weight, and lambda of the
  # rebalancing (Zhang et al.: 0.5; 1 weighs every bin alike, 0 by the inverse prior alone), its
  # prior measured on class_prior_batches training batches at the start of the run.
  config.loss.classification_weight = 1.0
  config.loss.rebalance = 0.5
  config.loss.class_prior_batches = 32

  config.optim = ml_collections.ConfigDict()
  config.optim.g_learning_rate = 2e-4
  config.optim.d_learning_rate = 2e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.g_schedule = "constant"  # constant | linear_decay | cosine (colorgan/schedules.py)
  config.optim.d_schedule = "constant"
  config.optim.warmup_steps = 0  # linear learning-rate warm-up of both networks
  config.optim.decay_steps = 0  # linear_decay: the last decay_steps; 0: half the run
  config.optim.d_steps = 1  # D updates per G update (on the same batch)
  config.optim.clip_grad_norm = 0.0  # > 0: clip each network's gradient to this global norm

  config.data = ml_collections.ConfigDict()
  config.data.source = "bundled"  # bundled (photos inside scikit-image/-learn) | folder | tfds
  # folder: a directory of images read recursively (.jpg .jpeg .png .webp .bmp .tif .tiff, any case).
  # Its train/ and val/ subfolders are the split when both exist; otherwise a seeded hash of each
  # file's relative path holds out eval_fraction of the files (stable as files come and go).
  config.data.path = ""
  config.data.eval_fraction = 0.05
  config.data.split_seed = 0  # seeds that hash: the eval files do not change with config.seed
  # tfds: any TFDS image dataset, e.g. coco/2017, imagenette/320px-v2, places365_small, imagenet2012.
  config.data.tfds_name = ""
  config.data.tfds_data_dir = ""  # "": TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
  config.data.tfds_download = False  # True: download and prepare it when it is not there yet
  config.data.train_split = "train"  # TFDS split syntax: "train[:8000]", "train[:90%]+validation"
  config.data.eval_split = "validation"
  config.data.image_key = "image"  # the image feature of the TFDS examples
  config.data.shuffle_window = 1024  # tfds: examples shuffled together (files: a full permutation)
  config.data.cache = False  # keep the encoded images in memory after their first read
  config.data.load_size = 286  # short side resized to this, then cropped to image_size (pix2pix)
  config.data.resize_mode = "crop"  # crop: resize short side + crop; resize: squash to a square
  config.data.random_flip = True
  config.data.num_parallel_calls = -1  # images decoded in parallel; -1: tf.data AUTOTUNE
  config.data.prefetch = 2  # batches prepared ahead of the training step

  if arg == "smoke":  # seconds on a laptop CPU: tiny images, tiny nets
    config.image_size = 32
    config.batch_size = 4
    config.total_steps = 10
    config.model.g_base_features = 8
    config.model.d_base_features = 8
    config.data.load_size = 36
    config.log_every_steps = config.sample_every_steps = config.checkpoint_every_steps = 5
    config.eval_every_steps = 5
    config.eval_batch_size = 4
  elif arg:
    raise ValueError(f"configs/default.py takes no argument or 'smoke', got {arg!r}")
  return config
