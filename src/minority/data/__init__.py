"""Datasets: Fashion-MNIST (idx files) and its text captions."""

from minority.data.captions import CLASS_NAMES, caption_for, class_prompts, make_captions
from minority.data.fashion_mnist import (
    DEFAULT_FASHION_MNIST_DIR,
    FashionMNIST,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
    to_model_input,
    write_idx,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_FASHION_MNIST_DIR",
    "FashionMNIST",
    "caption_for",
    "class_prompts",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "make_captions",
    "read_idx",
    "to_model_input",
    "write_idx",
]
