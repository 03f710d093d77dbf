"""Environment construction with rl-zoo3's conventions: Atari, classic control, MinAtar."""

from usrl.envs.ale_vector import AtariVecEnv
from usrl.envs.factory import ATARI_BACKENDS, EnvSpec, UnknownEnvError, make_vec_env, resolve_env

__all__ = ["ATARI_BACKENDS", "AtariVecEnv", "EnvSpec", "UnknownEnvError", "make_vec_env", "resolve_env"]
