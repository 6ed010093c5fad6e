"""The rparallel kernel against jupyter_kernel_test, the Jupyter project's
conformance suite for kernels (message schemas, replies, outputs).

Plus the installed kernelspec itself.
"""

from __future__ import annotations

import os

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import start_new_kernel
import jupyter_kernel_test

from kernel_helpers import IS_RPARALLEL, KERNEL_NAME, kernel_pid, shutdown_and_check

pytestmark = pytest.mark.timeout(120)


# (subclassed via the module so that pytest does not also collect the base class)
class RparallelKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = KERNEL_NAME
    language_name = "python"
    file_extension = ".py"

    @classmethod
    def setUpClass(cls) -> None:
        cls.km, cls.kc = start_new_kernel(kernel_name=cls.kernel_name, startup_timeout=60)
        cls.pid = kernel_pid(cls.km)

    @classmethod
    def tearDownClass(cls) -> None:
        # polite shutdown, then: the kernel's process must be gone
        shutdown_and_check(cls.km, cls.kc)

    code_hello_world = "print('hello, world')"

    code_stderr = "import sys; print('test', file=sys.stderr)"

    completion_samples = [
        {"text": "zi", "matches": {"zip"}},
        {"text": "divm", "matches": {"divmod"}},
        {"text": "isinst", "matches": {"isinstance"}},
    ]

    complete_code_samples = [
        "x = 1",
        "print('hello')",
        "import os",
        "raise ValueError('x')",
        "for i in range(3):\n    print(i)\n",
    ]
    incomplete_code_samples = [
        "for i in range(3):",
        "def f(x):",
        "x = (1,",
        "x = [1, 2",
        "'''abc",
        "if True:\n    x = 1",
    ]
    invalid_code_samples = [
        "= 1",
        "for = 1",
        "1 +* 2",
        "(]",
    ]

    code_generate_error = "raise ValueError('x')"

    code_execute_result = [
        {"code": "6*7", "result": "42"},
        {"code": "'a' * 3", "result": "'aaa'"},
        {"code": "[1, 2.5, None]", "result": "[1, 2.5, None]"},
        {"code": "{'k': (1, 2)}", "result": "{'k': (1, 2)}"},
    ]

    code_display_data = [
        {"code": "display(42)", "mime": "text/plain"},
        {
            "code": (
                "class _H:\n"
                "    def _repr_html_(self):\n"
                "        return '<b>bold</b>'\n"
                "display(_H())"
            ),
            "mime": "text/html",
        },
    ]

    # glob pattern (as IPython's history search) matching the code "6*7"
    code_history_pattern = "6*7"
    supported_history_operations = ("tail", "range", "search")

    code_inspect_sample = "zip"

    code_clear_output = "clear_output()"


# ---------------------------------------------------------------------------
# the installed kernelspec


@pytest.mark.skipif(not IS_RPARALLEL, reason="checks the rparallel kernelspec")
def test_kernelspec_installed():
    spec = KernelSpecManager().get_kernel_spec("rparallel")
    assert spec.language == "python"
    assert "rparallel" in spec.display_name, spec.display_name
    assert spec.interrupt_mode == "message", (
        "the embedded interpreter has no SIGINT handler of its own; "
        f"the kernelspec must say interrupt_mode 'message', got {spec.interrupt_mode!r}"
    )
    argv = spec.argv
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK), argv
    assert "kernel" in argv, argv
    assert "{connection_file}" in argv, argv
    # installed under .venv (JUPYTER_PATH), not in the user's home
    assert spec.resource_dir.startswith(os.environ["JUPYTER_PATH"].split(os.pathsep)[0]), (
        spec.resource_dir
    )


@pytest.mark.skipif(not IS_RPARALLEL, reason="checks the rparallel kernelspec")
def test_kernelspec_has_logos():
    """The Launcher and the notebook's kernel indicator show the kernel's
    logo: PNGs of 32 and 64 pixels and an SVG, as Jupyter looks for them."""
    # Jupyter server lists every `logo-*` file of the kernelspec's directory.
    resource_dir = KernelSpecManager().get_kernel_spec("rparallel").resource_dir
    for size in (32, 64):
        with open(os.path.join(resource_dir, f"logo-{size}x{size}.png"), "rb") as f:
            png = f.read()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), size
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
        assert (width, height) == (size, size), (width, height)
    with open(os.path.join(resource_dir, "logo-svg.svg")) as f:
        assert f.read().lstrip().startswith("<svg")
