"""0.6.x module path ``pytorch_pretrained_bert.optimization_openai``: ``OpenAIAdam`` and the schedules, re-exported
from ``jaxformers.optimization``."""

from .optimization import SCHEDULES, OpenAIAdam

ABSENT: dict[str, str] = {}

__all__ = ["OpenAIAdam", "SCHEDULES"]
