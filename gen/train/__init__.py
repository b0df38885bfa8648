"""Training: `gen train image|video` and `gen.train.train(TrainConfig(...))`."""

from gen.train.config import TrainConfig, read_config_file
from gen.train.loop import train

__all__ = ["TrainConfig", "read_config_file", "train"]
