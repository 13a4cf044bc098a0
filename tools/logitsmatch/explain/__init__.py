"""Explaining a drift between two environments (``logitsmatch explain``): resolving and composing
environments, the package and commit searches, and the reports. Harness side, no torch: each
suite run is a ``logitsmatch run`` subprocess in the environment it tests. Building the two
environments from toolchains is nox's part (``devtools.explain_sides``, in nox's interpreter)."""
