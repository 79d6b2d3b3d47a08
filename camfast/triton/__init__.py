"""Triton kernels, each wrapped as a torch.library custom op camfast::<stem>_triton.

camfast loads them at import when Triton can run: on CUDA, or on CPU under TRITON_INTERPRET=1
(which must be set before camfast is imported).
"""

import importlib

STEMS = (
    "adl",
    "attention_branch_mix",
    "channel_spatial_attention",
    "score_cam_masks",
    "spatial_softmax2d",
    "thresholded_avg_pool2d",
    "weighted_channel_sum",
)


def load_all() -> None:
    for stem in STEMS:
        importlib.import_module(f"{__name__}.{stem}")
