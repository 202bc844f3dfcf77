from .label_entropy import LabelEntropy
