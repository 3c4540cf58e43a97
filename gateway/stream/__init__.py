"""Live stream: in-process pub/sub (hub.py), Kafka feed (feed.py), WebSocket (endpoints.py)."""
