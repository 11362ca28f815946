"""Triton Inference Server: the binary shipped inside `nvidia-pytriton`, run directly.

We start `tritonserver` ourselves (not through PyTriton's Python API) so that models are
ordinary Python-backend model folders in a model repository, loaded and swapped with
explicit `load_model` calls.

Two things make the Python backend work with a pyenv-built virtual environment:

* the backend stub is linked against Debian's `libpython3.11`, so it must run a Debian
  `python3.11`; we make a small "stub environment" from `/usr/bin/python3.11` whose one
  `.pth` file adds the main environment's site-packages (torch, peft, ...), and put its
  `bin/` first on the server's PATH;
* the stub puts the server's working directory on `sys.path`, so the server starts from
  an empty folder.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path
from urllib.parse import urlsplit

from deploy.errors import MissingToolError, StackError
from deploy.local.service import Health, LaunchSpec, PortSpec, Service, http_health
from deploy.settings import env_var_for

logger = logging.getLogger(__name__)

#: The interpreter the Python-backend stub is linked against (Debian's libpython3.11).
STUB_PYTHON = Path("/usr/bin/python3.11")
STUB_PYTHON_VERSION = "3.11"
STUB_NAME = "triton_python_backend_stub"
_PTH_NAME = "flywheel-main-venv.pth"
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class TritonService(Service):
    """Triton Inference Server with the Python backend, in explicit model-control mode."""

    name = "triton"
    #: A dead tritonserver (kill -9, out of memory) is started again by its keeper
    #: (`deploy.local.keeper`); the inference controller then loads the live version
    #: again by itself (`inference.watchdog`), since explicit mode loads nothing.
    restart_on_exit = True

    @property
    def external(self) -> bool:
        return self.settings.triton.external

    @property
    def address(self) -> str:
        triton = self.settings.triton
        return f"http {triton.http_address}, grpc {triton.grpc_address}"

    def check_health(self) -> Health:
        return http_health(f"{_http_base(self.settings.triton.http_address)}/v2/health/ready")

    def ports(self) -> list[PortSpec]:
        triton = self.settings.triton
        return [
            PortSpec(triton.host, triton.http_port, env_var_for(("triton", "http_port"))),
            PortSpec(triton.host, triton.grpc_port, env_var_for(("triton", "grpc_port"))),
            PortSpec(triton.host, triton.metrics_port, env_var_for(("triton", "metrics_port"))),
        ]

    # -- layout ----------------------------------------------------------------------

    @property
    def stub_env_dir(self) -> Path:
        return self.state_dir / "stubenv"

    @property
    def work_dir(self) -> Path:
        """The server's (empty) working directory; the stub puts it on sys.path."""
        return self.state_dir / "cwd"

    @property
    def model_repository(self) -> Path:
        return self.settings.triton_model_repository()

    def backends_dir(self) -> Path:
        """The folder passed as --backend-directory (shipped, or our copy when read-only).

        Raises:
            MissingToolError: nvidia-pytriton is not installed.
        """
        local_copy = self.state_dir / "backends"
        if (local_copy / "python" / STUB_NAME).is_file():
            return local_copy
        return _pytriton_server_dir() / "backends"

    # -- prepare ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Install the backend stub, build the stub environment, create the model folder.

        Raises:
            MissingToolError: nvidia-pytriton or Debian's python3.11 (with venv) is missing.
            StackError: the stub environment could not be created.
        """
        server_dir = _pytriton_server_dir()
        _tritonserver_binary(server_dir)
        self._install_stub(server_dir)
        self._make_stub_env()
        self.model_repository.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def _install_stub(self, server_dir: Path) -> None:
        stub = server_dir / "python_backend_stubs" / STUB_PYTHON_VERSION / STUB_NAME
        if not stub.is_file():
            raise MissingToolError(
                f"nvidia-pytriton has no Python {STUB_PYTHON_VERSION} backend stub at {stub}; "
                "reinstall it with `.venv/bin/pip install -c deploy/constraints.txt "
                "nvidia-pytriton`"
            )
        shipped = server_dir / "backends" / "python"
        if (shipped / STUB_NAME).is_file():
            return
        if os.access(shipped, os.W_OK):
            logger.info("installing the Python-backend stub into %s", shipped)
            _copy_atomically(stub, shipped / STUB_NAME)
            return
        # Read-only site-packages: a private copy of the backends folder. The libraries
        # there find pytriton's bundled libs by a relative RPATH, which a copy breaks;
        # launch_spec() therefore always sets LD_LIBRARY_PATH.
        local_copy = self.state_dir / "backends"
        logger.info("site-packages is read-only; building a backend folder at %s", local_copy)
        shutil.rmtree(local_copy, ignore_errors=True)
        shutil.copytree(
            server_dir / "backends", local_copy, ignore=shutil.ignore_patterns("__pycache__")
        )
        _copy_atomically(stub, local_copy / "python" / STUB_NAME)

    def _make_stub_env(self) -> None:
        env_dir = self.stub_env_dir
        pth_text = _pth_text()
        pth_path = env_dir / "lib" / f"python{STUB_PYTHON_VERSION}" / "site-packages" / _PTH_NAME
        if (env_dir / "bin" / "python3").exists() and pth_path.is_file():
            if pth_path.read_text() != pth_text:
                pth_path.write_text(pth_text)
            return
        if not STUB_PYTHON.is_file():
            raise MissingToolError(
                f"Triton's Python backend needs Debian's {STUB_PYTHON} (its stub links against "
                "that libpython). Install it with `apt-get install python3.11 python3.11-venv`, "
                "or run `make setup`."
            )
        logger.info("creating the Triton stub environment at %s", env_dir)
        shutil.rmtree(env_dir, ignore_errors=True)
        try:
            subprocess.run(
                [str(STUB_PYTHON), "-m", "venv", "--without-pip", str(env_dir)],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
        except subprocess.CalledProcessError as e:
            if "ensurepip" in e.stderr or "venv" in e.stderr:
                raise MissingToolError(
                    f"{STUB_PYTHON} cannot create virtual environments: {e.stderr.strip()}. "
                    "Install it with `apt-get install python3.11-venv`, or run `make setup`."
                ) from e
            raise StackError(
                f"could not create the Triton stub environment at {env_dir}: {e.stderr.strip()}"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise StackError(f"creating the Triton stub environment at {env_dir} hung") from e
        pth_path.parent.mkdir(parents=True, exist_ok=True)
        pth_path.write_text(pth_text)

    # -- launch ----------------------------------------------------------------------

    def launch_spec(self) -> LaunchSpec:
        """tritonserver in the foreground, from an empty working directory.

        Raises:
            MissingToolError: nvidia-pytriton is not installed.
        """
        triton = self.settings.triton
        server_dir = _pytriton_server_dir()
        argv = [
            str(_tritonserver_binary(server_dir)),
            f"--model-repository={self.model_repository}",
            "--model-control-mode=explicit",
            # One model version failing to load must not mark the whole server unready
            # while every other model (and the old version) keeps serving.
            "--strict-readiness=false",
            f"--backend-directory={self.backends_dir()}",
            f"--http-address={triton.host}",
            f"--http-port={triton.http_port}",
            f"--grpc-address={triton.host}",
            f"--grpc-port={triton.grpc_port}",
            "--allow-metrics=true",
            f"--metrics-address={triton.host}",
            f"--metrics-port={triton.metrics_port}",
            "--metrics-config=summary_latencies=true",
            f"--exit-timeout-secs={triton.exit_timeout_s}",
        ]
        # The supervisor passes its own environment through; these entries replace it.
        # PATH is fixed rather than prepended so that no module reads os.environ: the
        # server needs only the stub environment's python3 and the system tools.
        env = {"PATH": f"{self.stub_env_dir / 'bin'}:{_SYSTEM_PATH}"}
        if not self.backends_dir().is_relative_to(server_dir):
            # Our private backend copy lost the relative RPATH to pytriton's bundled libs.
            env["LD_LIBRARY_PATH"] = str(_pytriton_libs_dir(server_dir))
        return LaunchSpec(argv=argv, env=env, cwd=self.work_dir)


def _http_base(address: str) -> str:
    """`host:port` or a URL, as an http(s) base URL without a trailing slash."""
    if "://" in address:
        parts = urlsplit(address)
        return f"{parts.scheme}://{parts.netloc}"
    return f"http://{address}"


def _pytriton_server_dir() -> Path:
    """`site-packages/pytriton/tritonserver`, found without importing pytriton.

    Raises:
        MissingToolError: nvidia-pytriton is not installed.
    """
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise MissingToolError(
            "nvidia-pytriton (which ships the tritonserver binary) is not installed; "
            "run `make setup`"
        )
    return Path(spec.origin).parent / "tritonserver"


def _tritonserver_binary(server_dir: Path) -> Path:
    """The tritonserver executable shipped in the pytriton wheel.

    Raises:
        MissingToolError: the wheel is installed without it.
    """
    binary = server_dir / "bin" / "tritonserver"
    if not binary.is_file():
        raise MissingToolError(
            f"no tritonserver binary at {binary}; reinstall nvidia-pytriton with "
            "`.venv/bin/pip install -c deploy/constraints.txt nvidia-pytriton`"
        )
    return binary


def _pytriton_libs_dir(server_dir: Path) -> Path:
    """The bundled shared libraries, as pytriton's own launcher finds them."""
    wheel_libs = server_dir.parent.parent / "nvidia_pytriton.libs"
    return wheel_libs if wheel_libs.is_dir() else server_dir / "external_libs"


def _pth_text() -> str:
    # `site.addsitedir` rather than a bare path: it also runs the .pth files in the main
    # environment (editable installs of Flywheel itself, for one), which a bare path skips.
    dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    lines = [f"import site; site.addsitedir({d!r})" for d in dirs]
    return "\n".join(lines) + "\n"


def _copy_atomically(source: Path, target: Path) -> None:
    partial = target.with_name(target.name + ".partial")
    shutil.copy2(source, partial)
    partial.chmod(0o755)
    partial.replace(target)
