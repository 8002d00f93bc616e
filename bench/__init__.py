"""Benchmarks of the bridge: latency, CPU and memory cost, and capacity, over real sockets.

The bridge runs in its own process (`bench.server`), simulated carriers in load-generator
processes (`bench.loadgen`), and the benchmark scripts (`bench.latency`, `bench.cost`,
`bench.capacity`) orchestrate them and print figures. See bench/README.md.
"""
