"""Model loading and the text-to-image and pixel front doors over the one pipeline run."""
