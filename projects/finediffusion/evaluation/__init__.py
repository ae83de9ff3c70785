"""Generation metrics of FineDiffusion, run by MMagic's MultiTestLoop."""
from .fidelity import ClassifierFidelity
from .fid import ConditionalFID
from .lpips_diversity import LPIPSDiversity

__all__ = ['ClassifierFidelity', 'ConditionalFID', 'LPIPSDiversity']
