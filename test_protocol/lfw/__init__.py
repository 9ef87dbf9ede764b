"""Occluded / cropped test-set builders (``crop_lfw_random``, ``crop_calfw_random``, ``crop_cplfw_random``); the one
implementation is ``occluded_set_builder``."""
