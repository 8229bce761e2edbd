"""Build PettingZoo ParallelEnvs (and vector envs of them) from the env config."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ippo_cli.envs.batched_mpe import BatchedMPE, make_batched_env
from ippo_cli.envs.vector import AsyncVecEnv, SyncVecEnv, make_vec_env


class EnvConfigError(ValueError):
    """An env config that cannot be built; the message names the bad value."""


def resolve(path: str, key: str = "env.factory") -> Callable[..., Any]:
    """Import ``pkg.module.attr`` and return the attribute."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise EnvConfigError(f"{key}='{path}' is not a dotted path like pkg.module.function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvConfigError(f"{key}='{path}': cannot import '{module_name}' ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EnvConfigError(f"{key}='{path}': '{module_name}' has no '{attr}'") from None


def build_env(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    wrappers: Sequence[Mapping[str, Any]] = (),
    render_mode: str | None = None,
):
    """One ParallelEnv: ``factory(**kwargs)`` then each wrapper in order."""
    kwargs = dict(kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = resolve(factory)(**kwargs)
    for i, wrapper in enumerate(wrappers):
        env = resolve(wrapper["factory"], f"env.wrappers[{i}].factory")(
            env, **dict(wrapper.get("kwargs") or {})
        )
    return env


def env_fn(env_cfg: Any, render_mode: str | None = None) -> Callable[[], Any]:
    """A picklable zero-argument callable building one env of ``env_cfg``."""
    return functools.partial(
        build_env,
        str(env_cfg["factory"]),
        _plain(env_cfg.get("kwargs") or {}),
        [_plain(w) for w in env_cfg.get("wrappers") or []],
        render_mode,
    )


def make_train_env(
    env_cfg: Any, num_envs: int, kind: str, num_workers: int | None
) -> SyncVecEnv | AsyncVecEnv | BatchedMPE:
    """The vector env used for training: with ``env.backend=batched`` the numpy version of the
    mpe2 env (``kind`` and ``num_workers`` do not apply), else a vector env of ParallelEnvs.
    The first ParallelEnv is built once here so that a bad factory or kwarg fails with a
    clear message before any worker starts."""
    if env_cfg.get("backend", "pettingzoo") == "batched":
        return make_batched_env(
            str(env_cfg["factory"]),
            _plain(env_cfg.get("kwargs") or {}),
            _plain(env_cfg.get("wrappers") or []),
            num_envs,
        )
    check = env_fn(env_cfg)()
    check.close()
    kind = vec_env_kind(kind, num_envs, num_workers)
    return make_vec_env([env_fn(env_cfg)] * num_envs, kind=kind, num_workers=num_workers)


def vec_env_kind(kind: str, num_envs: int, num_workers: int | None) -> str:
    """``auto``: worker processes (async) when they can run side by side, that is with two
    or more cores, envs and allowed workers; else every env in this process (sync)."""
    if kind != "auto":
        return kind
    from ippo_cli.launchers import available_cores

    parallel = min(available_cores(), num_envs, num_workers or num_envs)
    return "async" if parallel >= 2 else "sync"


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (picklable, no interpolation)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, DictConfig | ListConfig):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
