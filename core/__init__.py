"""Shared pieces: settings, wire payloads, logging. Nothing here does I/O at import."""
