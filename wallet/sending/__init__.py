"""Outgoing transactions: withdrawals, sweeps, contract deploys and calls, never paid twice."""
