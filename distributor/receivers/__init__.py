"""Receivers: OTLP over HTTP (protobuf and JSON) and gRPC, turning requests into validated traces."""
