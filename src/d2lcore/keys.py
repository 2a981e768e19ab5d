"""Cache keys from what a run reads: a function, the values it captures, its data.

:class:`Describer` turns a page's function into JSON-like data a key can hash: its code
(bytecode and constants, not where it sits), its defaults, the closure variables and
globals its code reads, recursively through the functions it calls, and the values they
hold (tensors by :func:`~d2lcore.cache.tensor_digest`, numbers, containers, dataclasses,
modules' weights). Code from d2lcore, the standard library or an installed package is
named, not read (:func:`~d2lcore.cache.code_fingerprint` and the versions cover it).
Anything it cannot read raises :class:`UnkeyableError` naming the value: nothing falls
back to an object's address, so nothing stale is served because a term was forgotten.
"""

from __future__ import annotations

import builtins
import dataclasses
import dis
import enum
import functools
import hashlib
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from d2lcore.cache import tensor_digest


class UnkeyableError(TypeError):
    """A value that a cache key cannot read; the message names it, its type and the fix."""


#: Methods whose receiver only collects what a run writes (a list of calls, a log). A
#: name a function uses for nothing else, or assigns (``global``, ``nonlocal``), is
#: the run's output, not its input, and stays out of the key.
COLLECTORS = frozenset({"append", "extend", "insert", "appendleft", "extendleft"})
_GLOBAL_OPS = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS", "STORE_GLOBAL",
               "DELETE_GLOBAL"}  # fmt: skip
_CLOSURE_OPS = {"LOAD_DEREF", "LOAD_CLASSDEREF", "LOAD_FROM_DICT_OR_DEREF", "STORE_DEREF",
                "DELETE_DEREF"}  # fmt: skip
_BUILTIN_CALLABLES = (types.BuiltinFunctionType, types.MethodWrapperType,
                      types.MethodDescriptorType, types.WrapperDescriptorType,
                      types.ClassMethodDescriptorType)  # fmt: skip


def reads(code: types.CodeType) -> tuple[list[str], list[str]]:
    """The global names and the closure variables that ``code`` reads, in its own body
    and in the functions and lambdas defined inside it; names it only collects into
    (:data:`COLLECTORS`) or assigns are left out."""
    read: dict[tuple[str, str], bool] = {}  # (scope, name) -> read as more than a collector
    written: set[tuple[str, str]] = set()

    def walk(c: types.CodeType, closure: frozenset[str]) -> None:
        ops = [op for op in dis.get_instructions(c) if op.opname != "EXTENDED_ARG"]
        for k, op in enumerate(ops):
            if op.opname in _GLOBAL_OPS:
                name = ("global", op.argval)
            elif op.opname in _CLOSURE_OPS and op.argval in closure:
                name = ("closure", op.argval)
            else:
                continue
            if op.opname.startswith(("STORE", "DELETE")):
                written.add(name)
                continue
            after = ops[k + 1] if k + 1 < len(ops) else None
            collects = (after is not None and after.opname in ("LOAD_METHOD", "LOAD_ATTR")
                        and after.argval in COLLECTORS)  # fmt: skip
            read[name] = read.get(name, False) or not collects
        for const in c.co_consts:
            if isinstance(const, types.CodeType):  # a nested function: the same globals
                walk(const, frozenset(n for n in const.co_freevars if n in closure))

    walk(code, frozenset(code.co_freevars))
    kept = sorted(name for name, is_read in read.items() if is_read and name not in written)
    return ([n for scope, n in kept if scope == "global"],
            [n for scope, n in kept if scope == "closure"])  # fmt: skip


@functools.cache
def library_version(module: str | None) -> str | None:
    """How a key names code of ``module``: ``""`` for ``d2lcore`` (its code is in
    :func:`code_fingerprint`) and Python's standard library, the version for an
    installed package (``torch``, ``numpy``, ...), ``None`` for the page's own code
    (``__main__``) and other files of the user's, which the key reads itself."""
    if not module or module == "__main__":
        return None
    top = module.partition(".")[0]
    if top == "d2lcore" or top in sys.stdlib_module_names:
        return ""
    loaded = sys.modules.get(module) or sys.modules.get(top)
    file = getattr(loaded, "__file__", None)
    if file is None or not {"site-packages", "dist-packages"} & set(Path(file).parts):
        return None
    return str(getattr(sys.modules.get(top), "__version__", ""))


