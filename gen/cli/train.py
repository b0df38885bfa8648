"""`gen train`: train a text-conditioned denoiser, an autoencoder or a super-resolution stage."""

from __future__ import annotations

import argparse

from gen.cli import args as types

# flag -> (TrainConfig field, type, help). Flags left out keep the config file's value,
# then TrainConfig's default.
FLAGS = {
    "--data": ("data", str, "dataset name, folder, datasets save_to_disk folder or cached hub id (default toy)"),
    "--split": ("data_split", str, "the split of a dataset with splits (train/, test/ folders; default train)"),
    "--caption-column": ("caption_column", str, "the metadata column holding the captions (default text)"),
    "--model": ("model", str, "model preset (see `gen models`; default dit-tiny, sr: sr-unet-s)"),
    "--out": ("out", str, "run folder to create (checkpoints, samples, log, pipeline)"),
    "--steps": ("steps", int, "optimiser steps in total (default 1000)"),
    "--batch": ("batch", int, "global batch size (default 64)"),
    "--accumulate": ("accumulate", int, "gradient accumulation: the batch in this many micro-batches (default 1)"),
    "--lr": ("lr", float, "peak learning rate (default 1e-3)"),
    "--warmup": ("warmup", int, "linear warm-up steps (default 100)"),
    "--lr-schedule": ("lr_schedule", str, "constant or cosine after warm-up"),
    "--size": ("size", int, "image side in pixels (default 32)"),
    "--n": ("data_n", int, "toy data: number of distinct samples"),
    "--frames": ("frames", int, "video: frames per clip"),
    "--fps": ("fps", float, "video: frames per second"),
    "--ema-decay": ("ema_decay", float, "EMA decay (default 0.999)"),
    "--cond-drop": ("cond_drop", float, "probability of dropping the text, for CFG (default 0.1)"),
    "--weighting": ("loss_weighting", str, "loss weighting: min_snr (default) or uniform"),
    "--workers": ("workers", int, "data loader worker processes (default 0)"),
    "--max-minutes": ("max_minutes", float, "stop (checkpoint and export) after this many minutes"),
    "--image-ratio": ("image_ratio", float, "video: share of steps on images as one-frame clips (joint training)"),
    "--image-data": ("image_data", str, "video with --image-ratio: the image dataset (default toy)"),
    "--vae": ("vae", str, "image/video: train in this VAE's latent space (folder or shipped name)"),
    "--kl-weight": ("kl_weight", float, "vae: weight of the KL term (default 1e-6)"),
    "--recon-loss": ("recon_loss", str, "vae: l1 (default) or l2"),
    "--init": ("init", str, "vae: start from this VAE's weights; video: from this image (or video) pipeline; "
                            "image: the pipeline to fine-tune (every weight; with --lora-rank adapters only)"),
    "--text-encoder-from": ("text_encoder_from", str, "image/video: train a new denoiser on this pipeline's "
                                                      "text encoder (frozen), e.g. default"),
    "--lora-rank": ("lora_rank", int, "image with --init: train LoRA adapters of this rank only (peft)"),
    "--lora-alpha": ("lora_alpha", float, "the LoRA adapters' alpha: scale alpha / rank (default: the rank)"),
    "--frame-masks": ("frame_masks", types.names,
                      "video: train a masked-frame model (known frames and a mask as inputs) on these kinds of "
                      "known frames, comma-separated: animate, interpolate, extend, none"),
    "--known-noise": ("known_noise", float, "video with --frame-masks: noise std (up to) on known frames in "
                                            "training, against conditional image leakage (default 0)"),
    "--scale": ("scale", int, "sr: output side / input side (default 4)"),
    "--crop": ("crop", int, "sr: train on random crops of this many pixels a side (default: whole images)"),
    "--sr-noise": ("sr_noise", float, "sr: the stage's default augmentation level of its input, 0-1 (default 0.2)"),
    "--sr-aug-max": ("sr_aug_max", float, "sr: training augmentation levels are drawn from [0, this] (default 1)"),
    "--log-every": ("log_every", int, "steps between log lines"),
    "--sample-every": ("sample_every", int, "steps between sample grids (0: never)"),
    "--ckpt-every": ("ckpt_every", int, "steps between checkpoints"),
    "--snapshot-every": ("snapshot_every", int, "steps between EMA pipelines kept in RUN/snapshots/step-N "
                                                "(points of a learning curve; 0: none)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("image", "video", "vae", "sr"), help="what to train")
    parser.add_argument("--config", help="YAML / TOML / JSON file of options; flags override it")
    for flag, (_, kind, help_text) in FLAGS.items():
        parser.add_argument(flag, type=kind, default=None, help=help_text)
    parser.add_argument("--prediction", choices=("eps", "v", "x0"), default=None,
                        help="what the denoiser predicts (default v, on a cosine schedule)")
    parser.add_argument("--factor", type=types.integer(1, 64), default=None,
                        help="vae: pixels per latent along a side (4 or 8)")
    parser.add_argument("--latent-channels", type=types.integer(1, 64), default=None,
                        help="vae: latent channels (default 4)")
    parser.add_argument("--cache-latents", action="store_true", help="with --vae: encode each image once")
    parser.add_argument("--video", action="store_true", help="vae: a causal video VAE trained on clips")
    parser.add_argument("--freeze-spatial", action="store_true",
                        help="video with --init: train only the temporal layers (the image model stays as it is)")
    parser.add_argument("--dense-interpolate", action="store_true",
                        help="video with --frame-masks: interpolate-mask clips at twice --fps (temporal SR's rate)")
    parser.add_argument("--regression", action="store_true",
                        help="sr: SR3's baseline, a U-Net predicting the image in one pass (MSE), no diffusion")
    parser.add_argument("--no-bf16", action="store_true", help="train in float32 (default: bf16 autocast)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the denoiser (inductor; caches kept in RUN/compile-cache)")
    parser.add_argument("--threads", type=types.integer(1, 1024), default=None,
                        help="torch threads (default: one per core; more than the cores only slows training)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--download", action="store_true",
                        help="--data OWNER/NAME: fetch a hub dataset that is not in the local cache (network)")


def run(args: argparse.Namespace) -> int:
    from gen.train import TrainConfig, read_config_file, train

    values = read_config_file(args.config) if args.config else {}
    values["kind"] = args.kind
    for flag, (name, _, _) in FLAGS.items():
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None:
            values[name] = given
    if args.no_bf16:
        values["bf16"] = False
    if args.cache_latents:
        values["cache_latents"] = True
    if args.video:
        values["vae_video"] = True
    if args.freeze_spatial:
        values["freeze_spatial"] = True
    if args.dense_interpolate:
        values["dense_interpolate"] = True
    if args.compile:
        values["compile"] = True
    if args.download:
        values["download"] = True
    if args.regression:
        values["sr_regression"] = True
    if args.threads is not None:
        values["threads"] = args.threads
    factor_key = "spatial_factor" if args.video else "factor"
    for flag, key in (("factor", factor_key), ("latent_channels", "latent_channels")):
        if getattr(args, flag) is not None:
            values["vae_config"] = {**values.get("vae_config", {}), key: getattr(args, flag)}
    if args.prediction:
        from gen.train.config import TrainConfig as _Defaults

        values["schedule"] = {**values.get("schedule", _Defaults().schedule), "prediction": args.prediction}
    seed_given = any(a == "--seed" or a.startswith("--seed=") for a in getattr(args, "argv", ()))
    if seed_given or ("seed" not in values and not args.resume):
        values["seed"] = args.seed  # a --seed flag beats the config file's
    if not values.get("out"):
        from gen.errors import GenError

        raise GenError("--out is required: the run folder to create")
    cfg = TrainConfig.from_dict(values)
    # On --resume the options given here are checked against the run's (resume_config).
    pipeline = train(cfg, resume=args.resume, device=args.device, given=values)
    print(pipeline)
    return 0
