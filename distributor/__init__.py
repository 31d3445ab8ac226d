"""OpenTelemetry trace ingestion distributor with exact per-tenant cost attribution.

The pipeline, stage by stage: receivers -> ingest -> usage -> ledger -> attribution, and forwarding;
server/ holds the server port's endpoints, common/ the small types every stage shares, and service.py
builds the stages and starts and stops them."""
