"""Training loops: DAMSM pre-training (``damsm``)."""
