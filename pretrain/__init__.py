"""The DINOv2 pretrainer, in the layout of the official code: ``layers/`` (one building block per
file), ``models/`` (the ViT, official checkpoint keys), ``loss/`` (one loss per file) and ``data/``
(multi-crop augmentation, block masking, collation)."""
