"""How the observations of one space are stored and fed to the networks.

An :class:`ObservationLayout` is built from an observation space alone. It fixes the
per-sample *storage format* used by rollouts and encoders:

* an image (a Box with 3 dims, not inside a Dict/Tuple) is stored channels-first (CHW),
  transposed when the env gives it channels-last (HWC, smallest dim last), in a compact
  dtype (uint8 images stay uint8);
* every other space is a flat float32 vector: Box flattened, Discrete one-hot,
  MultiDiscrete concatenated one-hots, MultiBinary as floats, and Dict (in
  ``space.spaces`` order) or Tuple the concatenation of their subspaces, with image
  subspaces transposed to CHW before flattening.

``parts`` says where each subspace lives in the flat vector, so that an encoder can slice
it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from gymnasium import spaces

from ippo_cli.spaces import unsupported

PartKind = Literal["image", "vector", "discrete"]
# Integer image dtypes kept as they are in storage; any other dtype is stored as float32.
_COMPACT_IMAGE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8), np.dtype(np.int16))
_TORCH_DTYPES = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int8): torch.int8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.float32): torch.float32,
}


@dataclass(frozen=True, eq=False)
class Part:
    """One subspace of an observation and where it sits in the flat storage vector.

    ``key`` is the Dict key, the Tuple index, or None for a space that is not a Dict or
    Tuple. ``kind`` is "image" (Box with 3 dims), "vector" (any other Box) or "discrete"
    (Discrete, MultiDiscrete, MultiBinary). Images have ``image_shape`` (C, H, W) and
    ``low``/``high`` bounds in that CHW layout (float32).
    """

    key: str | int | None
    kind: PartKind
    space: spaces.Space
    offset: int
    length: int
    image_shape: tuple[int, int, int] | None = None
    channels_last: bool = False
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    # discrete parts: flat position j is 1 when component ``component[j]`` equals ``value[j]``
    component: np.ndarray | None = None
    value: np.ndarray | None = None

    @property
    def name(self) -> str:
        return "observation" if self.key is None else f"observation subspace {self.key!r}"

    def to_flat(self, obs: Any, batch_ndim: int) -> np.ndarray:
        """A batch of this subspace's observations as ``(*batch, length)`` float32."""
        x = _checked_array(obs, self.space, batch_ndim, self.name)
        batch = x.shape[:batch_ndim]
        if self.kind == "discrete" and self.component is not None:
            x = x.reshape(*batch, int(np.prod(self.space.shape)))
            # Vectorised one-hot: compare each component with every value it can take.
            # Out-of-range (and NaN) values give an all-zero block.
            return (x[..., self.component] == self.value).astype(np.float32)
        if self.channels_last:
            x = np.moveaxis(x, -1, -3)
        return np.asarray(x, dtype=np.float32).reshape(*batch, self.length)


