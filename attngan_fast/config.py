"""The AttnGAN configuration: the original keys and defaults as a typed, immutable object.

``load("bird_attn2")`` reads a shipped config by name (``attngan_fast/configs/<name>.yml``),
``load("path/to/file.yml")`` any original AttnGAN YAML file unchanged. Keys and defaults are
those of the original ``miscc/config.py``; a few keys marked *extension* are attngan_fast's own,
with defaults that keep the original behaviour where one exists.

Unknown keys and wrong types raise ``ValueError`` naming the dotted key. As in the original, a
YAML value must have the default's type, except that an int is accepted where a float is expected.

Plain scalars are resolved as YAML 1.2's core schema does (:class:`Yaml12Loader`, for files and
``--set`` values alike): ``2e-4`` and ``1E5`` are floats (PyYAML's YAML 1.1 rules read them as
strings), ``true``/``false`` the only booleans, ``null``/``~``/empty the null.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class Yaml12Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` with the plain-scalar resolution of the YAML 1.2 core schema.

    null: ``null Null NULL ~`` or empty; bool: ``true True TRUE false False FALSE``; int:
    ``[-+]?[0-9]+``, ``0o[0-7]+``, ``0x[0-9a-fA-F]+``; float: ``[-+]?(.[0-9]+|[0-9]+(.[0-9]*)?)([eE][-+]?[0-9]+)?``,
    ``[-+]?.inf`` and ``.nan`` (any of their three spellings). Anything else is a string (no
    YAML 1.1 ``yes``/``on``, sexagesimal or timestamp values).
    """


_YAML12 = {  # tag: (pattern, the characters a match can start with; "" for the empty scalar)
    "tag:yaml.org,2002:null": (r"null|Null|NULL|~|", ["~", "n", "N", ""]),
    "tag:yaml.org,2002:bool": (r"true|True|TRUE|false|False|FALSE", list("tTfF")),
    "tag:yaml.org,2002:int": (r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+", list("-+0123456789")),
    "tag:yaml.org,2002:float": (r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?"
                                r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)", list("-+0123456789.")),
}
Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML12 and not tag.endswith(":timestamp")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, (_pattern, _first) in _YAML12.items():
    Yaml12Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), _first)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = loader.construct_scalar(node)
    for prefix, base in (("0o", 8), ("0x", 16)):
        if text.startswith(prefix):
            return int(text[2:], base)
    return int(text, 10)


def _yaml12_float(loader: yaml.SafeLoader, node: yaml.Node) -> float:
    text = loader.construct_scalar(node).lower()
    if text.endswith(".inf"):
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text == ".nan" else float(text)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _yaml12_float)


def parse_yaml(text: str, where: str) -> Any:
    """``text`` (a file's content or one ``--set`` value) parsed with :class:`Yaml12Loader`;
    ValueError starting with ``where`` if it is not valid YAML."""
    try:
        return yaml.load(text, Loader=Yaml12Loader)
    except yaml.YAMLError as e:
        raise ValueError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from None


@dataclass(frozen=True)
class SmoothConfig:
    GAMMA1: float = 5.0
    GAMMA2: float = 5.0
    GAMMA3: float = 10.0
    LAMBDA: float = 1.0


@dataclass(frozen=True)
class TrainConfig:
    BATCH_SIZE: int = 64
    MAX_EPOCH: int = 600
    SNAPSHOT_INTERVAL: int = 2000
    DISCRIMINATOR_LR: float = 2e-4
    GENERATOR_LR: float = 2e-4
    ENCODER_LR: float = 2e-4
    RNN_GRAD_CLIP: float = 0.25
    FLAG: bool = True
    NET_E: str = ""
    NET_G: str = ""
    B_NET_D: bool = True
    SMOOTH: SmoothConfig = field(default_factory=SmoothConfig)


@dataclass(frozen=True)
class TreeConfig:
    BRANCH_NUM: int = 3
    BASE_SIZE: int = 64


