"""minority: minority-focused sampling for diffusion models.

MinorityPrompt (Um & Ye, CVPR 2025) and SGMS (Um & Ye, ECCV 2024) on diffusers models, with the
baselines (DDIM, null-prompt, CADS, CFG++) and the papers' evaluation suite.
"""

from minority.core.denoiser import Denoiser
from minority.errors import MinorityError
from minority.methods.base import all_methods, get_method, register_method
from minority.pipelines.components import Components
from minority.pipelines.loading import load_components
from minority.pipelines.pixel import PixelPipeline, load_pipeline
from minority.pipelines.text2image import MinorityOutput, MinorityPipeline, MinorityPromptPipeline

__version__ = "0.1.0"

__all__ = [
    "Components", "Denoiser", "MinorityError", "MinorityOutput", "MinorityPipeline", "MinorityPromptPipeline", "PixelPipeline", "all_methods", "load_pipeline", "get_method",
    "load_components", "register_method", "__version__",
]
