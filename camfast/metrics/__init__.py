"""Faithfulness metrics for explanation maps, computed in batches on the inputs' device.

average_drop_increase   Average Drop and Increase in Confidence (Grad-CAM++)
deletion_insertion      Deletion and Insertion curves and areas (RISE; presets "rise", "torchcam")
road                    ROAD with noisy linear imputation (grad-cam's conventions)

Each takes (model, x, cams, targets=None) with cams [N, h, w] at any resolution (resized to x
bilinearly) and returns per-image tensors. AverageDropIncrease, DeletionInsertion and ROAD
accumulate them over a dataset and, with torchmetrics installed, sync across processes.
"""

from .average_drop import average_drop_increase
from .deletion_insertion import DeletionInsertionResult, deletion_insertion, rise_blur
from .imputation import impute
from .road import ROADResult, road
from .stateful import ROAD, AverageDropIncrease, DeletionInsertion

__all__ = ["ROAD", "AverageDropIncrease", "DeletionInsertion", "DeletionInsertionResult", "ROADResult", "average_drop_increase", "deletion_insertion", "impute",
           "rise_blur", "road"]
