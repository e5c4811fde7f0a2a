"""guided-diffusion (ADM) checkpoints: flag parsing (:mod:`.flags`), the diffusers layout (:mod:`.layout`) and
the converter (:mod:`.convert`)."""
