"""d2lcore: the tested core package behind the interactive deep-learning book.

One concept per module, in four floors; each imports only its own floor and the ones
below (``tests/test_layout.py`` checks it):

- **foundation**: ``device`` (the device, seeds), ``profile`` (``D2L_PROFILE``: how much
  the pages train), ``datafiles`` (Fashion-MNIST's files: lookup, checksums, IDX, the
  ``--check`` command), ``download`` (their explicit download, and ``ensure_fashion_mnist``:
  find or download), ``data`` (``Splits`` of tensors with ``.loader()``,
  Fashion-MNIST and synthetic data in memory), ``pipeline`` (Fashion-MNIST laid out for
  torchvision, a loader's epoch timed), ``models`` and ``conv`` (plain
  ``nn.Module`` s), ``init``, ``metrics``, ``step`` (the training step, replayed as a
  CUDA graph on a GPU), ``train`` (the one training loop: ``fit`` for a model,
  ``fit_stack`` for a stack of models; ``History``, ``RunResult``: what every trainer
  returns).
- **runs**: ``cache`` (one atomic, keyed cache for grids and checkpoints), ``grid`` (``Grid``,
  the one configuration order; ``run_grid``, a cached grid of any per-configuration
  function with extras), ``config`` (``TrainConfig``: hyperparameters, momentum and the
  learning-rate schedule; ``ModelSpec`` and the registry of model kinds), ``stacks`` (K
  models as one module with a leading model axis, from the real module with
  ``torch.func``) and ``sequential_stack`` (its batched-matmul fast path), ``batched``
  (a grid's models trained as one stack: the stacked optimizer, ``fit_stacked``),
  ``stack_choice`` (which way a group trains fastest here, measured), ``sweep``
  (``train_one``, and ``train_grid``: ``run_grid`` plus stacking).
- **figures**: ``plotting`` (plotly figures, the book's renderer), ``figure_page`` (+
  ``figure.js``, ``figure.css``: an interactive figure's HTML controls, readout and page
  script), ``figure_text`` (a configuration in words: labels, values, readouts),
  ``sliders`` (a grid as a figure with a control per axis, any trace type),
  ``widgets`` (live controls that re-train a configuration in a kernel).
- **topics**: ``polynomial``, ``surface`` (the least-squares loss surface and gradient
  descent on it), ``optim`` (``torch.optim``'s SGD, momentum, RMSProp and Adam on a 2-D
  quadratic, many runs at once), ``lr_range`` (the learning-rate range test),
  ``diagnostics``, ``attention``, ``sequence_tasks`` and
  ``transformer`` (its models and trainers), ``heads``, ``checkpoint``, ``probe``
  (logistic regression trained to convergence, features per layer) and ``finetune``,
  the MLP playground (``playground_data``: its 2-D data sets;
  ``playground``: configurations, stacked training, weight encoding;
  ``playground_figure`` + ``playground.js``: the figure and live controls): what one
  chapter needs beyond the floors, built on ``fit`` and the grid.
"""

from d2lcore.device import get_device, set_seed

__all__ = ["get_device", "set_seed"]
__version__ = "0.1.0"
