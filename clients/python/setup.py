"""Build hook: generates the gRPC stubs while the package is built.

Everything else lives in pyproject.toml. A wheel gets the stubs in its build
directory; an editable install gets them in ``src/streamgate/v1`` (ignored by
git). The runtime requirements are derived from the grpcio-tools that
generated the stubs, because generated code refuses older runtimes.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate_protos  # noqa: E402


class BuildWithStubs(build_py):
    """``build_py`` that also generates ``streamgate.v1`` from the protos."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            generate_protos.generate(Path(__file__).resolve().parent / "src")
        else:
            generate_protos.generate(Path(self.build_lib))


def runtime_requirements() -> list[str]:
    """grpcio and protobuf at least as new as the generator needs."""
    tools = metadata.version("grpcio-tools")
    protobuf = next(
        (r.split(";")[0] for r in metadata.requires("grpcio-tools") or [] if r.startswith("protobuf")),
        "protobuf",
    )
    return [f"grpcio>={tools}", protobuf]


setup(cmdclass={"build_py": BuildWithStubs}, install_requires=runtime_requirements())
