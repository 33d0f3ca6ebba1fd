"""The patch registry: specs, gating, outcomes, saved originals and revert.

A patch goes through five gates before it touches anything:

1. is one of its distributions installed? (``importlib.metadata``)
2. is the installed version in the affected range? (PEP 440, ``packaging``)
3. is its target module imported yet? If not, it waits for the import (post-import hook).
4. does the probe, run against the real library, see the problem?
5. apply, recording every attribute it replaces -> ``applied`` / ``skipped`` / ``failed``.

Locking: one re-entrant lock guards the registry's state. The target module and a patch's
``imports`` are imported *before* the lock is taken, so no import machinery waits on
it. A probe or apply function must import nothing beyond the target module and the
patch's ``imports``.
"""

from __future__ import annotations

import sys
import threading
import types
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple

from ._errors import PaddlefixWarning, PatchError
from . import settings as _settings

__all__ = [
    "Finding",
    "Patch",
    "Patcher",
    "PatchStatus",
    "State",
    "Registry",
]

if TYPE_CHECKING:
    from typing import Literal

    State = Literal["applied", "pending", "skipped", "disabled", "failed"]
else:
    State = str

def _log() -> Any:
    import logging  # lazily: keeps ``import paddlefix`` cheap

    return logging.getLogger("paddlefix")


class Finding(NamedTuple):
    """What a probe saw: is the problem present here, and a one-line detail."""

    present: bool
    detail: str


class Patch(NamedTuple):
    """One patch: what it fixes, where the problem exists, and how to probe and apply it.

    ``requires`` maps distribution names to the PEP 440 range where the problem exists;
    alternatives are joined by ``|`` (``"paddlepaddle|paddlepaddle-gpu"``). ``apply``
    receives a :class:`Patcher` and must make every change through it, so revert is
    exact. ``probe`` returns a :class:`Finding`; it is the final word, the range only
    decides whether it is worth running. ``apply=None`` registers a patch whose
    implementation has not landed: it always reports ``skipped``.
    """

    name: str
    summary: str
    requires: Mapping[str, str]
    module: str
    probe: Callable[[], Finding] | None
    apply: Callable[["Patcher"], None] | None
    default: bool = True
    fixed_in: str | None = None
    """Upstream version that fixed the problem, for the skip reason."""
    imports: tuple[str, ...] = ()
    """Modules imported (outside the lock) before probe and apply run."""
    links: tuple[str, ...] = ()
    env: tuple[_settings.EnvVar, ...] = ()


class PatchStatus(NamedTuple):
    """The outcome of one patch, as ``status()`` reports it."""

    name: str
    state: State
    reason: str
    summary: str
    default: bool
    requires: Mapping[str, str]
    installed: Mapping[str, str]
    links: tuple[str, ...]
    forced: bool = False
    targets: tuple[str, ...] = ()
    """Qualified names of the attributes currently replaced."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what ``paddlefix list --json`` prints, without ``env``)."""
        return {
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "summary": self.summary,
            "default": self.default,
            "requires": dict(self.requires),
            "installed": dict(self.installed),
            "links": list(self.links),
            "forced": self.forced,
            "targets": list(self.targets),
        }


class _Change:
    """One replaced attribute, as journaled for revert."""

    __slots__ = ("patch", "owner", "attr", "original", "new", "had_own")

    def __init__(self, patch: str, owner: Any, attr: str, original: Any, new: Any, had_own: bool) -> None:
        self.patch, self.owner, self.attr = patch, owner, attr
        self.original, self.new, self.had_own = original, new, had_own

    @property
    def qualname(self) -> str:
        return f"{_owner_name(self.owner)}.{self.attr}"


class _Callback:
    """A revert action for state that is not an attribute."""

    __slots__ = ("patch", "fn", "label")

    def __init__(self, patch: str, fn: Callable[[], None], label: str) -> None:
        self.patch, self.fn, self.label = patch, fn, label


class _Record:
    """The mutable outcome of one patch."""

    __slots__ = ("state", "reason", "forced", "installed")

    def __init__(self, reason: str) -> None:
        self.state: State = "skipped"
        self.reason = reason
        self.forced = False
        self.installed: dict[str, str] = {}


