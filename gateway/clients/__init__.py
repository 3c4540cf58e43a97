"""gRPC clients for the backend services (see base.py for channels and error mapping)."""
