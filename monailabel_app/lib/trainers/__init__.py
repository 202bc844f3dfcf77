from .medkit_ct import MedkitCt
from .medkit_cxr import MedkitCxr