def _owner_name(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    module = getattr(owner, "__module__", "")
    return f"{module}.{getattr(owner, '__qualname__', getattr(owner, '__name__', repr(owner)))}".lstrip(".")


def _describe(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (a reason is one line; Paddle's errors carry whole
    C++ tracebacks): the first non-empty line of the message, shortened to ``limit``."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    if len(lines) > 1:
        text += " ..."
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _own_dict(owner: Any) -> Mapping[str, Any]:
    return object.__getattribute__(owner, "__dict__")


class Patcher:
    """What a patch's ``apply`` uses to change things; every change is journaled for revert."""

    def __init__(self, registry: "Registry", patch: Patch, forced: bool) -> None:
        self._registry = registry
        self.patch = patch
        self.forced = forced
        self.changes: list[_Change | _Callback] = []

    def replace(self, owner: Any, attr: str, new: Any) -> Any:
        """Set ``owner.attr = new`` and return the original (the first-saved one)."""
        own = _own_dict(owner)
        had_own = attr in own
        current = own[attr] if had_own else getattr(owner, attr, _MISSING)  # may add a new one
        key = (id(owner), attr)
        previous = self._registry._ours.get(id(current))
        if previous == self.patch.name:
            raise RuntimeError(f"{_owner_name(owner)}.{attr} is already wrapped by {self.patch.name}")
        setattr(owner, attr, new)
        self._registry._originals.setdefault(key, (owner, current))
        self._registry._ours[id(new)] = self.patch.name
        change = _Change(self.patch.name, owner, attr, current, new, had_own)
        self.changes.append(change)
        self._registry._journal.append(change)
        return self._registry._originals[key][1]

    def replace_everywhere(
        self, original: Any, new: Any, packages: Iterable[str], extra: Iterable[tuple[Any, str]] = ()
    ) -> list[str]:
        """Replace ``original`` by ``new`` in every loaded module of ``packages`` that holds it.

        ``extra`` adds (owner, attr) places such as class attributes. Returns the names
        of the places patched.
        """
        prefixes = tuple(packages)
        places: list[tuple[Any, str]] = []
        for name, module in list(sys.modules.items()):
            if not isinstance(module, types.ModuleType):
                continue
            if not any(name == p or name.startswith(p + ".") for p in prefixes):
                continue
            for attr, value in list(_own_dict(module).items()):
                if value is original:
                    places.append((module, attr))
        places.extend(extra)
        done = []
        for owner, attr in places:
            self.replace(owner, attr, new)
            done.append(f"{_owner_name(owner)}.{attr}")
        return done

    def on_revert(self, fn: Callable[[], None], label: str) -> None:
        """Run ``fn`` on revert (for state that is not an attribute, e.g. a global switch)."""
        callback = _Callback(self.patch.name, fn, label)
        self.changes.append(callback)
        self._registry._journal.append(callback)

    def original(self, owner: Any, attr: str) -> Any:
        """The first-saved original of ``owner.attr`` (or its current value if unpatched)."""
        return self._registry.get_original(owner, attr)


class Registry:
    """Holds the patches and their outcomes. ``paddlefix`` uses one module-level instance."""

    def __init__(self) -> None:
        self._patches: dict[str, Patch] = {}
        self._records: dict[str, _Record] = {}
        self._journal: list[_Change | _Callback] = []
        self._originals: dict[tuple[int, str], tuple[Any, Any]] = {}
        self._ours: dict[int, str] = {}
        self._lock = threading.RLock()
        self._hooked: set[str] = set()

    # -- registration -------------------------------------------------------------
    def register(self, patch: Patch) -> None:
        if patch.name in self._patches:
            raise ValueError(f"patch {patch.name!r} registered twice")
        self._patches[patch.name] = patch
        self._records[patch.name] = _Record(
            reason="not applied (paddlefix.apply() not called)"
            if patch.default
            else "opt-in: not requested (name it in apply() or PADDLEFIX_PATCHES)"
        )
        for var in patch.env:
            _settings.register_env_var(var)

    @property
    def names(self) -> list[str]:
        return list(self._patches)

    @property
    def defaults(self) -> list[str]:
        return [n for n, p in self._patches.items() if p.default]

    def patch(self, name: str) -> Patch:
        return self._patches[name]

    # -- gating -------------------------------------------------------------------
    def _installed(self, patch: Patch) -> dict[str, str]:
        out = {}
        for alternatives in patch.requires:
            for dist in alternatives.split("|"):
                version = _dist_version(dist)
                if version is not None:
                    out[dist] = version
                    break
        return out

    def _gate(self, patch: Patch, forced: bool) -> tuple[bool, str, dict[str, str]]:
        """Gates 1 and 2: (worth going on, text for the reason, installed versions)."""
        from packaging.specifiers import SpecifierSet
        from packaging.version import InvalidVersion, Version

        installed = self._installed(patch)
        texts = []
        for alternatives, spec in patch.requires.items():
            dists = alternatives.split("|")
            found = [d for d in dists if d in installed]
            if not found:
                return False, f"{' or '.join(dists)} not installed", installed
            dist = found[0]
            version = installed[dist]
            try:
                parsed = Version(version)
            except InvalidVersion:
                texts.append(f"{dist} {version} (unparsable version: probe decides)")
                continue
            if parsed.base_version == "0.0.0":
                texts.append(f"{dist} {version} (development build: probe decides)")
                continue
            if SpecifierSet(spec).contains(parsed, prereleases=True):
                texts.append(f"{dist} {version} in affected range {spec}")
            elif forced:
                texts.append(f"{dist} {version} outside affected range {spec}, forced")
            else:
                fixed = f"fixed upstream in {patch.fixed_in}" if patch.fixed_in else f"outside affected range {spec}"
                return False, f"{dist} {version}: {fixed}", installed
        return True, "; ".join(texts), installed

    # -- apply ----------------------------------------------------------------------
    def apply(
        self,
        *names: str,
        exclude: str | Iterable[str] = (),
        force: str | Iterable[str] = (),
        strict: bool | None = None,
    ) -> dict[str, PatchStatus]:
        cfg = _settings.resolve(self.names, self.defaults, names, exclude, force, strict)
        _settings.configure_logging()
        for name in cfg.selected:
            if name in cfg.disabled_env:
                self._set(name, "disabled", f"disabled by {_settings.ENV_DISABLE}", keep_active=True)
            elif name in cfg.disabled_arg:
                self._set(name, "disabled", "disabled by apply(exclude=...)", keep_active=True)
            elif self._records[name].state not in ("applied", "pending"):
                self._activate(name, forced=name in cfg.force)
            elif name in cfg.force:
                with self._lock:  # a pending patch forced now is forced when its import comes
                    if self._records[name].state == "pending":
                        self._records[name].forced = True
        report = self.status()
        counts: dict[str, int] = {}
        for n in cfg.selected:
            counts[report[n].state] = counts.get(report[n].state, 0) + 1
        _log().info(
            "paddlefix.apply(): %s | %s",
            ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing selected",
            "; ".join(f"{n}: {report[n].state} ({report[n].reason})" for n in cfg.selected),
        )
        if cfg.strict:
            bad = [
                report[n]
                for n in cfg.selected
                if report[n].state == "failed"
                or (n in cfg.explicit and report[n].state in ("skipped", "disabled"))
            ]
            if bad:
                raise PatchError(
                    "strict: cannot apply " + "; ".join(f"{s.name} is {s.state}: {s.reason}" for s in bad)
                )
        return report

    def _activate(self, name: str, forced: bool) -> None:
        patch = self._patches[name]
        if patch.apply is None:
            self._set(name, "skipped", "not implemented yet", keep_active=True)
            return
        ok, text, installed = self._gate(patch, forced)  # outside the lock: reads metadata
        with self._lock:
            record = self._records[name]
            if record.state in ("applied", "pending"):
                return
            record.installed = installed
            record.forced = forced
            if not ok:
                self._set(name, "skipped", text)
                return
            module = sys.modules.get(patch.module)
            waiting = module is None or getattr(getattr(module, "__spec__", None), "_initializing", False)
            if waiting:
                self._set(name, "pending", f"waiting for import of {patch.module}")
        if waiting:
            self._hook(patch.module)  # outside the lock: may fire at once
        else:
            self._run(name, forced, text, from_hook=False)

    def _hook(self, module: str) -> None:
        with self._lock:
            if module in self._hooked:
                return
            self._hooked.add(module)
        from .hooks import when_imported

        when_imported(module, self._on_import)

    def _on_import(self, module: types.ModuleType) -> None:
        """Post-import hook: apply the patches waiting for ``module``. Never raises."""
        with self._lock:
            self._hooked.discard(module.__name__)
            waiting = [
                n
                for n, p in self._patches.items()
                if p.module == module.__name__ and self._records[n].state == "pending"
            ]
        for name in waiting:
            record = self._records[name]
            try:
                ok, text, installed = self._gate(self._patches[name], record.forced)
                if not ok:
                    with self._lock:
                        record.installed = installed
                        if record.state == "pending":
                            self._set(name, "skipped", text)
                    continue
                self._run(name, record.forced, text, from_hook=True)
            except Exception as exc:  # a hook must never break the user's import
                with self._lock:
                    if record.state != "pending":  # reverted (or settled) meanwhile
                        continue
                    self._set(name, "failed", _describe(exc))
            if record.state == "failed":  # no apply() call reports this one: say it now
                warnings.warn(
                    f"paddlefix: {name} failed on import of {module.__name__}: {record.reason}",
                    PaddlefixWarning,
                    stacklevel=2,
                )

    def _run(self, name: str, forced: bool, gate_text: str, from_hook: bool) -> None:
        """Gates 4 and 5. The target module is imported; imports happen before the lock."""
        patch = self._patches[name]
        try:
            for mod in patch.imports:
                __import__(mod)
        except Exception as exc:
            with self._lock:
                state = self._records[name].state
                # Not over an applied patch, nor over a pending one reverted meanwhile.
                if state != "applied" and not (from_hook and state != "pending"):
                    self._set(name, "failed", f"import {mod} failed: {_describe(exc)}")
            return
        with self._lock:
            record = self._records[name]
            if record.state == "applied" or (from_hook and record.state != "pending"):
                return  # applied by another thread, or reverted while waiting
            record.forced = forced
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # a probe runs the library: its warnings are not the user's
                    finding = patch.probe() if patch.probe is not None else None
            except Exception as exc:
                if not forced:
                    self._set(name, "failed", f"probe raised {_describe(exc)}")
                    return
                finding = Finding(True, f"probe raised {_describe(exc)}")
            if finding is not None and not finding.present and not forced:
                self._set(name, "skipped", f"{gate_text}; probe: problem not present ({finding.detail})")
                return
            assert patch.apply is not None
            patcher = Patcher(self, patch, forced)
            try:
                patch.apply(patcher)
            except Exception as exc:
                self._undo(patcher.changes)
                self._set(name, "failed", f"apply raised {_describe(exc)}")
                return
            if finding is None:
                probe_text = "no probe"
            elif finding.present:
                probe_text = f"probe confirmed: {finding.detail}"
            else:
                probe_text = f"probe: problem not present ({finding.detail})"
            self._set(name, "applied", f"{'forced: ' if forced else ''}{gate_text}; {probe_text}")
            stale = {} if from_hook else self._stale_references(patcher.changes)
        for qualname, where in stale.items():
            shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
            warnings.warn(
                f"paddlefix patched {qualname} after {shown} took a reference to the original; "
                "those references stay unpatched (call paddlefix.apply() before importing them)",
                PaddlefixWarning,
                stacklevel=5,
            )

    def _stale_references(self, changes: list[_Change | _Callback]) -> dict[str, list[str]]:
        """Module globals that still hold an original we just replaced (as gevent warns)."""
        originals = {id(c.original): c for c in changes if isinstance(c, _Change) and callable(c.original)}
        if not originals:
            return {}
        stale: dict[str, list[str]] = {}
        seen: set[int] = set()
        for modname, module in list(sys.modules.items()):
            if not isinstance(module, types.ModuleType) or modname.startswith("paddlefix"):
                continue
            if id(module) in seen:  # one module under two names (__main__ / __mp_main__)
                continue
            seen.add(id(module))
            try:
                items = list(_own_dict(module).items())
            except Exception:
                continue
            for attr, value in items:
                change = originals.get(id(value))
                if change is not None and value is change.original:
                    stale.setdefault(change.qualname, []).append(f"{modname}.{attr}")
        return stale

    # -- revert ---------------------------------------------------------------------
    def revert(self, *names: str) -> dict[str, PatchStatus]:
        for n in names:
            if n not in self._patches:
                raise _settings.ConfigError(
                    f"revert(): unknown patch {n!r}; valid choices: {', '.join(self.names)}"
                )
        targets = set(names) if names else set(self._patches)
        with self._lock:
            mine = [c for c in self._journal if c.patch in targets]
            left = self._undo(mine)
            for name in targets:
                if self._records[name].state in ("applied", "pending"):
                    reason = "reverted by paddlefix.revert()"
                    if left.get(name):
                        reason += (
                            f", except {', '.join(left[name])}: replaced by something else since, "
                            "which may still call paddlefix's replacement; left alone"
                        )
                    self._set(name, "skipped", reason)
                    self._records[name].forced = False
        return self.status()

    def _undo(self, changes: list[_Change | _Callback]) -> dict[str, list[str]]:
        """Undo ``changes`` newest first. Caller holds the lock (or is inside apply).

        Returns, per patch, the attributes left alone because something else replaced them.
        """
        left: dict[str, list[str]] = {}
        for change in reversed(changes):
            try:
                self._journal.remove(change)
            except ValueError:
                pass
            if isinstance(change, _Callback):
                try:
                    change.fn()
                except Exception as exc:
                    warnings.warn(
                        f"paddlefix: reverting {change.patch} ({change.label}) failed: {exc}",
                        PaddlefixWarning,
                        stacklevel=3,
                    )
                continue
            own = _own_dict(change.owner)
            current = own.get(change.attr, _MISSING)
            self._ours.pop(id(change.new), None)
            if current is not change.new:
                left.setdefault(change.patch, []).append(change.qualname)
                warnings.warn(
                    f"paddlefix: {change.qualname} was replaced by something else after {change.patch} "
                    "patched it; left alone",
                    PaddlefixWarning,
                    stacklevel=3,
                )
            elif change.had_own:
                setattr(change.owner, change.attr, change.original)
            else:
                delattr(change.owner, change.attr)
            key = (id(change.owner), change.attr)
            if not any(isinstance(c, _Change) and (id(c.owner), c.attr) == key for c in self._journal):
                self._originals.pop(key, None)
        return left

    # -- reporting ------------------------------------------------------------------
    def _set(self, name: str, state: State, reason: str, keep_active: bool = False) -> None:
        """Record an outcome; with ``keep_active``, an applied or pending patch keeps its state."""
        with self._lock:
            record = self._records[name]
            if keep_active and record.state in ("applied", "pending"):
                return
            record.state = state
            record.reason = reason or state
        _log().debug("%s: %s (%s)", name, state, reason)

    def status(self) -> dict[str, PatchStatus]:
        installed = {n: self._installed(p) for n, p in self._patches.items()}  # outside the lock
        with self._lock:
            out = {}
            for name, patch in self._patches.items():
                record = self._records[name]
                if not record.installed:
                    record.installed = installed[name]
                targets = tuple(
                    c.qualname for c in self._journal if isinstance(c, _Change) and c.patch == name
                )
                out[name] = PatchStatus(
                    name=name,
                    state=record.state,
                    reason=record.reason,
                    summary=patch.summary,
                    default=patch.default,
                    requires=dict(patch.requires),
                    installed=dict(record.installed),
                    links=patch.links,
                    forced=record.forced,
                    targets=targets,
                )
            return out

    def get_original(self, owner: Any, attr: str) -> Any:
        saved = self._originals.get((id(owner), attr))
        if saved is not None and saved[0] is owner:
            if saved[1] is _MISSING:
                raise AttributeError(f"{_owner_name(owner)}.{attr} did not exist before paddlefix added it")
            return saved[1]
        own = _own_dict(owner)
        return own[attr] if attr in own else getattr(owner, attr)

    def is_patched(self, owner: Any, attr: str) -> bool:
        own = _own_dict(owner)
        return id(own.get(attr, _MISSING)) in self._ours


_MISSING = object()

_versions: dict[str, str | None] = {}


def _dist_version(dist: str) -> str | None:
    """Installed version of ``dist`` from its metadata (cached per process), or None."""
    if dist not in _versions:
        from importlib import metadata

        try:
            _versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            _versions[dist] = None
    return _versions[dist]
