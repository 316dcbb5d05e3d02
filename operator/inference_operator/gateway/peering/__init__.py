"""Peer admission: each rate-limit group has one owner among the ready gateways, found by
hashing (owners.py); the others ask it for admission over a WebSocket per peer (links.py
asks, server.py answers, wire.py is what they say) and fall back to rpm/N while it cannot
be asked (routing.py decides which)."""
