"""Recover tensors from a whole pickled ``torch.save(model)`` file without importing or running its code.

FaceX-Zoo's SDK ships models as pickled ``nn.Module`` objects whose classes are not available here, and
``torch.load(weights_only=True)`` refuses them. ``RestrictedUnpickler`` resolves globals from a whitelist only:

* tensor rebuild functions and storage types → our own rebuild functions (never torch's general machinery);
* plain containers (``collections.OrderedDict``, ``builtins.set``/``frozenset``/``list``/``dict``/``tuple``);
* module classes (``torch.nn.modules.*``, the FaceX-Zoo detector classes, torchvision's ``IntermediateLayerGetter``)
  → inert ``ModuleStub`` subclasses that only record their pickled state (``_modules``, ``_parameters``, ...);
* the legacy ``torch.nn.backends.thnn._get_thnn_function_backend`` → a function that returns ``None``.

Every other global (``os.system``, ``subprocess.Popen``, ``builtins.eval``, ...) raises ``pickle.UnpicklingError``
naming it. ``load_pickled_module_state_dict(path)`` walks the stub tree into a flat ``state_dict``.
Both torch file layouts are read: the zip layout (``*/data.pkl`` + ``*/data/<key>``) and the legacy layout
(magic, protocol, sys-info and object pickles, then the storage key list and each storage's raw bytes).
"""
from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple

import torch

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

STORAGE_DTYPES: Dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
# Module classes that may appear in the pickle; each becomes an inert stub.
STUB_MODULE_PREFIXES = ("torch.nn.modules.",)
STUB_CLASSES = {
    ("models.network_def.retinaface_def", name)
    for name in ("RetinaFace", "FPN", "SSH", "ClassHead", "BboxHead", "LandmarkHead", "MobileNetV1")
} | {("torchvision.models._utils", "IntermediateLayerGetter")}
CONTAINERS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}


class ModuleStub:
    """Stands in for a pickled ``nn.Module`` class: records the pickled instance state and does nothing else."""

    pickled_class: str = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.pickled_class}: expected a dict state, got {type(state).__name__}")
        self.state = state

    def __repr__(self) -> str:
        return f"ModuleStub({self.pickled_class})"


