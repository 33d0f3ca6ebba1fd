"""Settings resolution: defaults < ``PADDLEFIX_*`` environment < call arguments.

Every name and value is validated; a bad one raises :class:`ConfigError` naming the
variable (or argument), the value received and the accepted choices.

``PADDLEFIX_DISABLE`` is the operator's kill switch: a patch it names stays off even
when code names it in ``apply()``. Call arguments can add exclusions, never remove
those of the environment.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Iterable, Mapping, NamedTuple, Sequence

from ._errors import ConfigError, PaddlefixWarning

__all__ = [
    "ENV_PATCHES",
    "ENV_DISABLE",
    "ENV_FORCE",
    "ENV_STRICT",
    "ENV_LOG_LEVEL",
    "Settings",
    "EnvVar",
    "resolve",
    "env_choice",
    "configure_logging",
]

ENV_PATCHES = "PADDLEFIX_PATCHES"
ENV_DISABLE = "PADDLEFIX_DISABLE"
ENV_FORCE = "PADDLEFIX_FORCE"
ENV_STRICT = "PADDLEFIX_STRICT"
ENV_LOG_LEVEL = "PADDLEFIX_LOG_LEVEL"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class EnvVar(NamedTuple):
    """A patch-specific environment variable and its accepted values."""

    name: str
    choices: tuple[str, ...]
    default: str
    doc: str


class Settings(NamedTuple):
    """The resolved settings of one ``apply()`` call."""

    selected: tuple[str, ...]
    """Patch names to apply, in registry order."""
    explicit: frozenset[str]
    """Names the user asked for by name (not via ``default``), for ``strict``."""
    disabled_env: frozenset[str]
    disabled_arg: frozenset[str]
    force: frozenset[str]
    strict: bool


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _expand(
    tokens: Iterable[str],
    source: str,
    known: Sequence[str],
    defaults: Sequence[str],
    *,
    star: bool = False,
) -> tuple[list[str], set[str]]:
    """Expand ``default`` / ``all`` (and ``*`` if allowed); return (names, explicit)."""
    names: list[str] = []
    explicit: set[str] = set()
    groups = ("default", "all") + (("*",) if star else ())
    for token in tokens:
        if token == "default":
            names.extend(defaults)
        elif token in ("all", "*") and token in groups:
            names.extend(known)
        elif token in known:
            names.append(token)
            explicit.add(token)
        else:
            choices = ", ".join(list(groups) + list(known))
            raise ConfigError(f"{source}: unknown patch {token!r}; valid choices: {choices}")
    return names, explicit


def _names_arg(value: str | Iterable[str], source: str, known: Sequence[str]) -> list[str]:
    if isinstance(value, str):
        return _split(value)
    choices = ", ".join(["default", "all", *known])
    try:
        items = list(value)
    except TypeError:
        raise ConfigError(
            f"{source}: expected a patch name or an iterable of them, got {value!r}; valid choices: {choices}"
        ) from None
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{source}: expected patch names (str), got {item!r}; valid choices: {choices}")
        out.append(item.strip())
    return out


def _bool_env(environ: Mapping[str, str], name: str) -> bool | None:
    raw = environ.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}: invalid value {raw!r}; valid choices: 1, 0 (or true/false, yes/no, on/off)")


def resolve(
    known: Sequence[str],
    defaults: Sequence[str],
    names: Sequence[str] = (),
    exclude: str | Iterable[str] = (),
    force: str | Iterable[str] = (),
    strict: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve what ``apply(*names, exclude=, force=, strict=)`` should do."""
    env = os.environ if environ is None else environ
    check_environment(env)

    if names:
        tokens = _names_arg(names, "apply() names", known)
        selected, explicit = _expand(tokens, "apply() names", known, defaults)
    elif env.get(ENV_PATCHES, "").strip():
        selected, explicit = _expand(_split(env[ENV_PATCHES]), ENV_PATCHES, known, defaults)
    else:
        selected, explicit = list(defaults), set()

    disabled_env, _ = _expand(_split(env.get(ENV_DISABLE, "")), ENV_DISABLE, known, defaults, star=True)
    disabled_arg, _ = _expand(_names_arg(exclude, "apply(exclude=)", known), "apply(exclude=)", known, defaults)

    forced, _ = _expand(_split(env.get(ENV_FORCE, "")), ENV_FORCE, known, defaults)
    if isinstance(force, bool):
        raise ConfigError("apply(force=): expected patch names, got a bool; pass e.g. force=('eval_grad',)")
    forced_arg, _ = _expand(_names_arg(force, "apply(force=)", known), "apply(force=)", known, defaults)
    forced += forced_arg
    # A forced patch is wanted: it joins the selection.
    selected += [n for n in forced if n not in selected]
    explicit |= set(forced)

    if strict is None:
        strict_env = _bool_env(env, ENV_STRICT)
        strict = bool(strict_env)
    elif not isinstance(strict, bool):
        raise ConfigError(f"apply(strict=): expected True, False or None, got {strict!r}")

    order = {n: i for i, n in enumerate(known)}
    unique = sorted(set(selected), key=order.__getitem__)
    return Settings(
        selected=tuple(unique),
        explicit=frozenset(explicit),
        disabled_env=frozenset(disabled_env),
        disabled_arg=frozenset(disabled_arg),
        force=frozenset(forced),
        strict=strict,
    )


