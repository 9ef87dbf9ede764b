"""Face SDK: detect (RetinaFace, 5 landmarks) → align (5-point similarity) → embed (any registered backbone).

Modules: ``detector`` (``FaceDetector``), ``aligner`` (``align_face``), ``recognizer`` (``Recognizer``,
``load_recognizer``), ``released`` (released third-party weights and their input contracts), ``model_meta``
(``model_meta.json`` schema), ``pipeline`` (whole-image pipeline), ``cli`` (``python -m face_sdk.cli``),
``restricted_pickle`` (weights from pickled modules without running their code). Nothing is imported here, so
importing one module never loads the others.
"""