class StorageType:
    """Marker for a pickled storage class (e.g. ``torch.FloatStorage``): only carries its dtype."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...],
                    requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    """A view into the flat storage tensor (filled later for legacy files, so it must stay a view)."""
    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError(f"tensor rebuild expects a storage, got {type(storage).__name__}")
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool = False, backward_hooks: Any = None) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter rebuild expects a tensor, got {type(data).__name__}")
    return data


def _rebuild_parameter_with_state(data: torch.Tensor, requires_grad: bool, backward_hooks: Any,
                                  state: Any) -> torch.Tensor:
    return _rebuild_parameter(data)


def _no_backend() -> None:
    """Replaces the legacy ``_get_thnn_function_backend()`` call stored in old module pickles."""
    return None


REBUILD_FUNCTIONS: Dict[Tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.nn.backends.thnn", "_get_thnn_function_backend"): _no_backend,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only whitelisted globals; storages come from ``storage_loader(key, dtype, numel)``."""

    def __init__(self, file: BinaryIO, storage_loader: Optional[Callable[[str, torch.dtype, int], torch.Tensor]] = None,
                 source: str = "<pickle>") -> None:
        super().__init__(file)
        self.storage_loader = storage_loader
        self.source = source
        self._stub_types: Dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in REBUILD_FUNCTIONS:
            return REBUILD_FUNCTIONS[key]
        if key in CONTAINERS:
            return CONTAINERS[key]
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        if module == "torch" and name in {"float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8",
                                          "int8", "int16", "bool"}:
            return getattr(torch, name)
        if key in STUB_CLASSES or (module.startswith(STUB_MODULE_PREFIXES) and name[:1].isupper()):
            return self._stub_type(f"{module}.{name}")
        raise pickle.UnpicklingError(
            f"{self.source}: refused global '{module}.{name}' (only tensors, containers and known module classes "
            f"mapped to stubs are allowed)"
        )

    def _stub_type(self, qualified_name: str) -> type:
        if qualified_name not in self._stub_types:
            stub_name = "Stub_" + qualified_name.rsplit(".", 1)[-1]
            self._stub_types[qualified_name] = type(stub_name, (ModuleStub,), {"pickled_class": qualified_name})
        return self._stub_types[qualified_name]

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and pid and pid[0] == "module":
            # Legacy files pickle module classes as (tag, class, source file, source text); the class was already
            # resolved through find_class (so it is a stub), and the recorded source text is ignored.
            if len(pid) >= 2 and isinstance(pid[1], type) and issubclass(pid[1], ModuleStub):
                return pid[1]
            raise pickle.UnpicklingError(f"{self.source}: module reference {pid[1:2]!r} did not resolve to a stub")
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.source}: unsupported persistent id {pid!r}")
        storage_type, key, numel = pid[1], str(pid[2]), int(pid[4])  # pid[3]: device, ignored (CPU)
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"{self.source}: storage views (legacy view metadata) are not supported")
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"{self.source}: storage {key} has no whitelisted storage type")
        if self.storage_loader is None:
            raise pickle.UnpicklingError(f"{self.source}: pickle references storage {key} but no storage is available")
        return self.storage_loader(key, storage_type.dtype, numel)


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` (no storages) with the whitelist; used for tests and plain container pickles."""
    return RestrictedUnpickler(io.BytesIO(data), source=source).load()


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _load_legacy(path: Path) -> Any:
    with open(path, "rb") as handle:
        header = RestrictedUnpickler(handle, source=str(path))
        if header.load() != LEGACY_MAGIC_NUMBER:
            raise pickle.UnpicklingError(f"{path}: not a torch file (bad magic number)")
        protocol = RestrictedUnpickler(handle, source=str(path)).load()
        if protocol != LEGACY_PROTOCOL_VERSION:
            raise pickle.UnpicklingError(f"{path}: unsupported legacy protocol version {protocol}")
        sys_info = RestrictedUnpickler(handle, source=str(path)).load()
        if not sys_info.get("little_endian", True):
            raise pickle.UnpicklingError(f"{path}: big-endian files are not supported")
        storages: Dict[str, torch.Tensor] = {}

        def storage_loader(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            if key not in storages:
                storages[key] = torch.empty(numel, dtype=dtype)
            return storages[key]

        obj = RestrictedUnpickler(handle, storage_loader, source=str(path)).load()
        storage_keys: List[str] = RestrictedUnpickler(handle, source=str(path)).load()
        for key in storage_keys:
            if key not in storages:
                raise pickle.UnpicklingError(f"{path}: storage {key} is listed but never referenced")
            flat = storages[key]
            (numel,) = struct.unpack("<q", handle.read(8))
            if numel != flat.numel():
                raise pickle.UnpicklingError(f"{path}: storage {key} has {numel} elements, expected {flat.numel()}")
            nbytes = numel * _element_size(flat.dtype)
            raw = handle.read(nbytes)
            if len(raw) != nbytes:
                raise pickle.UnpicklingError(f"{path}: file truncated inside storage {key}")
            if numel:
                flat.copy_(torch.frombuffer(bytearray(raw), dtype=flat.dtype))
        if handle.read(1):
            raise pickle.UnpicklingError(f"{path}: unexpected bytes after the last storage")
    return obj


def _load_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise pickle.UnpicklingError(f"{path}: expected one data.pkl in the zip, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]

        def storage_loader(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
            raw = archive.read(f"{prefix}data/{key}")
            if len(raw) != numel * _element_size(dtype):
                raise pickle.UnpicklingError(f"{path}: storage {key} has {len(raw)} bytes, expected "
                                             f"{numel} x {dtype}")
            return torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)

        return RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), storage_loader, source=str(path)).load()


def restricted_load(path: str | Path) -> Any:
    """Load a torch file (zip or legacy layout) with the restricted unpickler; modules come back as stubs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pickled model not found: {path}")
    return _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)


def stub_state_dict(root: ModuleStub) -> "OrderedDict[str, torch.Tensor]":
    """Walk a stub module tree like ``nn.Module.state_dict``: parameters, then persistent buffers, then children."""
    result: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def walk(node: ModuleStub, prefix: str) -> None:
        if not isinstance(node, ModuleStub):
            raise pickle.UnpicklingError(f"'{prefix or '<root>'}' is a {type(node).__name__}, expected a module")
        state = node.state
        non_persistent = set(state.get("_non_persistent_buffers_set", ()))
        for name, tensor in state.get("_parameters", {}).items():
            if tensor is not None:
                result[prefix + name] = tensor.clone()
        for name, tensor in state.get("_buffers", {}).items():
            if tensor is not None and name not in non_persistent:
                result[prefix + name] = tensor.clone()
        for name, child in state.get("_modules", {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(root, "")
    return result


def load_pickled_module_state_dict(path: str | Path) -> "OrderedDict[str, torch.Tensor]":
    """``state_dict`` of a whole pickled ``nn.Module`` file, recovered without importing its classes."""
    root = restricted_load(path)
    if not isinstance(root, ModuleStub):
        raise pickle.UnpicklingError(f"{path}: expected a pickled module, got {type(root).__name__}")
    return stub_state_dict(root)
