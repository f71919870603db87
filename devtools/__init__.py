"""The development tools: the embedded stack, the scenario, the SMTP sink and the commands behind
`python3 dev.py`. Not part of the product (the image and the installed distribution leave it
out); run from the repository root (`python -m devtools`), where it and `emulator/` are found.
"""
