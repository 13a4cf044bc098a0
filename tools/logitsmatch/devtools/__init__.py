"""nox glue: toolchain venvs, interpreters and pre-release candidates (standard library + nox only)."""
