"""The dnas command line (installed as the ``dnas_cli`` package).

Thin: it parses and calls dnas.
"""
