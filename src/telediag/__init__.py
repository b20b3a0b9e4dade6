"""telediag: remote ECG and imaging diagnosis for tiered regional health networks.

Data flows one way: ingest -> store -> queue -> analyse -> review -> push.
"""

__version__ = "0.1.0"
