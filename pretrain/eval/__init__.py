"""Evaluation of pretrained backbones on frozen features: weighted k-NN and a linear probe."""
