"""usrl: universally slimmable networks for reinforcement learning and beyond."""

__version__ = "0.1.0"