def _path(path: list[str]) -> str:
    """``["fn", "f's global X", "[0]"]`` as ``fn → f's global X[0]``."""
    out = ""
    for part in path:
        out += part if not out or part.startswith((".", "[")) else f" → {part}"
    return out


class Describer:
    """Describes values for a cache key, as JSON-like data that changes whenever what
    they hold changes: a function by what it reads, a tensor by its digest.

    - A function defined in the page (or any file outside ``d2lcore``, Python's own and
      installed packages): its bytecode and constants (not its line numbers), its
      default arguments, its closure variables and the globals it reads
      (:func:`reads`), recursively into the functions, lambdas, ``functools.partial``
      objects and classes these hold. A function of ``d2lcore``, the standard library
      or an installed package by its qualified name (and the package's version), plus
      the closure variables of one made at run time.
    - Tensors (:func:`tensor_digest`) and NumPy arrays by dtype, shape and bytes;
      numbers, strings, booleans, ``None``, lists, tuples, dicts and sets (sorted) by
      their items; dataclasses by their fields; enums by name; an ``nn.Module`` by the
      class and public attributes of each of its modules and its ``state_dict`` (not
      its training mode); ``torch.device`` and ``torch.dtype`` by name; a
      ``torch.Generator`` by its state; a module by its name; a class by its qualified
      name (and, for a page's own class, its methods and attributes).
    - Anything else raises :class:`UnkeyableError`, which names the variable.

    One describer digests each tensor once, however many functions read it.
    """

    def __init__(self) -> None:
        self._digests: dict[int, tuple[object, str]] = {}  # id -> (kept alive, digest)
        self._seen: dict[int, object] = {}  # functions and classes described already
        self._open: set[int] = set()  # containers being described (to stop at a cycle)

    def describe(self, value: Any, name: str = "value") -> Any:
        """``value`` as JSON-like data; ``name`` is how an error names it."""
        return self._value(value, [name])

    # --------------------------------------------------------------------------

    def _value(self, v: Any, path: list[str]) -> Any:
        if v is None or type(v) in (bool, int, float, str):
            return v
        if isinstance(v, torch.Tensor):
            return {"tensor": self._digest(v, tensor_digest)}
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                self._refuse(v, path, "an array of Python objects")
            return {"ndarray": self._digest(v, _array_digest)}
        if isinstance(v, np.generic):
            return {"numpy": [str(v.dtype), self._value(v.item(), path)]}
        if isinstance(v, enum.Enum):
            return {"enum": [self._value(type(v), path), v.name]}
        if isinstance(v, (torch.device, torch.dtype)):
            return {type(v).__name__: str(v)}
        if isinstance(v, torch.Generator):
            return {"generator": [str(v.device), tensor_digest(v.get_state())]}
        if isinstance(v, types.ModuleType):
            return {"module": v.__name__}
        if isinstance(v, type):
            return self._class(v, path)
        if isinstance(v, (bool, int, float, str, complex, bytes, bytearray, range, slice,
                          PurePath)) or v is Ellipsis:  # fmt: skip
            return self._scalar(v)
        if id(v) in self._open:
            return {"cycle": type(v).__qualname__}
        self._open.add(id(v))
        try:
            return self._object(v, path)
        finally:
            self._open.discard(id(v))

    def _scalar(self, v: Any) -> Any:
        if isinstance(v, (bytes, bytearray)):
            return {"bytes": hashlib.sha256(v).hexdigest()}
        if isinstance(v, complex):
            return {"complex": [v.real, v.imag]}
        if isinstance(v, (range, slice)):
            return {type(v).__name__: [v.start, v.stop, v.step]}
        if isinstance(v, PurePath):
            return {"path": str(v)}
        if v is Ellipsis:
            return {"ellipsis": True}
        plain = next(t for t in (int, float, str) if isinstance(v, t))  # a subclass of one
        return {type(v).__qualname__: plain(v)}

    def _object(self, v: Any, path: list[str]) -> Any:
        if isinstance(v, nn.Module):
            return self._module(v, path)
        if dataclasses.is_dataclass(v):
            return {"dataclass": self._value(type(v), path),
                    "fields": {f.name: self._value(getattr(v, f.name), [*path, f".{f.name}"])
                               for f in dataclasses.fields(v)}}  # fmt: skip
        if isinstance(v, (list, tuple)):
            items = [self._value(x, [*path, f"[{i}]"]) for i, x in enumerate(v)]
            return self._typed(v, {"list" if isinstance(v, list) else "tuple": items}, path)
        if isinstance(v, dict):
            pairs = [[self._value(k, path), self._value(x, [*path, f"[{k!r}]"])]
                     for k, x in v.items()]  # insertion order: a run may iterate in it
            return self._typed(v, {"dict": pairs}, path)
        if isinstance(v, (set, frozenset)):
            items = [self._value(x, [*path, "{...}"]) for x in v]
            return {"set": sorted(items, key=lambda x: json.dumps(x, sort_keys=True))}
        if isinstance(v, types.SimpleNamespace):
            return {"namespace": self._value(vars(v), path)}
        if callable(v):
            return self._callable(v, path)
        self._refuse(v, path)

    def _typed(self, v: Any, desc: dict[str, Any], path: list[str]) -> dict[str, Any]:
        """``desc`` with the class of a subclass of list, tuple or dict (a ``NamedTuple``,
        ``torch.Size``)."""
        if type(v) not in (list, tuple, dict):
            desc["type"] = self._value(type(v), path)
        return desc

    def _digest(self, v: Any, digest: Callable[[Any], str]) -> str:
        hit = self._digests.get(id(v))
        if hit is None:
            hit = self._digests[id(v)] = (v, digest(v))
        return hit[1]

    def _module(self, m: nn.Module, path: list[str]) -> Any:
        layers = []
        for name, sub in m.named_modules():
            where = [*path, f".{name}"] if name else path
            public = {k: self._value(x, [*where, f".{k}"]) for k, x in sorted(vars(sub).items())
                      if not k.startswith("_") and k != "training"}  # fmt: skip
            layers.append([name, self._value(type(sub), path), public])
        state = [[k, self._value(x, [*path, f".state_dict()[{k!r}]"])]
                 for k, x in m.state_dict().items()]  # fmt: skip
        return {"module": layers, "state": state}

    def _callable(self, v: Any, path: list[str]) -> Any:
        if isinstance(v, types.FunctionType):
            return self._function(v, path)
        if isinstance(v, types.MethodType):
            return {"method": self._value(v.__func__, path),
                    "self": self._value(v.__self__, [*path, ".__self__"])}  # fmt: skip
        if isinstance(v, functools.partial):
            return {"partial": self._value(v.func, path),
                    "args": self._value(list(v.args), [*path, ".args"]),
                    "keywords": self._value(dict(v.keywords), [*path, ".keywords"])}  # fmt: skip
        if isinstance(v, _BUILTIN_CALLABLES):
            owner = getattr(v, "__objclass__", None) or getattr(v, "__self__", None)
            name = getattr(v, "__qualname__", v.__name__)
            if owner is None or isinstance(owner, (types.ModuleType, type)):
                module = getattr(v, "__module__", None) or getattr(owner, "__module__", "")
                return {"builtin": f"{module}.{name}"}
            return {"builtin": name, "self": self._value(owner, [*path, ".__self__"])}
        if hasattr(v, "cache_info") and hasattr(v, "__wrapped__"):  # functools.cache
            return {"cached": self._value(v.__wrapped__, path)}
        module, name = getattr(v, "__module__", None), getattr(v, "__qualname__", None)
        version = library_version(module) if isinstance(module, str) else None
        if isinstance(name, str) and version is not None:  # a library's function object
            return {"callable": f"{module}.{name}", "version": version}  # (np.mean, a ufunc)
        self._refuse(v, path)

    def _function(self, fn: types.FunctionType, path: list[str]) -> Any:
        code = fn.__code__
        module = fn.__globals__.get("__name__")
        desc: dict[str, Any] = {"function": f"{module}.{code.co_qualname}"}
        if id(fn) in self._seen:
            return {**desc, "seen": True}
        self._seen[id(fn)] = fn
        version = library_version(module)
        if version is not None:
            desc["version"] = version
            if "<locals>" not in code.co_qualname:
                return desc  # its code is the library's; made at run time, it captures values
        else:
            desc["code"] = self._code(code)
        global_names, closure_names = reads(code)
        who = fn.__qualname__
        cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=True))
        desc["closure"] = {n: self._cell(cells[n], [*path, f"{who}'s closure variable {n}"])
                           for n in closure_names}  # fmt: skip
        params = code.co_varnames[:code.co_argcount]
        defaults = fn.__defaults__ or ()
        desc["defaults"] = [self._value(d, [*path, f"{who}'s default {p}"])
                            for p, d in zip(params[len(params) - len(defaults):], defaults,
                                            strict=True)]  # fmt: skip
        desc["kwdefaults"] = {k: self._value(d, [*path, f"{who}'s default {k}"])
                              for k, d in (fn.__kwdefaults__ or {}).items()}  # fmt: skip
        if version is None:
            desc["globals"] = {n: self._global(fn, n, [*path, f"{who}'s global {n}"])
                               for n in global_names}  # fmt: skip
        return desc

    def _cell(self, cell: types.CellType, path: list[str]) -> Any:
        try:
            contents = cell.cell_contents
        except ValueError:  # not assigned yet
            return {"empty": True}
        return self._value(contents, path)

    def _global(self, fn: types.FunctionType, name: str, path: list[str]) -> Any:
        if name in fn.__globals__:
            return self._value(fn.__globals__[name], path)
        if hasattr(builtins, name):
            return {"builtin": name}
        return {"undefined": name}  # a NameError when it runs

    def _code(self, code: types.CodeType) -> Any:
        """Bytecode, names and constants: what runs, without the file and line numbers
        (a cell moved down the page keeps its key)."""
        body = hashlib.sha256(code.co_code + code.co_exceptiontable).hexdigest()
        consts = [self._code(c) if isinstance(c, types.CodeType) else self._value(c, ["const"])
                  for c in code.co_consts]  # fmt: skip
        return {"name": code.co_qualname, "bytecode": body, "consts": consts,
                "names": list(code.co_names), "varnames": list(code.co_varnames),
                "freevars": list(code.co_freevars), "cellvars": list(code.co_cellvars),
                "signature": [code.co_argcount, code.co_posonlyargcount,
                              code.co_kwonlyargcount, code.co_flags]}  # fmt: skip

    def _class(self, cls: type, path: list[str]) -> Any:
        desc: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
        version = library_version(cls.__module__)
        if version is not None:
            return {**desc, "version": version}
        if id(cls) in self._seen:
            return {**desc, "seen": True}
        self._seen[id(cls)] = cls
        where = [*path, cls.__qualname__]
        desc["bases"] = [self._value(b, where) for b in cls.__bases__]
        generated = dataclasses.is_dataclass(cls)
        attrs = {}
        for name, v in vars(cls).items():
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            elif isinstance(v, property):
                v = [v.fget, v.fset, v.fdel]
            if name.startswith("__") and name.endswith("__"):
                # Python's own entries (__dict__, __doc__, ...) say nothing a run reads;
                # a dataclass's generated methods follow from its fields (below).
                if not isinstance(v, (types.FunctionType, list)) or (
                        generated and isinstance(v, types.FunctionType)
                        and v.__code__.co_filename == "<string>"):  # fmt: skip
                    continue
            elif name == "_abc_impl" or (hasattr(type(v), "__get__") and not callable(v)
                                         and library_version(type(v).__module__) is not None):
                continue  # an ABC's registry; a NamedTuple's or __slots__' field accessors
            attrs[name] = self._value(v, [*where, f".{name}"])
        desc["attributes"] = attrs
        if generated:
            missing = dataclasses.MISSING
            desc["fields"] = [[f.name, f.init,
                               None if f.default is missing else [self._value(f.default, where)],
                               None if f.default_factory is missing
                               else [self._value(f.default_factory, where)]]
                              for f in dataclasses.fields(cls)]  # fmt: skip
        return desc

    def _refuse(self, v: Any, path: list[str], what: str | None = None) -> NoReturn:
        kind = what or f"a {type(v).__module__}.{type(v).__qualname__}"
        raise UnkeyableError(
            f"cannot compute the cache key: {_path(path)} is {kind}, which the key cannot "
            "read. The key is computed from what a run reads (its code, the values it "
            "captures, its data) and reads tensors, NumPy arrays, numbers, strings, None, "
            "lists, tuples, dicts, sets, dataclasses, enums, nn.Modules, torch devices, "
            "dtypes and generators, modules, classes and functions. Let the function read "
            "such values instead (the tensors or numbers this object holds, or build the "
            "object inside the function), or pass cache=False to train without a cache. "
            "What the key cannot see at all (a file read inside the function) goes in "
            "depends_on=."
        )


def _array_digest(a: np.ndarray) -> str:
    """A hash of a NumPy array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{a.dtype.str} {a.shape}\0".encode())
    h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()
