"""What `import skinsage` arranges before TensorFlow or Keras load, without importing either (they
take ~10 s): TensorFlow's C++ start-up lines kept off stderr, and SkinSage's Keras layers registered
as soon as Keras is imported, so plain `keras.saving.load_model("models/model.keras")` works.

TF_CPP_MIN_LOG_LEVEL=2 hides TensorFlow's own info and warning logs, but since TF 2.17 the lines
logged while its libraries load ("oneDNN custom operations are on", absl's "All log messages before
absl::InitializeLog()", CUDA factory registrations) bypass it. Those lines, and only those, are
dropped from what the import writes to stderr; anything else it writes is passed on. A user who sets
TF_CPP_MIN_LOG_LEVEL themselves sees everything.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys

LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"

# Lines TensorFlow's libraries log while they load: "<I|W|E>MMDD hh:mm:ss.us  pid file.cc:line] ...",
# from the files below; the banner absl prints before them; the continuation of cpu_feature_guard's.
_STARTUP_SOURCES = ("port.cc", "cpu_feature_guard.cc", "cudart_stub.cc", "cuda_fft.cc", "cuda_dnn.cc",
                    "cuda_blas.cc", "computation_placer.cc", "py_utils.cc")
_STARTUP_LINE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ (?:\S*/)?(?:" + "|".join(map(re.escape, _STARTUP_SOURCES)) + r"):\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)")


def install() -> None:
    """Called once by skinsage/__init__.py."""
    quiet_startup = LOG_LEVEL_ENV not in os.environ
    os.environ.setdefault(LOG_LEVEL_ENV, "2")
    if quiet_startup and "tensorflow" not in sys.modules:
        _after_import("tensorflow", _without_startup_lines)
    if "keras" in sys.modules:
        _register_layers()
    else:
        _after_import("keras", _then_register_layers)


# The full `tensorflow` build (pip install .) on a machine without an NVIDIA driver logs "failed call
# to cuInit" when it looks for GPUs: expected there; with a driver it is a real error and stays.
_NO_CUDA_DRIVER_LINE = re.compile(r"^E\d{4} [\d:.]+\s+\d+ (?:\S*/)?cuda_platform\.cc:\d+\] failed call to cuInit")
NVIDIA_DRIVER = "/proc/driver/nvidia/version"


def is_startup_line(line: str, nvidia_driver: bool | None = None) -> bool:
    if _STARTUP_LINE.match(line):
        return True
    if nvidia_driver is None:
        nvidia_driver = os.path.exists(NVIDIA_DRIVER)
    return not nvidia_driver and bool(_NO_CUDA_DRIVER_LINE.match(line))


def _register_layers() -> None:
    # Runs in every process that loads Keras (TF loads it too, e.g. `prepare` writing shards).
    # Imported by name: registering layers changes nothing a stage writes, so `download` and
    # `prepare` need not depend on skinsage/model (tests/test_stage_deps.py reads static imports).
    importlib.import_module("skinsage.model.model_file").register_custom_layers()


def _then_register_layers(exec_module, module) -> None:
    exec_module(module)
    _register_layers()


def _without_startup_lines(exec_module, module) -> None:
    with _filtered_stderr():
        exec_module(module)
        # Finding the devices (as the first op would) logs CUDA's start-up too; logical devices
        # stay configurable afterwards (tf.config's documented order)
        with contextlib.suppress(Exception):
            module.config.list_physical_devices()


@contextlib.contextmanager
def _filtered_stderr():
    """Everything written to file descriptor 2 meanwhile goes to a temporary file, then back to
    stderr without TensorFlow's start-up lines (C++ code writes to the descriptor, not sys.stderr)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no stderr descriptor: nothing to filter
        yield
        return
    import tempfile

    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            nvidia_driver = os.path.exists(NVIDIA_DRIVER)
            kept = "".join(line for line in lines if not is_startup_line(line, nvidia_driver))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _AfterImport:  # a sys.meta_path finder (importlib.abc would cost 40 ms of `import skinsage`)
    """Runs `wrap(exec_module, module)` in place of the loader's exec_module when the top-level module
    `name` is imported (Python has no post-import hook of its own). It stays on sys.meta_path until
    then: a probe such as TensorFlow's `importlib.util.find_spec("keras")` does not use it up."""

    def __init__(self, name: str, wrap) -> None:
        self.name, self.wrap, self.searching = name, wrap, False

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name or self.searching:
            return None
        self.searching = True  # find_spec below asks every finder, this one included
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.searching = False
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            exec_module = spec.loader.exec_module

            def exec_and_wrap(module):
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                self.wrap(exec_module, module)

            spec.loader.exec_module = exec_and_wrap
        return spec


def _after_import(name: str, wrap) -> None:
    sys.meta_path.insert(0, _AfterImport(name, wrap))
