"""Pretrained models from other formats (GGUF, Hugging Face folders), and export back."""
