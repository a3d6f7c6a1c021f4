"""`invoke bench`: figures for provision, throughput and cost on the local cluster.

Each figure is the median of several runs, and every comparison is a ratio
measured within one run, because the machine is shared and noisy. Results go
to bench/results.json and bench/results.md.
"""
