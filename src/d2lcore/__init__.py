"""d2lcore: the tested core package behind the interactive deep-learning book.

One concept per module:

- ``device``   -- choosing the device and making runs repeatable
- ``profile``  -- the build profile (``D2L_PROFILE``): how much the pages train
- ``data``     -- synthetic data, Fashion-MNIST, the in-memory minibatch loader
- ``models``   -- linear regression, softmax regression, the MLP
- ``init``     -- named weight-initialization schemes
- ``metrics``  -- accuracy and evaluation
- ``train``    -- the training loop and its history
- ``plotting`` -- plotly figures and the renderer the built book needs
- ``sweep``    -- grids of runs over named axes, trained together and cached on disk
- ``batched``  -- the stacked-weights training behind ``sweep``
- ``sliders``  -- a grid's results as one plotly figure with a slider per axis
- ``widgets``  -- ipywidgets controls that re-train a configuration in a live kernel
- ``diagnostics`` -- activation and gradient statistics layer by layer
- ``polynomial`` -- polynomial regression data for under- and overfitting
- ``conv``     -- cross-correlation, LeNet, batch norm, a small ResNet
- ``attention`` -- masked softmax, attention scorers, multi-head attention, a Transformer
- ``finetune`` -- pretrained source networks, new heads, per-group learning rates
"""

from d2lcore.device import get_device, set_seed

__all__ = ["get_device", "set_seed"]
__version__ = "0.1.0"
