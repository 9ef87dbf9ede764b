"""Datasets, image I/O, landmarks, preprocessing, occlusion synthesis and the embedded synthetic faces."""
from utils.registry import Registry

DATASETS = Registry("dataset")
