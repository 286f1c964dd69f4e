"""`reconcile demo`: the whole product on one machine, on loopback only.

The demo copies a sample config repository into a temporary git repository, points every
check and route at small local backends (`backends`, `http_backends`, `listeners`,
`rewrite`), runs `reconcile serve` and one `agent run` per agent of an enabled region as
subprocesses (`processes`, `controlplane`), sends a trickle of traffic through the nginx
gateway (`traffic`), rebuilds the status site (`site`) and reports what happens (`output`).
`run` puts it together; `reconciler.cli.demo` is the command line.
"""
