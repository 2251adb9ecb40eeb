"""EMS model code: what ships inside a Hub model repository. Importing it registers the Auto classes."""

from transformers import AutoConfig, AutoModel

from .configuration_ems import EMSConfig
from .modeling_ems import EMSModel, EMSModelOutput, EMSPreTrainedModel, mean_pool

AutoConfig.register(EMSConfig.model_type, EMSConfig, exist_ok=True)
AutoModel.register(EMSConfig, EMSModel, exist_ok=True)
# save_pretrained writes auto_map and copies the code files, so a folder loads with trust_remote_code=True
# where this package is not installed.
EMSConfig.register_for_auto_class()
EMSModel.register_for_auto_class("AutoModel")

__all__ = ["EMSConfig", "EMSModel", "EMSModelOutput", "EMSPreTrainedModel", "mean_pool"]
