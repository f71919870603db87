"""The emulated account's behaviour, one mixin per Stripe resource (composed in account.py)."""
