"""Named bundles of settings: the paper's recipe and the CPU recipe that converges.

Each :class:`Preset` holds a :class:`~napari_numsnet.config.TrainConfig`, a
:class:`~napari_numsnet.config.PreprocessConfig` and the model's width scale; the
measurements behind the ``fast`` preset are in ``benchmarks/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_numsnet.config import PreprocessConfig, TrainConfig
from napari_numsnet.errors import NumsnetError

#: The semi-supervised term as measured (``benchmarks/README.md``): UniMatch's strong view
#: with its confidence threshold, weight 1, once 30 slices are annotated.
SEMI_SUPERVISED: dict[str, Any] = {
    "semi_supervised": 1.0,
    "strong_view": "unimatch",
    "confidence": 0.95,
    "semi_supervised_min_slices": 30,
}


@dataclass(frozen=True)
class Preset:
    """A named bundle of training, preprocessing and model-size settings.

    ``width_scale`` multiplies the paper's widths of the chosen model (1 = the paper's
    network; 0.5 has about a quarter of its parameters and trains ~10x faster on CPU).
    ``context`` is the 2.5D input of the slice models (neighbouring slices on each side
    as channels, :attr:`ModelConfig.context`); the other models ignore it.
    """

    name: str
    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    width_scale: float = 1.0
    context: int = 0


PRESETS: dict[str, Preset] = {
    # The NUMSnet paper, for fidelity: 256 x 256 slices, Adam at a constant 1e-3, batch 5,
    # 60 epochs, BCE/2 + Dice, the last weights.
    "paper": Preset(
        name="paper",
        train=TrainConfig(
            epochs=60, batch_size=5, learning_rate=1e-3, keep_best=False, preset="paper"
        ),
        preprocess=PreprocessConfig(size=256),
    ),
    # The default on a CPU (benchmarks/README.md, section 0): half widths, 128 x 128
    # slices, a step budget that grows with the annotation (150 steps a slice, 400 to
    # 6,000: about half a minute for the CT sample's 3 slices on two cores, about 14
    # minutes for ACDC's 148), warm-up and cosine decay, Dice + cross-entropy, the best
    # validated weights, rotations to 0.5 rad and scaling by 0.7-1.4, bfloat16 where the
    # CPU computes it, and from 30 annotated slices on the semi-supervised term (UniMatch's
    # strong view); the NUMSnet family trains on runs of 4 consecutive slices in either
    # order, each run under one transform of the paper's narrower affine, and predicts
    # with both directions averaged.
    "fast": Preset(
        name="fast",
        train=TrainConfig(
            steps=6000,
            steps_per_slice=150,
            min_steps=400,
            batch_size=2,
            run_length=4,  # NUMSnet: +0.031 Dice over runs of 2 on the CT sample, 3 of 3 seeds
            reverse_runs=True,  # NUMSnet: better in 5 of 6 seeds on the CT sample (README)
            learning_rate=1e-3,
            schedule="cosine",
            warmup_steps=20,
            loss="dice_ce",
            rotation=0.5,
            zoom=(0.7, 1.4),
            run_rotation=0.2,  # NUMSnet: the paper's affine for a run, 0.850 ± 0.026 against
            run_zoom=(0.8, 1.0),  # 0.831 ± 0.062 on the CT sample over 6 seeds (README)
            cpu_bf16=True,
            amp=False,
            preset="fast",
            **SEMI_SUPERVISED,
        ),
        preprocess=PreprocessConfig(size=128),
        width_scale=0.5,
    ),
}


def default_preset(device_type: str) -> str:
    """The preset a run takes unless told: ``paper`` on a GPU, ``fast`` elsewhere."""
    return "paper" if device_type == "cuda" else "fast"


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``; an unknown name lists the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise NumsnetError(
            f"Unknown preset {name!r}.", f"Choose one of: {', '.join(sorted(PRESETS))}."
        ) from None
