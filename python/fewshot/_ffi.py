"""cffi (ABI mode) over libfewshot.so: the declarations are read from the installed (or
checked-out) public header include/fewshot/api.h at import time, so no compiler is
needed and the binding cannot drift from the C API."""
import os
import re
from pathlib import Path

from cffi import FFI


def _library_path():
    """FEWSHOT_LIB, else the build tree of the checkout this package sits in, else the
    installed library (found by the dynamic loader: make install puts it in PREFIX/lib)."""
    env = os.environ.get("FEWSHOT_LIB")
    if env:
        return Path(env)
    built = Path(__file__).resolve().parent.parent.parent / "build" / "libfewshot.so"
    if built.exists():
        return built
    return None


def _header_dir(libpath):
    """include/fewshot beside the library (build/ -> the checkout's include/, PREFIX/lib ->
    PREFIX/include), FEWSHOT_INCLUDE, or the usual prefixes."""
    candidates = []
    if os.environ.get("FEWSHOT_INCLUDE"):
        candidates.append(Path(os.environ["FEWSHOT_INCLUDE"]) / "fewshot")
    if libpath is not None:
        candidates.append(libpath.resolve().parent.parent / "include" / "fewshot")
    candidates += [Path(p) / "include" / "fewshot" for p in ("/usr/local", "/usr")]
    for c in candidates:
        if (c / "api.h").exists():
            return c
    raise ImportError("fewshot: cannot find fewshot/api.h (looked in "
                      + ", ".join(str(c) for c in candidates) + "); set FEWSHOT_INCLUDE to PREFIX/include")


def _declarations(text):
    """A C header without comments and preprocessor lines (what cffi's cdef parses)."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _cdef(include_dir):
    err = (include_dir / "error.h").read_text()
    fs_error = re.search(r"typedef struct \{[^}]*\} fs_error;", err)
    if not fs_error:
        raise ImportError(f"fewshot: {include_dir / 'error.h'}: no fs_error typedef")
    return fs_error.group(0) + "\n" + _declarations((include_dir / "api.h").read_text())


_libpath = _library_path()
CDEF = _cdef(_header_dir(_libpath))
ffi = FFI()
ffi.cdef(CDEF)
try:
    lib = ffi.dlopen(str(_libpath) if _libpath is not None else "libfewshot.so.0")
except OSError as e:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"fewshot: cannot load the shared library ({e}); build it with `make lib` in the "
        "repository, `make install` it, or set FEWSHOT_LIB to its path") from None
