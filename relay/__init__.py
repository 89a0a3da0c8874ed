"""The forwarding core: sources, packet cache, fan-out to viewers, per-viewer RTP rewriting.

Nothing here decodes or encodes media, and nothing here knows about HTTP.
"""
