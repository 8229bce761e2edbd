"""Build PettingZoo ParallelEnvs (and vector envs of them) from the env config."""

from __future__ import annotations

import functools
import importlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pettingzoo import AECEnv
from pettingzoo.utils.conversions import aec_to_parallel

from ippo_cli.cores import available_cores
from ippo_cli.envs.mpe import BatchedMPE, make_batched_env
from ippo_cli.envs.vector import AsyncVecEnv, SyncVecEnv, make_vec_env

log = logging.getLogger("ippo")


class EnvConfigError(ValueError):
    """An env config that cannot be built; the message names the bad value."""


class RenderModeError(EnvConfigError):
    """The env factory takes no ``render_mode``, so the env cannot render frames."""


# PettingZoo families whose envs import packages that pettingzoo itself does not install.
PETTINGZOO_EXTRAS = ("atari", "classic", "sisl", "butterfly")


def resolve(path: str, key: str = "env.factory") -> Callable[..., Any]:
    """Import ``pkg.module.attr`` and return the attribute."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise EnvConfigError(f"{key}='{path}' is not a dotted path like pkg.module.function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EnvConfigError(
            f"{key}='{path}': cannot import '{module_name}' ({exc}){missing_extra(path, exc)}"
        ) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise EnvConfigError(f"{key}='{path}': '{module_name}' has no '{attr}'") from None


def missing_extra(path: str, exc: BaseException) -> str:
    """The install that fixes an import error of a PettingZoo env (``"; pip install ..."``),
    or "" when ``exc`` (or its cause: some envs re-raise with their own message) is not a
    package missing under one of PettingZoo's families."""
    parts = path.split(".")
    if len(parts) < 3 or parts[0] != "pettingzoo" or parts[1] not in PETTINGZOO_EXTRAS:
        return ""
    if not isinstance(exc, ModuleNotFoundError):
        exc = exc.__cause__
    missing = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not missing or missing.startswith("pettingzoo"):
        return ""
    return f"; PettingZoo's {parts[1]} envs need extras: pip install 'pettingzoo[{parts[1]}]'"


def _call(path: str, key: str, kwargs: dict[str, Any], *args: Any) -> Any:
    """``resolve(path)(*args, **kwargs)``; any exception becomes one EnvConfigError line
    naming the callable, its kwargs and the exception (the original is its cause)."""
    fn = resolve(path, key)
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        message = " ".join(str(exc).split())
        if "render_mode" in kwargs and isinstance(exc, TypeError) and "render_mode" in message:
            raise RenderModeError(
                f"{key}='{path}' takes no render_mode argument, so the env cannot render "
                f"{kwargs['render_mode']} frames ({message})"
            ) from exc
        raise EnvConfigError(
            f"{key}='{path}' with kwargs {kwargs} raised {type(exc).__name__}: {message}"
            f"{missing_extra(path, exc)}"
        ) from exc


def build_env(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    wrappers: Sequence[Mapping[str, Any]] = (),
    render_mode: str | None = None,
    notes: list[str] | None = None,
):
    """One ParallelEnv: ``factory(**kwargs)`` (an AEC env converted, see
    :func:`as_parallel`) then each wrapper in order. What was done to the env besides
    building it is appended to ``notes``, for the run's log."""
    kwargs = dict(kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    env = as_parallel(_call(factory, "env.factory", kwargs), factory, notes)
    for i, wrapper in enumerate(wrappers):
        key = f"env.wrappers[{i}].factory"
        env = _call(wrapper["factory"], key, dict(wrapper.get("kwargs") or {}), env)
    return env


def as_parallel(env: Any, factory: str, notes: list[str] | None = None) -> Any:
    """``env`` itself, or for an AEC env one whose agents all act every step (PettingZoo's
    ``is_parallelizable`` metadata) its ParallelEnv from ``aec_to_parallel``. A turn-based
    AEC env cannot be converted: EnvConfigError."""
    if not isinstance(env, AECEnv):
        return env
    if not env.metadata.get("is_parallelizable", False):
        env.close()
        raise EnvConfigError(
            f"env.factory='{factory}' returned an AECEnv whose agents take turns (its "
            "metadata does not set is_parallelizable), so aec_to_parallel cannot convert it; "
            "IPPO here needs a ParallelEnv, where all agents act at every step"
        )
    if notes is not None:
        notes.append(
            f"env.factory='{factory}' returned an AECEnv whose agents all act every step "
            "(is_parallelizable); converted to a ParallelEnv with pettingzoo's aec_to_parallel"
        )
    return aec_to_parallel(env)


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
    notes: list[str] = []
    check = env_fn(env_cfg)(notes=notes)
    for note in notes:
        log.info(note)
    # The step is timed only when it decides: auto with workers able to run side by side.
    timed = kind == "auto" and vec_env_kind(kind, num_envs, num_workers) == "async"
    try:
        step_seconds = env_step_seconds(check) if timed else None
    finally:
        check.close()
    chosen = vec_env_kind(kind, num_envs, num_workers, step_seconds)
    if step_seconds is not None:
        ms = 1e3 * step_seconds
        log.info("hardware.vec_env=auto: one env step takes %.2f ms -> %s", ms, chosen)
    return make_vec_env([env_fn(env_cfg)] * num_envs, kind=chosen, num_workers=num_workers)


# Stepping in worker processes pays once each worker has at least this much stepping to
# do per vector step: below it, the round trip to the workers and back costs about as
# much as stepping side by side saves. Measured with 2 workers on 2 cores (alternated
# training runs): mpe2 speaker_listener (~0.14 ms per env step) trains as fast
# in-process at 8 envs (0.6 ms of stepping per worker) and 16, and 18-19% faster with
# workers at 32 and 128 envs; simple_spread (~0.3 ms) 24% faster with workers at 8 envs.
WORKER_STEP_SECONDS = 1e-3


def vec_env_kind(
    kind: str, num_envs: int, num_workers: int | None, step_seconds: float | None = None
) -> str:
    """``auto``: worker processes (async) when they can run side by side (two or more
    cores, envs and allowed workers) and each would step its share of the envs for
    ``WORKER_STEP_SECONDS`` or more per vector step (``step_seconds``: one env's step;
    None = unknown); else every env in this process (sync)."""
    if kind != "auto":
        return kind
    parallel = min(available_cores(), num_envs, num_workers or num_envs)
    if parallel < 2:
        return "sync"
    share = math.ceil(num_envs / parallel)
    slow = step_seconds is None or step_seconds * share >= WORKER_STEP_SECONDS
    return "async" if slow else "sync"


def env_step_seconds(env: Any, budget: float = 0.2, max_steps: int = 100) -> float | None:
    """Mean wall seconds per step of one ParallelEnv under random actions, timed for about
    ``budget`` seconds; None when the env cannot be stepped that way (e.g. it rejects
    random actions), in which case ``auto`` does not rely on it."""
    try:
        env.reset(seed=0)
        steps, start = 0, time.perf_counter()
        while steps < max_steps and time.perf_counter() - start < budget:
            env.step({a: env.action_space(a).sample() for a in env.agents})
            if not env.agents:
                env.reset()
            steps += 1
        return (time.perf_counter() - start) / steps
    except Exception:
        return None


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