@dataclass(frozen=True)
class GANConfig:
    DF_DIM: int = 64
    GF_DIM: int = 128
    Z_DIM: int = 100
    CONDITION_DIM: int = 100
    R_NUM: int = 2
    B_ATTENTION: bool = True  # read by nobody, as in the original: attention is always on
    B_DCGAN: bool = False
    # extension: "per_sample" masks each caption's own padded words; "original" reproduces the
    # original mask.repeat(Q, 1) mixing (needed to reproduce the released checkpoints exactly).
    MASK_MODE: str = "per_sample"


@dataclass(frozen=True)
class TextConfig:
    CAPTIONS_PER_IMAGE: int = 10
    EMBEDDING_DIM: int = 256
    WORDS_NUM: int = 18


@dataclass(frozen=True)
class DAMSMConfig:
    """extension: the DAMSM image encoder (the original's is always Inception-v3)."""

    # "inception_v3": CNN_ENCODER (frozen Inception-v3 + trained heads, 17x17 regions);
    # "small_cnn": SmallImageEncoder, a small CNN trained from scratch (CPU / synthetic birds).
    IMAGE_ENCODER: str = "inception_v3"
    # torchvision inception_v3 state_dict file (ImageNet weights) for CNN_ENCODER; nothing is
    # downloaded; '' leaves the backbone random (with a warning).
    INCEPTION_WEIGHTS: str = ""
    SMALL_CNN_WIDTH: int = 32  # channels of the small CNN's first stage (then 2x, 4x, 8x)
    SMALL_CNN_INPUT: int = 64  # the small CNN resizes its input to this size (regions: INPUT / 8)


@dataclass(frozen=True)
class SyntheticConfig:
    """extension: synthetic birds, used when DATASET_NAME is 'synthetic_birds' and DATA_DIR is ''."""

    NUM_IMAGES: int = 2500  # train + test
    TEST_FRACTION: float = 0.2  # the last images (by index) form the test split
    SEED: int = 0  # the set's content (attributes, captions)


