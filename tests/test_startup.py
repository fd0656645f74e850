"""What `import skinsage` arranges (skinsage/startup.py): TensorFlow's start-up lines off stderr
without hiding anything else, `-q` meaning errors only, and plain `keras.saving.load_model` working
after `import skinsage` -- each in a fresh interpreter, as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from tiny_model import noise, save, save_tiny_model, tiny_params

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path, **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment["PYTHONPATH"] = os.pathsep.join([str(ROOT), environment.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], check=False, cwd=cwd, env={**environment, **env},
                          capture_output=True, text=True, timeout=300)


def test_quiet_predict_writes_nothing_to_stderr(model_path, tmp_path):
    photo = save(Image.fromarray(noise(1)), tmp_path / "photo.png")
    result = python("import sys; from skinsage.app.cli import main; sys.argv[0] = 'skinsage'; "
                    f"raise SystemExit(main(['-q', 'predict', '--model', {str(model_path)!r}, "
                    f"{str(photo)!r}, '--format', 'csv']))", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("path,") and str(photo) in result.stdout
    # an error is still an error under -q
    result = python("from skinsage.app.cli import main; "
                    f"raise SystemExit(main(['-q', 'predict', '--model', 'missing.keras', {str(photo)!r}]))", tmp_path)
    assert result.returncode == 1 and result.stderr == "error: missing.keras: no such model file\n"


def test_tensorflow_import_is_silent_and_only_startup_lines_are_dropped(tmp_path):
    """Unless the user sets TF_CPP_MIN_LOG_LEVEL: then SkinSage leaves TensorFlow's output alone,
    and every line this TensorFlow prints on import is one of the known start-up lines."""
    code = "import skinsage, tensorflow"
    filtered = python(code, tmp_path)
    assert filtered.returncode == 0 and filtered.stderr == "", filtered.stderr
    unfiltered = python(code, tmp_path, TF_CPP_MIN_LOG_LEVEL="2")
    assert unfiltered.returncode == 0, unfiltered.stderr
    from skinsage.startup import is_startup_line
    assert all(is_startup_line(line) for line in unfiltered.stderr.splitlines()), unfiltered.stderr


def test_only_tensorflow_startup_lines_are_dropped(tmp_path):
    """Written to file descriptor 2 (as C++ code does) while TensorFlow loads: the known start-up
    lines go, everything else (a real error, a Python warning) comes through in order."""
    code = r"""
import os, sys
from skinsage import startup
with startup._filtered_stderr():
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
    os.write(2, b"I0000 00:00:1796398679.070483    6496 port.cc:153] oneDNN custom operations are on.\n")
    os.write(2, b"E0000 00:00:1796398679.070483    6496 cuda_dnn.cc:8310] Unable to register cuDNN factory\n")
    os.write(2, b"E0000 00:00:1796398679.070483    6496 op_kernel.cc:1840] OP_REQUIRES failed: real trouble\n")
    print("a Python warning", file=sys.stderr)
    os.write(2, b"To enable the following instructions: AVX2 FMA, in other operations, "
                b"rebuild TensorFlow with the appropriate compiler flags.\n")
print("after", file=sys.stderr)
"""
    result = python(code, tmp_path)
    assert result.returncode == 0
    assert result.stderr.splitlines() == [
        "E0000 00:00:1796398679.070483    6496 op_kernel.cc:1840] OP_REQUIRES failed: real trouble",
        "a Python warning", "after"]


def test_keras_load_model_works_after_import_skinsage(tmp_path):
    """No `import skinsage.model...`: importing the package registers its layers once Keras loads,
    while `import skinsage` alone still loads neither TensorFlow nor Keras."""
    result = python("import sys, skinsage; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
    # a model with a SkinSage layer (logit adjustment, as train saves it with a tau), saved here
    from skinsage.model.architectures import build_cnn
    from skinsage.model.logit_adjustment import with_adjustment

    model = with_adjustment(build_cnn(3, tiny_params().model_params), np.full(3, 1 / 3), 0.5)
    path = save_tiny_model(tmp_path / "model.keras", model=model)
    load = f"keras.saving.load_model({str(path)!r}).get_layer('logit_adjustment').__class__.__module__"
    for imports in ("import skinsage, keras", "import keras, skinsage"):  # either order
        result = python(f"{imports}; print({load})", tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == "skinsage.model.layers"
    result = python(f"import keras; print({load})", tmp_path)  # without SkinSage: Keras cannot
    assert result.returncode != 0 and "Could not locate class" in result.stderr


def test_cuda_init_failure_is_dropped_only_where_there_is_no_nvidia_driver():
    """The full TensorFlow build looks for GPUs and logs "failed call to cuInit" where there are none:
    noise on a CPU-only machine, a real error where an NVIDIA driver is installed."""
    from skinsage.startup import is_startup_line

    line = ("E0000 00:00:1796402079.998170   15609 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
            "CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
    assert is_startup_line(line, nvidia_driver=False)
    assert not is_startup_line(line, nvidia_driver=True)
    assert not is_startup_line("E0000 00:00:1.0   15609 cuda_platform.cc:52] something else", nvidia_driver=False)


def test_logical_devices_stay_configurable_after_import(tmp_path):
    """Finding the devices at import must not initialise them: tf.distribute's tests split the CPU."""
    result = python("import skinsage, tensorflow as tf; cpu = tf.config.list_physical_devices('CPU')[0]; "
                    "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
                    "print(len(tf.config.list_logical_devices('CPU')))", tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == "2", result.stderr

