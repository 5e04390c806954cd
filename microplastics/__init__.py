"""Microplastic particle classification: data stages, classical and deep models, reports."""
import os

# albumentations asks the network for a newer version on import; this machine may be offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

# The DeepParticle MICRO classes. Data decides the classes of a run; this is only the default set.
DEEPPARTICLE_CLASSES = ("foam", "hard", "line", "noise", "pellet", "reference")