_patch_vars: dict[str, EnvVar] = {}


def register_env_var(var: EnvVar) -> None:
    """Declare a patch-specific ``PADDLEFIX_*`` variable (done by patch specs)."""
    _patch_vars[var.name] = var


def known_env_vars() -> list[str]:
    return sorted({ENV_PATCHES, ENV_DISABLE, ENV_FORCE, ENV_STRICT, ENV_LOG_LEVEL, *_patch_vars})


def check_environment(environ: Mapping[str, str]) -> None:
    """Validate every patch-specific variable; warn about unknown ``PADDLEFIX_*`` names."""
    for name, var in _patch_vars.items():
        if name in environ:
            env_choice(name, var.choices, var.default, environ)
    if ENV_LOG_LEVEL in environ:
        _log_level(environ)
    valid = known_env_vars()
    for name in environ:
        if name.startswith("PADDLEFIX_") and name not in valid:
            warnings.warn(
                f"unknown environment variable {name} ignored; paddlefix reads: {', '.join(valid)}",
                PaddlefixWarning,
                stacklevel=5,  # check_environment < resolve < Registry.apply < paddlefix.apply < user
            )


def env_choice(
    name: str, choices: Sequence[str], default: str, environ: Mapping[str, str] | None = None
) -> str:
    """Read ``name`` from the environment; it must be one of ``choices`` (case-insensitive)."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}: invalid value {raw!r}; valid choices: {', '.join(choices)}")
    return value


def _log_level(environ: Mapping[str, str]) -> int | None:
    raw = environ.get(ENV_LOG_LEVEL)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().upper()
    if value not in LOG_LEVELS:
        raise ConfigError(f"{ENV_LOG_LEVEL}: invalid value {raw!r}; valid choices: {', '.join(LOG_LEVELS)}")
    import logging

    return int(getattr(logging, value))


_handler = None


def configure_logging(environ: Mapping[str, str] | None = None) -> None:
    """Apply ``PADDLEFIX_LOG_LEVEL``: set the ``paddlefix`` logger's level and print to stderr.

    Without the variable, paddlefix leaves logging to the application (a library's manners).
    """
    import logging

    global _handler
    level = _log_level(os.environ if environ is None else environ)
    if level is None:
        return
    logger = logging.getLogger("paddlefix")
    logger.setLevel(level)
    if _handler is None:
        _handler = logging.StreamHandler(sys.stderr)
        _handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
        logger.addHandler(_handler)
