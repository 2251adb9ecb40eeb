"""Model code: what ships inside a Hub model repository. Importing it registers the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

from .configuration_dual_encoder import DualEncoderMultiTaskConfig
from .configuration_ems import EMSConfig
from .layers import SentenceClassificationMixin, SentenceEncoderPreTrainedModel, mean_pool
from .modeling_dual_encoder import (
    DualEncoderMultiTask,
    DualEncoderMultiTaskForPreTraining,
    DualEncoderMultiTaskForSequenceClassification,
    DualEncoderMultiTaskOutput,
    DualEncoderMultiTaskPreTrainedModel,
)
from .modeling_ems import (
    EMSForPreTraining,
    EMSForPreTrainingOutput,
    EMSForSequenceClassification,
    EMSModel,
    EMSPreTrainedModel,
)

AutoConfig.register(EMSConfig.model_type, EMSConfig, exist_ok=True)
AutoModel.register(EMSConfig, EMSModel, exist_ok=True)
AutoModelForPreTraining.register(EMSConfig, EMSForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(EMSConfig, EMSForSequenceClassification, exist_ok=True)
# save_pretrained writes auto_map and copies the code files, so a folder loads with trust_remote_code=True
# where this package is not installed.
EMSConfig.register_for_auto_class()
EMSModel.register_for_auto_class("AutoModel")
EMSForPreTraining.register_for_auto_class("AutoModelForPreTraining")
EMSForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

AutoConfig.register(DualEncoderMultiTaskConfig.model_type, DualEncoderMultiTaskConfig, exist_ok=True)
AutoModel.register(DualEncoderMultiTaskConfig, DualEncoderMultiTask, exist_ok=True)
AutoModelForPreTraining.register(DualEncoderMultiTaskConfig, DualEncoderMultiTaskForPreTraining, exist_ok=True)
AutoModelForSequenceClassification.register(DualEncoderMultiTaskConfig, DualEncoderMultiTaskForSequenceClassification,
                                            exist_ok=True)
DualEncoderMultiTaskConfig.register_for_auto_class()
DualEncoderMultiTask.register_for_auto_class("AutoModel")
DualEncoderMultiTaskForPreTraining.register_for_auto_class("AutoModelForPreTraining")
DualEncoderMultiTaskForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")

__all__ = [
    "DualEncoderMultiTask",
    "DualEncoderMultiTaskConfig",
    "DualEncoderMultiTaskForPreTraining",
    "DualEncoderMultiTaskForSequenceClassification",
    "DualEncoderMultiTaskOutput",
    "DualEncoderMultiTaskPreTrainedModel",
    "EMSConfig",
    "EMSForPreTraining",
    "EMSForPreTrainingOutput",
    "EMSForSequenceClassification",
    "EMSModel",
    "EMSPreTrainedModel",
    "SentenceClassificationMixin",
    "SentenceEncoderPreTrainedModel",
    "mean_pool",
]
