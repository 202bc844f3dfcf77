from .medkit_cxr import MedkitCxr
