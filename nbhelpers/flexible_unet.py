"""Old import path of the flexible UNet, kept so pipeline folders saved by nbhelpers 0.1 still load.

Their ``model_index.json`` names the UNet ``["nbhelpers.flexible_unet", "FlexibleUNet2DConditionModel"]`` and
diffusers resolves exactly that module. It also looks up the loadable base classes (``ModelMixin``) by name in
the same module to find the loading method, so that name is exported too. The model itself lives in
:mod:`nbhelpers.models.flexible_unet`.
"""

from diffusers.models.modeling_utils import ModelMixin

from nbhelpers.models.flexible_unet import FlexibleUNet2DConditionModel

__all__ = ["FlexibleUNet2DConditionModel", "ModelMixin"]
