"""MegaFace / MegaFace-Mask identification at 1M-distractor scale (``megaface``: ``MegaFaceProtocol``), the on-disk
float16 feature store with chunked top-k search it runs on (``feature_store``), and two commands:
``python -m test_protocol.megaface.extract_distractors`` (distractors → store) and
``python -m test_protocol.megaface.build_masked`` (occluded probe copy). Importing the package registers
``MegaFaceProtocol`` in ``test_protocol.PROTOCOLS``."""
from test_protocol.megaface import megaface  # noqa: F401  (registers MegaFaceProtocol)
