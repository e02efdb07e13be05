"""Toy "shapes" text-to-image models: small enough to train without the hub, with results a lesson can check.

- :mod:`~nbhelpers.toy.shapes`: the data set (one coloured shape on a plain background, with its caption).
- :mod:`~nbhelpers.toy.evaluate`: read colour, shape and background back from a picture; accuracy; how much of
  a word's attention falls on the shape.
- :mod:`~nbhelpers.toy.train`: ``nbhelpers toy-train``, which trains an SD-style or DeciDiffusion-style toy model;
  :mod:`~nbhelpers.toy.config`: its settings, ``ToyTrainingConfig`` (no torch: the command's ``--help`` reads them).
- :mod:`~nbhelpers.toy.pipelines`: where trained toy pipelines live and which one stands in for a catalog model
  (``load_pipeline(name, stand_in="toy")``).
"""
