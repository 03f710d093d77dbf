"""usrl: universally slimmable networks for reinforcement learning and beyond."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: `import usrl.nn` must not import Stable-Baselines3
    if name == "USDQN":
        from usrl.agents import USDQN

        return USDQN
    raise AttributeError(f"module 'usrl' has no attribute {name!r}")


__all__ = ["USDQN", "__version__"]
