"""Generates streamgate's gRPC stubs from the repository's ``proto/`` tree.

The protos are the single source of truth, so the generated modules are never
committed: ``setup.py`` runs this at build (and editable-install) time, and
``clients/test.sh`` runs it before every test run. ``streamgate/v1/*.proto``
becomes the subpackage ``streamgate.v1`` (``*_pb2.py``, ``*_pb2.pyi`` typing
stubs and ``*_pb2_grpc.py``), next to the hand-written ``streamgate`` modules.

Usage: ``python generate_protos.py [OUT_DIR]`` (default: ``src`` beside this
file). ``STREAMGATE_PROTO_DIR`` overrides where the protos are read from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = Path("streamgate", "v1")


def proto_dir() -> Path:
    """The directory that holds ``streamgate/v1/*.proto``."""
    path = Path(os.environ.get("STREAMGATE_PROTO_DIR", HERE.parent.parent / "proto"))
    if not (path / PACKAGE).is_dir():
        raise SystemExit(
            f"streamgate protos not found under {path}: build from a streamgate "
            "checkout (clients/python) or set STREAMGATE_PROTO_DIR"
        )
    return path


def generate(out_dir: Path) -> list[Path]:
    """Writes the stubs into ``out_dir/streamgate/v1`` and returns their paths.

    Stale modules of protos that no longer exist are removed first.
    """
    import grpc_tools
    from grpc_tools import protoc

    source = proto_dir()
    target = out_dir / PACKAGE
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*_pb2*.py*"):
        old.unlink()
    protos = sorted(str(p.relative_to(source)) for p in (source / PACKAGE).glob("*.proto"))
    # grpc_tools ships the well-known types (google/protobuf/*.proto).
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={source}",
        f"--proto_path={well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    init = target / "__init__.py"
    init.write_text('"""Generated from proto/streamgate/v1 by generate_protos.py; do not edit."""\n')
    return sorted(target.iterdir())


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "src"
    for path in generate(out):
        print(path)
