from .uncertainty import Uncertainty
