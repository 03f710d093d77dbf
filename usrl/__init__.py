"""usrl: universally slimmable networks for reinforcement learning and beyond."""

__version__ = "0.1.0"

_AGENTS = ("USDQN", "USPPO", "USA2C")


def __getattr__(name: str):  # lazy: `import usrl.nn` must not import Stable-Baselines3
    if name in _AGENTS:
        import usrl.agents

        return getattr(usrl.agents, name)
    raise AttributeError(f"module 'usrl' has no attribute {name!r}")


__all__ = ["USA2C", "USDQN", "USPPO", "__version__"]
