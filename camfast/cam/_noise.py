"""Noise drawn as torchcam 0.5.0 draws it, so that a seed reproduces torchcam's maps.

torchcam samples `torch.distributions.Normal(0, std)` of a tensor's shape: float32 values from
the CPU generator, moved to the device afterwards. `torch.randn(shape) * std` gives the same
values from the same generator state, and so do consecutive draws of pieces of that tensor when
every piece but the last holds a multiple of 16 values (the CPU kernel transforms uniforms 16
at a time, and redoes the last 16 of a draw whose size is not a multiple of 16).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_PIECE = 1 << 22  # values per draw when only advancing a generator (a multiple of 16)


def cpu_generator(generator: torch.Generator | None, name: str = "generator") -> torch.Generator | None:
    if generator is not None and (not isinstance(generator, torch.Generator) or generator.device.type != "cpu"):
        raise ValueError(f"{name} must be None or a CPU torch.Generator (the noise is drawn on the CPU, "
                         f"as torchcam draws it), got {generator!r}")
    return generator


def cpu_normal(shape, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, std^2) noise in float32 on the CPU, value for value torchcam's
    `Normal(0, std).sample(shape)` from the same generator state."""
    return torch.randn(shape, generator=generator) * std


class NoiseStream:
    """torchcam's SS-CAM noise served in chunks: sample m is one draw of [maps, H, W]
    (`cpu_normal`), drawn in that order for m = 0, 1, ...; `draw(m, count)` returns the next `count`
    maps of sample m, whatever order the samples are asked in. One pass over the generator at
    the start records where each sample's draw begins; the generator is left where torchcam
    leaves it. The values are torchcam's when count * H * W is a multiple of 16 for every chunk
    but the last of a sample (any chunk size when H * W is)."""

    def __init__(self, maps: int, size: Sequence[int], samples: int, std: float,
                 generator: torch.Generator | None):
        self.generator = generator if generator is not None else torch.default_generator
        self.size, self.std = tuple(size), std
        self.states = []
        for _ in range(samples):
            self.states.append(self.generator.get_state())
            remaining = maps * self.size[0] * self.size[1]
            while remaining:  # advance as one draw of `remaining` values would
                piece = remaining if remaining <= _PIECE + 16 else _PIECE
                torch.randn(piece, generator=self.generator)
                remaining -= piece
        self.end = self.generator.get_state()

    def draw(self, sample: int, count: int) -> torch.Tensor:
        """[count, 1, H, W] float32 on the CPU."""
        self.generator.set_state(self.states[sample])
        noise = cpu_normal((count, 1, *self.size), self.std, self.generator)
        self.states[sample] = self.generator.get_state()
        self.generator.set_state(self.end)
        return noise