@dataclass(frozen=True)
class Config:
    """The whole configuration; attribute access mirrors the original (``cfg.TRAIN.SMOOTH.GAMMA1``)."""

    CONFIG_NAME: str = ""
    DATASET_NAME: str = "birds"
    DATA_DIR: str = ""
    GPU_ID: int = 0
    CUDA: bool = True
    WORKERS: int = 6
    RNN_TYPE: str = "LSTM"
    B_VALIDATION: bool = False
    TREE: TreeConfig = field(default_factory=TreeConfig)
    TRAIN: TrainConfig = field(default_factory=TrainConfig)
    GAN: GANConfig = field(default_factory=GANConfig)
    TEXT: TextConfig = field(default_factory=TextConfig)
    DAMSM: DAMSMConfig = field(default_factory=DAMSMConfig)  # extension
    SYNTHETIC: SyntheticConfig = field(default_factory=SyntheticConfig)  # extension

    def replace(self, **overrides: Any) -> "Config":
        """A copy with ``overrides`` applied (dotted keys ``"GAN.GF_DIM"`` or nested dicts)."""
        return _apply(self, _nest(overrides), "")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtin values (what checkpoints store)."""
        return dataclasses.asdict(self)


# Allowed values of the keys that take one of a few choices; checked after every merge.
_CHOICES = {
    "RNN_TYPE": ("LSTM", "GRU"),
    "GAN.MASK_MODE": ("per_sample", "original"),
    "TREE.BRANCH_NUM": (1, 2, 3),
    "DAMSM.IMAGE_ENCODER": ("inception_v3", "small_cnn"),
}
_POSITIVE = ("TRAIN.BATCH_SIZE", "GAN.DF_DIM", "GAN.GF_DIM", "GAN.Z_DIM", "GAN.CONDITION_DIM",
             "TEXT.EMBEDDING_DIM", "TEXT.WORDS_NUM", "TEXT.CAPTIONS_PER_IMAGE", "TREE.BASE_SIZE",
             "DAMSM.SMALL_CNN_WIDTH", "DAMSM.SMALL_CNN_INPUT", "SYNTHETIC.NUM_IMAGES")


def defaults() -> Config:
    """The original defaults (``miscc/config.py``)."""
    return Config()


def available() -> list[str]:
    """Names of the shipped configs, e.g. ``["DAMSM/bird", "bird_attn2", ...]``."""
    return sorted(p.relative_to(CONFIG_DIR).with_suffix("").as_posix() for p in CONFIG_DIR.rglob("*.yml"))


def resolve(path_or_name: str | os.PathLike) -> Path:
    """The YAML file for a shipped config name or a path; ValueError naming both if neither exists."""
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = CONFIG_DIR / f"{Path(path_or_name).as_posix().removesuffix('.yml')}.yml"
    if shipped.is_file():
        return shipped
    raise ValueError(
        f"config {str(path_or_name)!r}: no such file and no shipped config of that name "
        f"(shipped: {', '.join(available())})"
    )


def load(path_or_name: str | os.PathLike | None = None, **overrides: Any) -> Config:
    """Read an original AttnGAN YAML (or a shipped config by name) into a :class:`Config`.

    ``overrides`` are applied after the file: ``load("bird_attn2", **{"TRAIN.BATCH_SIZE": 4})``
    or ``load("bird_attn2", TRAIN={"BATCH_SIZE": 4})``.
    """
    cfg = defaults()
    if path_or_name is not None:
        path = resolve(path_or_name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"config file {path}: cannot read it ({e})") from None
        data = parse_yaml(text, f"config file {path}") or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: expected a mapping at the top level, got {type(data).__name__}")
        try:
            cfg = _apply(cfg, data, "")
        except ValueError as e:
            raise ValueError(f"{e} (in {path})") from None
    return cfg.replace(**overrides) if overrides else cfg


def from_dict(data: Mapping[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict` (with the same key and type checks as :func:`load`)."""
    return _apply(defaults(), dict(data), "")


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"GAN.GF_DIM": 8, "TRAIN": {...}}`` → nested dict."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.replace("__", ".").split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return nested


def _apply(obj: Any, data: Mapping[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ValueError(f"unknown config key {dotted!r}; known keys here: {', '.join(fields)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {dotted!r}: expected a mapping, got {type(value).__name__} ({value!r})")
            changes[key] = _apply(current, value, dotted + ".")
        else:
            changes[key] = _check_type(dotted, value, type(current))
    out = dataclasses.replace(obj, **changes)
    return _validate(out) if prefix == "" else out


def _check_type(dotted: str, value: Any, expected: type) -> Any:
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is str and value is None:  # an empty YAML value (`NET_G:`) means ''
        return ""
    if type(value) is not expected:
        raise ValueError(
            f"config key {dotted!r}: expected {expected.__name__}, got {type(value).__name__} ({value!r})"
        )
    return value


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _validate(cfg: Config) -> Config:
    for dotted, choices in _CHOICES.items():
        if _get(cfg, dotted) not in choices:
            raise ValueError(f"config key {dotted!r}: expected one of {choices}, got {_get(cfg, dotted)!r}")
    for dotted in _POSITIVE:
        if _get(cfg, dotted) <= 0:
            raise ValueError(f"config key {dotted!r}: expected a positive value, got {_get(cfg, dotted)!r}")
    if not 0.0 <= cfg.SYNTHETIC.TEST_FRACTION < 1.0:
        raise ValueError(
            f"config key 'SYNTHETIC.TEST_FRACTION': expected 0 <= value < 1, got {cfg.SYNTHETIC.TEST_FRACTION}"
        )
    if cfg.GAN.R_NUM < 0:
        raise ValueError(f"config key 'GAN.R_NUM': expected >= 0, got {cfg.GAN.R_NUM}")
    return cfg
