"""A local Stripe that behaves like test mode, for development and tests.

It speaks Stripe's HTTP API (form-encoded requests, Stripe's error bodies, idempotency
keys, test payment methods, test clocks, signed webhooks) for the calls this project makes,
so the official SDK talks real HTTP to it.
"""
