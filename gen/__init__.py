"""gen: diffusion image and video generation, training and scoring.

The application package: the CLI, datasets (the toy world among them), pipelines,
training and checkpoints. The networks live in `models`, the diffusion maths in
`samplers` and the scores in `metrics`.
"""

__version__ = "0.1.0"
