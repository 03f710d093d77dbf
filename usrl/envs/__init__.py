"""Environment construction with rl-zoo3's conventions: Atari, classic control, MinAtar."""

from usrl.envs.factory import EnvSpec, UnknownEnvError, make_vec_env, resolve_env

__all__ = ["EnvSpec", "UnknownEnvError", "make_vec_env", "resolve_env"]
