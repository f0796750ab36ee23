"""A chaos run across hosts (network namespaces): the whole system under continuous load while
processes are killed, Redis is killed, brokers and the node are paused, links are cut and the chain
reorganises; then an oracle checks every deposit, withdrawal and account against the chain.

`python -m chaos --minutes N [--seed S]` (or `./dev chaos --minutes N`); needs root (ip netns).
"""
