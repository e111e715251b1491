"""Model SFT (the paper's §3 "SFT", §3.2, §4.1.3): one recipe, stages as data.

    from mathforge.train import TrainConfig, StageConfig
    from mathforge.train.sft import train        # imports torch/transformers
    train(load_config(TrainConfig, "recipes/train_offline.yaml"), "runs/train")

Modules: `config` (frozen dataclasses), `data` (prompt/response tokenisation and masking),
`packing` (packed rows without cross-sample attention), `students` (tiny and SmolLM2 students),
`sft` (the training flow).
"""

from mathforge.train.config import LoraConfig, StageConfig, StudentConfig, TrainConfig

__all__ = ["LoraConfig", "StageConfig", "StudentConfig", "TrainConfig"]
