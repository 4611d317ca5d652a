"""The ``ciliumpy`` command line: the operator's commands on a cluster read from manifests.

Every command lives in a module of this package (one module per command group) and is
listed once in :data:`COMMANDS`, which maps the words that invoke it to ``module:attribute``.
Modules are imported only when their command runs, so ``ciliumpy demo`` never imports the
lab or Hubble. ``docs/cli.md`` explains how to add a command group.

Exit codes (:class:`ExitCode`): 0 success (allowed, valid, every test passed); 1 the answer
is no (``check`` denied, ``validate`` found an invalid policy, a ``connectivity test``
scenario failed); 2 bad invocation or input (unknown flag, unreadable or invalid manifests,
unknown pod); 3 the environment cannot run it (backend unavailable, the kernel refused);
4 internal error (a bug: please report it); 130 interrupted; 141 standard output closed
early (``ciliumpy demo | head -1``), as for a program killed by SIGPIPE.
"""

from __future__ import annotations

from ._inputs import Inputs, input_options, pass_inputs
from ._output import Column, emit, output_option
from ._root import ExitCode, main, root

__all__ = [
    "COMMANDS",
    "Column",
    "ExitCode",
    "Inputs",
    "emit",
    "input_options",
    "main",
    "output_option",
    "pass_inputs",
    "root",
]

#: Every command of ``ciliumpy``: the words that invoke it -> ``module:attribute`` (module
#: relative to this package). An entry of several words adds a subcommand to the group named
#: by the words before the last (``"get cidrgroups"`` joins the ``get`` group), so a group
#: can grow from another engineer's module. Keep the keys sorted.
COMMANDS: dict[str, str] = {
    "advise": "advise:advise",
    "bpf": "bpf:bpf",
    "check": "check:check",
    "connectivity": "connectivity:connectivity",
    "demo": "demo:demo",
    "encrypt": "encrypt:encrypt",
    "endpoint": "endpoint:endpoint",
    "fqdn": "fqdn:fqdn",
    "get": "get:get",
    "get cidrgroups": "cidrgroups:get_cidrgroups",
    "hubble": "hubble:hubble",
    "identity": "identity:identity",
    "lab": "lab:lab",
    "policy": "policy:policy",
    "service": "service:service",
    "status": "status:status",
    "validate": "validate:validate",
}
