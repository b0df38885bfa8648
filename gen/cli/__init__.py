"""The `gen` command line.

    gen --help                  the subcommands, one line each
    gen data toy --n 1000 --size 64 --out DIR

Global conventions, defined here once: `--device` (auto: cuda, then mps, then cpu)
and `--seed` are accepted before or after the subcommand; bad input prints one line
`gen: error: ...` and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gen import __version__
from gen.cli import args as types
from gen.cli import cascade, data, eval, export, image, models, score, train, upscale, video
from gen.errors import user_error

# Each: (name, one-line help, module with add_arguments(parser) and run(args)).
COMMANDS = (
    ("image", "generate images from a prompt", image),
    ("video", "generate a video clip from a prompt", video),
    ("upscale", "upscale image files with a super-resolution stage", upscale),
    ("cascade", "chain a text-to-image pipeline and super-resolution stages into one model", cascade),
    ("export", "write a pipeline in diffusers' folder layout", export),
    ("train", "train a text-conditioned denoiser, an autoencoder or a super-resolution stage", train),
    ("score", "score folders of samples: FID, KID, IS, LPIPS, CLIPScore, FVD", score),
    ("eval", "evaluate a model: generate samples and score them", eval),
    ("data", "write a captioned dataset to disk (toy world: images or clips)", data),
    ("models", "list the model presets with parameters and GFLOPs", models),
)


class Parser(argparse.ArgumentParser):
    """argparse with gen's error convention: one line `gen: error: ...`, exit status 2."""

    def error(self, message: str):
        # "argument --n: must be ..." (our types) reads "--n must be ..."
        flag, sep, rest = message.partition(": must be ")
        if sep and flag.startswith("argument "):
            message = f"{flag.removeprefix('argument ').split('/')[0]} must be {rest}"
        self.exit(2, f"gen: error: {message} (see `{self.prog} --help`)\n")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On subcommands the defaults are suppressed so they do not overwrite a value
    # given before the subcommand.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--device", default=default if suppress else "auto",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    parser.add_argument("--seed", type=types.seed, default=default if suppress else 0,
                        help="random seed (default 0): same seed, same result")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gen",
        description="Diffusion image and video generation: generate, train, score.",
    )
    parser.add_argument("--version", action="version", version=f"gen {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name, help_text, module in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        _global_options(p, suppress=True)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


class _Stderr(logging.Handler):
    """The libraries' log records as `gen: ...` lines on stderr (the stream of the moment, so
    a redirected sys.stderr gets them): warnings as `gen: warning: ...`."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "warning: " if record.levelno == logging.WARNING else "error: " if record.levelno > logging.WARNING \
            else ""
        print(f"gen: {level}{record.getMessage()}", file=sys.stderr)


LIBRARIES = ("gen", "models", "samplers", "metrics")  # the packages whose loggers the command line shows


def _show_logs() -> None:
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _Stderr) for h in logger.handlers):
            logger.addHandler(_Stderr())
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    _show_logs()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit:  # --help and --version exit 0 as usual; a bad flag returns 2
        if exit.code == 2:
            return 2
        raise
    args.argv = list(sys.argv[1:] if argv is None else argv)  # which flags were given
    if args.command is None:
        parser.print_help()
        return 2
    from gen.runtime import keep_freed_memory

    keep_freed_memory()
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        print("gen: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from metrics.weights import WeightsFileError, WeightsHashError
        from samplers import SamplerError

        # The libraries' own bad-input errors: a sampler setting, a weights file given.
        known = user_error(err) or (err if isinstance(err, (SamplerError, WeightsFileError, WeightsHashError))
                                    else None)
        if known is None:
            raise  # a bug: keep the traceback
        print("gen: error: " + " ".join(str(known).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
