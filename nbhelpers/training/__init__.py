"""What the two training stacks share: DreamBooth (:mod:`nbhelpers.dreambooth`) and toy-train
(:mod:`nbhelpers.toy.train`).

- :mod:`~nbhelpers.training.state`: training state (optimizer, schedule, random generators, weights) in files that
  cannot run code when read: tensors in safetensors, the rest as JSON in the same file's header.
- :mod:`~nbhelpers.training.conventions`: the settings' shared names and values, the one seed-mixing rule, the
  optimizers by name.
"""