class ObservationLayout:
    """The storage format of the observations of ``space`` (see the module docstring).

    Attributes: ``space``; ``shape`` and ``dtype``, the per-sample storage shape and numpy
    dtype; ``flat_dim``, the number of stored values per sample; ``is_image`` (an image
    stored CHW); ``is_multi_input`` (a Dict or Tuple); ``parts`` (one :class:`Part` per
    subspace, a single one for other spaces).

    Raises a one-line TypeError naming the space when it is not supported.
    """

    def __init__(self, space: spaces.Space, role: str = "observation") -> None:
        self.space = space
        self.is_multi_input = isinstance(space, spaces.Dict | spaces.Tuple)
        if self.is_multi_input:
            items = (
                list(space.spaces.items())
                if isinstance(space, spaces.Dict)
                else list(enumerate(space.spaces))
            )
            if not items:
                raise unsupported(space, role, "it has no subspaces")
            parts, offset = [], 0
            for key, sub in items:
                if isinstance(sub, spaces.Dict | spaces.Tuple):
                    raise unsupported(space, role, f"subspace {key!r} is a nested Dict/Tuple")
                part = _make_part(sub, key, offset, space, role)
                parts.append(part)
                offset += part.length
            self.parts: tuple[Part, ...] = tuple(parts)
        else:
            self.parts = (_make_part(space, None, 0, space, role),)
        self.flat_dim = sum(p.length for p in self.parts)
        first = self.parts[0]
        self.is_image = not self.is_multi_input and first.kind == "image"
        if self.is_image:
            assert first.image_shape is not None
            self.shape: tuple[int, ...] = first.image_shape
            dtype = np.dtype(space.dtype)
            self.dtype = dtype if dtype in _COMPACT_IMAGE_DTYPES else np.dtype(np.float32)
        else:
            self.shape = (self.flat_dim,)
            self.dtype = np.dtype(np.float32)

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype matching :attr:`dtype` (for preallocated rollout storage)."""
        return _TORCH_DTYPES[self.dtype]

    def __repr__(self) -> str:
        return f"ObservationLayout(shape={self.shape}, dtype={self.dtype}, space={self.space})"

    def batch_ndim_of(self, obs: Any) -> int:
        """Number of leading batch dims of ``obs`` (0 for a single observation)."""
        part = self.parts[0]
        leaf = obs[part.key] if self.is_multi_input else obs
        ndim = np.ndim(leaf) - len(part.space.shape)
        if ndim < 0:
            raise ValueError(
                f"{part.name} of shape {np.shape(leaf)} has fewer dims than its space {part.space}"
            )
        return ndim

    def to_storage(self, obs: Any, batch_ndim: int) -> np.ndarray:
        """Convert a batch of env observations to storage format ``(*batch, *shape)``.

        ``obs`` is an array with ``batch_ndim`` leading dims; for a Dict space a mapping
        of such arrays, for a Tuple space a tuple or list of them.
        """
        if self.is_image:
            part = self.parts[0]
            x = _checked_array(obs, self.space, batch_ndim, part.name)
            if part.channels_last:
                x = np.moveaxis(x, -1, -3)
            return np.ascontiguousarray(x, dtype=self.dtype)
        if not self.is_multi_input:
            return self.parts[0].to_flat(obs, batch_ndim)
        if isinstance(self.space, spaces.Dict):
            if not isinstance(obs, Mapping):
                raise TypeError(f"a Dict observation must be a mapping, got {type(obs).__name__}")
            missing = [p.key for p in self.parts if p.key not in obs]
            if missing:
                raise KeyError(f"Dict observation lacks key(s) {missing}")
        elif not isinstance(obs, tuple | list) or len(obs) != len(self.parts):
            raise TypeError(
                f"a Tuple observation must be a tuple or list of {len(self.parts)} arrays"
            )
        flats = [p.to_flat(obs[p.key], batch_ndim) for p in self.parts]
        return np.concatenate(flats, axis=-1)


def is_channels_last(shape: tuple[int, ...]) -> bool:
    """Whether a 3-dim image shape is HWC: its last dim is its smallest and not its first."""
    return len(shape) == 3 and shape[2] < shape[0] and shape[2] <= shape[1]


def _make_part(
    space: spaces.Space, key: str | int | None, offset: int, whole: spaces.Space, role: str
) -> Part:
    def part(kind: PartKind, length: int, **extra: Any) -> Part:
        return Part(key, kind, space, offset, length, **extra)

    where = "" if key is None else f"subspace {key!r} is "
    if isinstance(space, spaces.Box):
        shape = tuple(space.shape)
        size = int(np.prod(shape))
        if size == 0:
            raise unsupported(whole, role, f"{where}an empty Box")
        if len(shape) != 3:
            return part("vector", size)
        last = is_channels_last(shape)
        chw = (shape[2], shape[0], shape[1]) if last else shape
        low = np.broadcast_to(space.low, shape).astype(np.float32)
        high = np.broadcast_to(space.high, shape).astype(np.float32)
        if last:
            low, high = np.moveaxis(low, -1, 0), np.moveaxis(high, -1, 0)
        return part(
            "image",
            size,
            image_shape=chw,
            channels_last=last,
            low=np.ascontiguousarray(low),
            high=np.ascontiguousarray(high),
        )
    if isinstance(space, spaces.Discrete):
        n = int(space.n)
        return part(
            "discrete",
            n,
            component=np.zeros(n, dtype=np.intp),
            value=np.arange(n, dtype=np.int64) + int(space.start),
        )
    if isinstance(space, spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise unsupported(whole, role, f"{where}a multi-dimensional MultiDiscrete")
        nvec = space.nvec.astype(np.int64)
        component = np.repeat(np.arange(len(nvec)), nvec)
        local = np.concatenate([np.arange(n) for n in nvec]) if len(nvec) else np.zeros(0)
        value = local.astype(np.int64) + np.asarray(space.start, np.int64)[component]
        return part("discrete", int(nvec.sum()), component=component, value=value)
    if isinstance(space, spaces.MultiBinary):
        return part("discrete", int(np.prod(space.shape)))
    raise unsupported(whole, role)


def _checked_array(obs: Any, space: spaces.Space, batch_ndim: int, name: str) -> np.ndarray:
    x = np.asarray(obs)
    shape = tuple(space.shape) if not isinstance(space, spaces.Discrete) else ()
    if x.ndim != batch_ndim + len(shape) or tuple(x.shape[batch_ndim:]) != shape:
        raise ValueError(
            f"{name} of shape {x.shape} does not match its space {space} "
            f"with {batch_ndim} batch dim(s)"
        )
    return x


def observation_layout(space: spaces.Space, role: str = "observation") -> ObservationLayout:
    """The :class:`ObservationLayout` of ``space``; the one-line TypeError of
    :func:`~ippo_cli.spaces.unsupported` if ``space`` cannot be observed."""
    return ObservationLayout(space, role)
