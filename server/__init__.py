"""CYBER-0 federator: the grpc.aio service that runs rounds and aggregates scalars."""
